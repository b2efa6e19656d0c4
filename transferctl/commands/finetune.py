"""`transferctl finetune CONFIG`: train; the run directory is the last line on stdout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console

from transferctl.config.loader import load_config


def run(config_path: Path, overrides: Sequence[str], *, run_dir: Path | None, quiet: bool) -> None:
    config = load_config(config_path, overrides)
    console = None if quiet else Console(stderr=True, soft_wrap=True)

    from transferctl.pipeline import finetune

    result = finetune(config, run_dir=run_dir, console=console)
    if console is not None:
        for split in ("val", "test"):
            scores = result.metrics.get(split)
            if scores:
                console.print(
                    f"{split}: accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
                    f"({scores['num_examples']} images)",
                    highlight=False,
                )
    typer.echo(str(result.run_dir))
