"""`transferctl pretrain`: autoencoder pretraining, or its resume; the run directory is the last
line on stdout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferctl.commands.finetune import held_out, train_command
from transferctl.rundir.lookup import run_name

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
    name = run_name(result.run_dir) or "NAME"
    hint = f"model.weights: {{run: {name}, kind: pretrain}} (or {result.run_dir})"
    return [*lines, f"to start a finetune from this encoder: {hint}"]
