"""`transferctl finetune`: train, or resume; the run directory is the last line on stdout.

`train_command` is what `finetune` and `pretrain` share: which run the options name (a new one,
or one to resume), the "already finished" answer, the run directory on stdout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from transferctl.config.loader import load_config
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir

if TYPE_CHECKING:
    from transferctl.stages.lifecycle import RunResult, Stage


def run(config_path: Path | None, overrides: Sequence[str], **options: Any) -> None:
    """`options`: `train_command`'s."""
    from transferctl.stages import finetune as stage

    train_command(stage.STAGE, _report, config_path, overrides, **options)


def _report(result: RunResult) -> list[str]:
    """A line per held-out split: accuracy and loss, beside the linear probe's and the
    teacher's where the run has them."""
    lines = []
    for split, scores in held_out(result):
        probe = result.metrics.get("linear_probe", {}).get(split)
        beside = f"; linear probe {probe['accuracy']:.4f}" if probe else ""
        teacher = result.metrics.get("teacher", {}).get(split)
        beside += f"; teacher {teacher['accuracy']:.4f}" if teacher else ""
        lines.append(
            f"{split}: accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
            f"({scores['num_examples']} images){beside}"
        )
    return lines


def held_out(result: RunResult) -> list[tuple[str, dict[str, Any]]]:
    """The run's scores on val and test, those it has."""
    return [
        (split, result.metrics[split]) for split in ("val", "test") if result.metrics.get(split)
    ]


def train_command(
    stage: Stage,
    report: Callable[[RunResult], list[str]],
    config_path: Path | None,
    overrides: Sequence[str],
    *,
    run_dir: Path | None,
    resume: Path | None,
    force: bool,
    unsafe: bool,
    quiet: bool,
) -> None:
    """Train a new run of `stage`, or resume the run that `--resume` names (or a `--run-dir`
    that holds a run); the lines of `report` say how it scored (not with `--quiet`), then the
    run directory is printed on stdout."""
    console = None if quiet else Console(stderr=True, soft_wrap=True)
    if resume is not None and run_dir is not None and resume.resolve() != run_dir.resolve():
        raise UserError("--resume", "and --run-dir name different runs", "pass only one of them")
    target = resume or (run_dir if run_dir is not None and _is_run(run_dir) else None)
    if config_path is None and target is None:
        raise UserError("CONFIG", "missing", "pass a config file, or --resume RUN_DIR")
    if target is None:
        assert config_path is not None
        config = load_config(config_path, overrides)
        result = stage.start(config, run_dir=run_dir, console=console, unsafe=unsafe)
    else:
        source = config_path or target / rundir.CONFIG
        asked = load_config(source, overrides) if (config_path or overrides) else None
        result = stage.resume(target, config=asked, force=force, console=console, unsafe=unsafe)
    if console is not None and result.already_finished:
        console.print(f"{result.run_dir} already finished; nothing to do", highlight=False)
    elif console is not None:
        for line in report(result):
            console.print(line, highlight=False)
    typer.echo(str(result.run_dir))


def _is_run(path: Path) -> bool:
    """A folder that a training command started (it has the resolved config)."""
    return (path / rundir.CONFIG).is_file()
