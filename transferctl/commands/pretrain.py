"""`transferctl pretrain`: autoencoder pretraining, or its resume; the run directory is the last
line on stdout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferctl.commands.finetune import held_out, train_command
from transferctl.errors import UserError, shown
from transferctl.rundir.layout import PRETRAIN
from transferctl.rundir.lookup import newest_finished_run, run_name

if TYPE_CHECKING:
    from transferctl.stages.lifecycle import RunResult


def run(config_path: Path | None, overrides: Sequence[str], **options: Any) -> None:
    """`options`: `commands.finetune.train_command`'s."""
    from transferctl.stages import pretrain as stage

    train_command(stage.STAGE, _report, config_path, overrides, **options)


def _report(result: RunResult) -> list[str]:
    """A line per held-out split (the reconstruction error), and how to finetune from the run."""
    lines = [
        f"{split}: reconstruction mse {scores['mse']:.5f}, loss {scores['loss']:.5f} "
        f"({scores['num_examples']} images)"
        for split, scores in held_out(result)
    ]
    path = shown(result.run_dir)  # printed by rich: escaped, markup inert
    hint = f"model.weights: {path}"
    if _found_by_name(result.run_dir):  # else the name would find another run, or none
        hint = f"model.weights: {{run: {run_name(result.run_dir)}, kind: pretrain}} (or {path})"
    return [*lines, f"to start a finetune from this encoder: {hint}"]


def _found_by_name(run_dir: Path) -> bool:
    """Whether `{run: NAME, kind: pretrain}`, in a config whose runs_dir holds the run, finds
    this run (not with `--run-dir` elsewhere or under another name; not if a newer one exists)."""
    name = run_name(run_dir)
    if name is None:
        return False
    try:
        found = newest_finished_run(run_dir.parent, name, kind=PRETRAIN)
    except UserError:
        return False
    return found == run_dir.resolve()
