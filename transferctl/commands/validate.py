"""`transferctl validate`: the resolved config, or the errors. Never loads TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from transferctl.config.loader import dump_config, load_config


def run(config_path: Path, overrides: Sequence[str]) -> None:
    config = load_config(config_path, overrides)
    typer.echo(dump_config(config), nl=False)
