"""`transferctl finetune`: train, or resume; the run directory is the last line on stdout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console

from transferctl.config.loader import load_config
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir


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

    from transferctl.stages import finetune as pipeline

    if target is not None:
        source = config_path or target / rundir.CONFIG
        config = load_config(source, overrides) if (config_path or overrides) else None
        result = pipeline.resume(target, config=config, force=force, console=console, unsafe=unsafe)
        if result.already_finished:
            if console is not None:
                console.print(f"{result.run_dir} already finished; nothing to do", highlight=False)
            typer.echo(str(result.run_dir))
            return
    else:
        assert config_path is not None
        config = load_config(config_path, overrides)
        result = pipeline.finetune(config, run_dir=run_dir, console=console, unsafe=unsafe)
    if console is not None:
        for split in ("val", "test"):
            scores = result.metrics.get(split)
            if scores:
                probe = result.metrics.get("linear_probe", {}).get(split)
                beside = f"; linear probe {probe['accuracy']:.4f}" if probe else ""
                teacher = result.metrics.get("teacher", {}).get(split)
                beside += f"; teacher {teacher['accuracy']:.4f}" if teacher else ""
                console.print(
                    f"{split}: accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
                    f"({scores['num_examples']} images){beside}",
                    highlight=False,
                )
    typer.echo(str(result.run_dir))


def _is_run(path: Path) -> bool:
    """A folder that `finetune` started (it has the resolved config)."""
    return (path / rundir.CONFIG).is_file()
