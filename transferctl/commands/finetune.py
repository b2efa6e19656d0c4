"""`transferctl finetune`: train, or resume; the run directory is the last line on stdout.

`train_command` is what `finetune` and `pretrain` share: which run the options name (a new one,
or one to resume), the "already finished" answer, the run directory on stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from transferctl import track
from transferctl.config.loader import load_config
from transferctl.errors import UserError, printable
from transferctl.rundir import layout as rundir
from transferctl.rundir.reading import read_labels
from transferctl.runtime.native import native_stderr_filtered

if TYPE_CHECKING:
    from transferctl.config.schema import Config
    from transferctl.stages.lifecycle import RunResult, Stage


def run(config_path: Path | None, overrides: Sequence[str], **options: Any) -> None:
    """`options`: `train_command`'s."""
    from transferctl.stages import finetune as stage

    train_command(stage.STAGE, _report, config_path, overrides, then=_write_report, **options)


def _write_report(result: RunResult, console: Console | None) -> None:
    """`report: true`: the run's report, its path said (stdout stays the run directory)."""
    if result.already_finished or not load_config(result.run_dir / rundir.CONFIG).report:
        return
    from transferctl.report import write_report

    def say(line: str) -> None:
        if console is not None:
            console.print(f"report: {line}", highlight=False, markup=False)

    written = write_report(result.run_dir, say=say)
    say(str(written.index))


def _report(result: RunResult) -> list[str]:
    """A line per held-out split: accuracy and loss, beside the linear probe's and the
    teacher's where the run has them."""
    lines = _kept_lines(result.metrics)
    classes = _class_count(result.run_dir)
    for split, scores in held_out(result):
        probe = result.metrics.get("linear_probe", {}).get(split)
        beside = f"; linear probe {probe['accuracy']:.4f}" if probe else ""
        teacher = result.metrics.get("teacher", {}).get(split)
        beside += f"; teacher {teacher['accuracy']:.4f}" if teacher else ""
        lines.append(
            f"{split}: accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
            f"({scores['num_examples']} images){beside}"
        )
        if split == "val" and classes > 1 and scores["accuracy"] <= CHANCE_MARGIN / classes:
            lines.append(_at_chance(scores["accuracy"], classes))
    return lines


# val accuracy at most this many times 1/classes is "at chance"
CHANCE_MARGIN = 1.2


def _at_chance(accuracy: float, classes: int) -> str:
    return (
        f"note: val accuracy {accuracy:.4f} is chance for {classes} classes; nothing was learned. "
        "Likely: a learning rate far too high or too low, a frozen backbone whose weights are "
        "random (weights: none, or a run that never learned), or labels unrelated to the images"
    )


def _class_count(run_dir: Path) -> int:
    try:
        return len(read_labels(run_dir / rundir.LABELS))
    except UserError:
        return 0


def _kept_lines(metrics: dict[str, Any]) -> list[str]:
    """Which epoch model.keras holds; and, when a later phase ended worse, that it did."""
    kept, phases = metrics.get("kept"), metrics.get("training", {}).get("phases", [])
    if not kept or kept.get("epoch") is None:
        return []
    value = kept.get("value")
    score = f", {kept['monitor']} {value:.4f}" if isinstance(value, int | float) else ""
    lines = [f"kept: epoch {kept['epoch']} of phase {kept['phase']}{score} (model.keras)"]
    names = [phase.get("name") for phase in phases]
    if kept["phase"] in names and names.index(kept["phase"]) < len(names) - 1:
        later = ", ".join(str(name) for name in names[names.index(kept["phase"]) + 1 :])
        lines.append(
            f"note: phase {later} ended worse than phase {kept['phase']}'s best; model.keras "
            f"holds phase {kept['phase']}'s (train.restore_best: run)"
        )
    return lines


def terminal_console() -> Console:
    """stderr's console: on a terminal, lines wrap at words at its width; in a log, each line
    stays one line, however long."""
    console = Console(stderr=True)
    console.soft_wrap = not console.is_terminal
    return console


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
    then: Callable[[RunResult, Console | None], None] | None = None,
) -> None:
    """Train a new run of `stage`, or resume the run that `--resume` names (or a `--run-dir`
    that holds a run); the lines of `report` say how it scored (not with `--quiet`), then the
    run directory is printed on stdout."""
    console = None if quiet else terminal_console()
    if resume is not None and run_dir is not None and resume.resolve() != run_dir.resolve():
        raise UserError("--resume", "and --run-dir name different runs", "pass only one of them")
    target = resume or (run_dir if run_dir is not None and _is_run(run_dir) else None)
    if config_path is None and target is None:
        raise UserError("CONFIG", "missing", "pass a config file, or --resume RUN_DIR")
    with native_stderr_filtered():  # TF's native lines never land on the progress bars
        if target is None:
            assert config_path is not None
            config = load_config(config_path, overrides)
            with track.tracked(config):
                result = stage.start(config, run_dir=run_dir, console=console, unsafe=unsafe)
        else:
            source = config_path or target / rundir.CONFIG
            asked = load_config(source, overrides) if (config_path or overrides) else None
            with track.tracked(asked or _own_config(target)):
                result = stage.resume(
                    target, config=asked, force=force, console=console, unsafe=unsafe
                )
    if console is not None and result.already_finished:
        console.print(f"{result.run_dir} already finished; nothing to do", highlight=False)
    elif console is not None:
        for line in report(result):
            console.print(line, highlight=False)
    if then is not None:
        then(result, console)
    # the path itself for a script reading stdout; escaped where a person reads it
    typer.echo(printable(str(result.run_dir)) if sys.stdout.isatty() else str(result.run_dir))


def _own_config(run_dir: Path) -> Config | None:
    """The run's own config.yaml, whose `tracking:` a resumed run follows; None when it does
    not load (resuming then says what is wrong with the run)."""
    try:
        return load_config(run_dir / rundir.CONFIG)
    except UserError:
        return None


def _is_run(path: Path) -> bool:
    """A folder that a training command started (it has the resolved config)."""
    return (path / rundir.CONFIG).is_file()
