"""The arguments and options several commands share, as `Annotated` types for typer."""

# no `from __future__ import annotations`: typer reads the annotations as objects
from pathlib import Path
from typing import Annotated

import typer

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config key by dotted path, e.g. --set train.phases.0.epochs=1.",
    ),
]
TtaOption = Annotated[
    bool, typer.Option("--tta", help="Average each image's probabilities with its mirror image's.")
]
ConfigFile = Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)]
FinishedRun = Annotated[
    Path,
    typer.Argument(metavar="RUN_DIR", help="A run directory made by finetune.", show_default=False),
]
HeldOutSplit = Annotated[
    str | None,
    typer.Option(
        "--split",
        metavar="test|val",
        help="The held-out split. Default: test if the run has one, else val.",
    ),
]
OtherData = Annotated[
    Path | None,
    typer.Option(
        "--data",
        metavar="PATH",
        help="This folder instead of the run's split (one sub-folder per class of the run).",
    ),
]
