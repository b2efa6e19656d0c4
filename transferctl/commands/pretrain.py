"""`transferctl pretrain`: autoencoder pretraining, or its resume; the run directory is the last
line on stdout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console

from transferctl.config.loader import load_config
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir
from transferctl.rundir.lookup import run_name


def run(
    config_path: Path | None,
    overrides: Sequence[str],
    *,
    run_dir: Path | None,
    resume: Path | None,
    force: bool,
    unsafe: bool,
    quiet: bool,
) -> None:
    console = None if quiet else Console(stderr=True, soft_wrap=True)
    if resume is not None and run_dir is not None and resume.resolve() != run_dir.resolve():
        raise UserError("--resume", "and --run-dir name different runs", "pass only one of them")
    target = resume or (run_dir if run_dir is not None and _is_run(run_dir) else None)
    if config_path is None and target is None:
        raise UserError("CONFIG", "missing", "pass a config file, or --resume RUN_DIR")

    from transferctl.stages import pretrain as stage

    if target is not None:
        source = config_path or target / rundir.CONFIG
        config = load_config(source, overrides) if (config_path or overrides) else None
        result = stage.resume(target, config=config, force=force, console=console, unsafe=unsafe)
        if result.already_finished:
            if console is not None:
                console.print(f"{result.run_dir} already finished; nothing to do", highlight=False)
            typer.echo(str(result.run_dir))
            return
    else:
        assert config_path is not None
        config = load_config(config_path, overrides)
        result = stage.pretrain(config, run_dir=run_dir, console=console, unsafe=unsafe)
    if console is not None:
        for split in ("val", "test"):
            scores = result.metrics.get(split)
            if scores:
                console.print(
                    f"{split}: reconstruction mse {scores['mse']:.5f}, loss {scores['loss']:.5f} "
                    f"({scores['num_examples']} images)",
                    highlight=False,
                )
        name = run_name(result.run_dir) or "NAME"
        console.print(
            f"to start a finetune from this encoder: model.weights: {{run: {name}}}",
            highlight=False,
        )
    typer.echo(str(result.run_dir))


def _is_run(path: Path) -> bool:
    """A folder that `pretrain` (or `finetune`) started: it has the resolved config."""
    return (path / rundir.CONFIG).is_file()
