"""`transferctl finetune`: train, or resume; the run directory is the last line on stdout.

`train_or_resume` is what `finetune` and `pretrain` share: which run the options name, a new
one or one to resume, and the "already finished" answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from transferctl.config.loader import load_config
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir

if TYPE_CHECKING:
    from transferctl.stages.lifecycle import RunResult


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
    from transferctl.stages import finetune as stage

    result = train_or_resume(
        stage.finetune,
        stage.resume,
        config_path,
        overrides,
        run_dir=run_dir,
        resume=resume,
        force=force,
        unsafe=unsafe,
        console=console,
    )
    if result is None:
        return
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


def train_or_resume(
    start: Callable[..., RunResult],
    carry_on: Callable[..., RunResult],
    config_path: Path | None,
    overrides: Sequence[str],
    *,
    run_dir: Path | None,
    resume: Path | None,
    force: bool,
    unsafe: bool,
    console: Console | None,
) -> RunResult | None:
    """Train a new run with the stage's `start`, or resume with its `carry_on` the run that
    `--resume` names (or a `--run-dir` that holds a run). The result; None when that run had
    finished already: its directory is then printed here, and there is nothing more to say."""
    if resume is not None and run_dir is not None and resume.resolve() != run_dir.resolve():
        raise UserError("--resume", "and --run-dir name different runs", "pass only one of them")
    target = resume or (run_dir if run_dir is not None and _is_run(run_dir) else None)
    if config_path is None and target is None:
        raise UserError("CONFIG", "missing", "pass a config file, or --resume RUN_DIR")
    if target is None:
        assert config_path is not None
        config = load_config(config_path, overrides)
        return start(config, run_dir=run_dir, console=console, unsafe=unsafe)
    source = config_path or target / rundir.CONFIG
    asked = load_config(source, overrides) if (config_path or overrides) else None
    result = carry_on(target, config=asked, force=force, console=console, unsafe=unsafe)
    if not result.already_finished:
        return result
    if console is not None:
        console.print(f"{result.run_dir} already finished; nothing to do", highlight=False)
    typer.echo(str(result.run_dir))
    return None


def _is_run(path: Path) -> bool:
    """A folder that a training command started (it has the resolved config)."""
    return (path / rundir.CONFIG).is_file()
