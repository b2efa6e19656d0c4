"""`transferctl pretrain`: autoencoder pretraining, or its resume; the run directory is the last
line on stdout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console

from transferctl.commands.finetune import train_or_resume
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
    from transferctl.stages import pretrain as stage

    result = train_or_resume(
        stage.pretrain,
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
