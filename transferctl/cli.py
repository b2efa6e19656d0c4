"""The `transferctl` command: assembles the commands, nothing else.

Each command's module is imported inside its function, so `transferctl --help` and
`transferctl validate` never load TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from transferctl import __version__
from transferctl.errors import handle_errors

app = typer.Typer(
    name="transferctl",
    help="Transfer learning on images with Keras 3: one YAML file, one command, one run directory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config key by dotted path, e.g. --set train.phases.0.epochs=1.",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"transferctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks (also TRANSFERCTL_DEBUG=1).")
    ] = False,
) -> None:
    """Transfer learning on images with Keras 3 and TensorFlow."""
    if debug:
        os.environ["TRANSFERCTL_DEBUG"] = "1"


@app.command(rich_help_panel="Train")
@handle_errors
def finetune(
    config: Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)],
    overrides: SetOption = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir", help="Use this run directory (new or empty) instead of a new one."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Fine-tune a pretrained backbone on your images; prints the run directory."""
    from transferctl.commands.finetune import run

    run(config, overrides or [], run_dir=run_dir, quiet=quiet)


@app.command(rich_help_panel="Config")
@handle_errors
def validate(
    config: Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)],
    overrides: SetOption = None,
) -> None:
    """Print the resolved config, or the errors. Never loads TensorFlow."""
    from transferctl.commands.validate import run

    run(config, overrides or [])


@app.command(rich_help_panel="Config")
@handle_errors
def backbones(
    layers: Annotated[
        str | None,
        typer.Option("--layers", metavar="BACKBONE", help="List this backbone's layer names."),
    ] = None,
) -> None:
    """The backbones, their native input size and size."""
    from transferctl.commands.backbones import run

    run(layers)


def main() -> None:
    app()
