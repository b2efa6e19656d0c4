"""The `transferctl` command: assembles the commands, nothing else.

Each command's module is imported inside its function, so `transferctl --help` and
`transferctl validate` never load TensorFlow.
"""

# no `from __future__ import annotations`: typer reads the annotations as objects, and
# `_training_command`'s refer to its arguments
import importlib
import os
from pathlib import Path
from typing import Annotated

import typer

from transferctl import __version__
from transferctl.commands.options import (
    ConfigFile,
    FinishedRun,
    HeldOutSplit,
    OtherData,
    SetOption,
    TtaOption,
)
from transferctl.errors import handle_errors

app = typer.Typer(
    name="transferctl",
    help="Transfer learning on images with Keras 3: one YAML file, one command, one run directory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


def _training_command(name: str, summary: str, run_dir_help: str, resume_help: str) -> None:
    """Register `transferctl <name>`, a command that trains a run (finetune, pretrain): the
    same arguments and options, each command's own help; `commands.<name>.run` does the work."""

    def command(
        config: Annotated[
            Path | None,
            typer.Argument(
                help="The YAML config file (optional with --resume).", show_default=False
            ),
        ] = None,
        overrides: SetOption = None,
        run_dir: Annotated[Path | None, typer.Option("--run-dir", help=run_dir_help)] = None,
        resume: Annotated[Path | None, typer.Option("--resume", help=resume_help)] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Resume even though the config changed.")
        ] = False,
        unsafe: Annotated[
            bool,
            typer.Option("--unsafe", help="Allow .keras weights that run code (Lambda layers)."),
        ] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    ) -> None:
        stage = importlib.import_module(f"transferctl.commands.{name}")
        stage.run(
            config,
            overrides or [],
            run_dir=run_dir,
            resume=resume,
            force=force,
            unsafe=unsafe,
            quiet=quiet,
        )

    command.__doc__ = summary
    app.command(name=name, rich_help_panel="Train")(handle_errors(command))


_training_command(
    "finetune",
    "Fine-tune a pretrained backbone on your images; prints the run directory.",
    run_dir_help="Train into this folder: new, empty, or an unfinished run (then resumed).",
    resume_help="Continue an unfinished run from its last checkpoint.",
)
_training_command(
    "pretrain",
    "Pretrain the backbone as an autoencoder's encoder on unlabelled images; prints the run\n"
    "directory, a `model.weights` for finetune.",
    run_dir_help="Train into this folder: new, empty, or an unfinished pretrain run (resumed).",
    resume_help="Continue an unfinished pretrain run from its checkpoint.",
)


@app.command(rich_help_panel="Train")
@handle_errors
def tune(
    config: Annotated[
        Path | None,
        typer.Argument(help="The YAML config with a search: section.", show_default=False),
    ] = None,
    overrides: SetOption = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", metavar="N", help="Trials to finish (overrides search.trials)."),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", metavar="N", help="Processes on this machine, one study.")
    ] = 1,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="The tune directory: new or empty (default: in runs_dir)."),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Go on with the study in this tune directory.")
    ] = None,
    worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
) -> None:
    """Search the config's search: space with Optuna; every trial is a run; prints the
    tune directory (trials.csv, best.yaml, tune.png)."""
    from transferctl.commands.tune import run

    run(config, overrides or [], trials, jobs, directory, resume, worker)


@app.command(rich_help_panel="Config")
@handle_errors
def validate(
    config: ConfigFile,
    overrides: SetOption = None,
) -> None:
    """Print the resolved config, or the errors. Never loads TensorFlow."""
    from transferctl.commands.validate import run

    run(config, overrides or [])


@app.command(rich_help_panel="Config")
@handle_errors
def plan(
    config: ConfigFile,
    overrides: SetOption = None,
    layers: Annotated[
        bool,
        typer.Option("--layers", help="Also list every backbone layer and where it trains."),
    ] = False,
    estimate: Annotated[
        bool,
        typer.Option("--estimate", help="Time a few real training steps; estimate each phase."),
    ] = False,
) -> None:
    """Per phase: what trains and what is frozen, BatchNorm, parameters, feature cache."""
    from transferctl.commands.plan import run

    run(config, overrides or [], layers, estimate)


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


@app.command(rich_help_panel="Use")
@handle_errors
def evaluate(
    run_dir: FinishedRun,
    split: HeldOutSplit = None,
    data: OtherData = None,
    tta: TtaOption = False,
) -> None:
    """Metrics on held-out data: writes RUN_DIR/eval/<split>/, prints a summary and its path."""
    from transferctl.commands.evaluate import run

    run(run_dir, split, data, tta)


@app.command(rich_help_panel="Use")
@handle_errors
def report(
    run_dir: FinishedRun,
    split: HeldOutSplit = None,
    data: OtherData = None,
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the page in a web browser when written.")
    ] = False,
) -> None:
    """One HTML page per run: per-class quality, confusion, the worst mistakes, calibration
    (fits the temperature predict and the exports apply) and suspected label errors in the
    training data. Writes RUN_DIR/report/ and prints the page's path."""
    from transferctl.commands.report import run

    run(run_dir, split, data, open_page)


@app.command(rich_help_panel="Use")
@handle_errors
def predict(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR|MODEL",
            help="A run directory, a .keras file or an exported saved_model folder.",
            show_default=False,
        ),
    ],
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE_OR_FOLDER...",
            help="Image files, and folders searched recursively.",
            show_default=False,
            readable=False,  # an unreadable file is skipped and named (exit 3), not a usage error
        ),
    ],
    top_k: Annotated[
        int,
        typer.Option("--top-k", metavar="K", help="Labels per image (at most the class count)."),
    ] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per image and line, on stdout.")
    ] = False,
    unsafe: Annotated[
        bool,
        typer.Option(
            "--unsafe",
            help="Load a SavedModel that transferctl did not export: its graph runs as a "
            "program and can read and write files. Only for models you trust.",
        ),
    ] = False,
    tta: TtaOption = False,
) -> None:
    """The top-k labels of each image: a table, or JSON lines with --json.

    Exit codes: 0 every image predicted; 3 some files could not be read (each named on stderr)
    and were skipped; 2 bad input (paths, model, no readable image).
    """
    from transferctl.commands.predict import run

    run(model, images, top_k, as_json, unsafe, tta)


@app.command(rich_help_panel="Use")
@handle_errors
def export(
    run_dir: FinishedRun,
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            metavar="saved_model|keras|tflite|onnx",
            help="The format to export; repeat for several.",
            show_default=False,
        ),
    ] = None,
    quantize: Annotated[
        str,
        typer.Option(
            "--quantize",
            metavar="none|float16|dynamic|int8",
            help="TFLite quantization; int8 is full-integer, calibrated on training images.",
        ),
    ] = "none",
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="Write here instead of RUN_DIR/export."),
    ] = None,
) -> None:
    """Export a run (SavedModel, .keras, TFLite, ONNX), each checked against the Keras model."""
    from transferctl.commands.export import run

    run(run_dir, formats or [], quantize, out)


@app.command(rich_help_panel="Use")
@handle_errors
def compare(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR",
            help="Two or more run directories (finished or not).",
            show_default=False,
        ),
    ],
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", metavar="FILE.png", help="Also draw every run's validation accuracy here."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document on stdout instead of the table.")
    ] = False,
) -> None:
    """The runs side by side: config keys that differ, metrics, epochs, seconds, baselines."""
    from transferctl.commands.compare import run

    run(run_dirs, plot, as_json)


@app.command(rich_help_panel="Use")
@handle_errors
def show(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="A run directory.", show_default=False)
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document on stdout instead of the table.")
    ] = False,
) -> None:
    """One run: what it trained, the kept epoch, val/test, baselines, its files."""
    from transferctl.commands.show import show as run

    run(run_dir, as_json)


@app.command(rich_help_panel="Use")
@handle_errors
def runs(
    runs_dir: Annotated[
        Path,
        typer.Argument(metavar="RUNS_DIR", help="The folder that holds the runs."),
    ] = Path("runs"),
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON list on stdout instead of the table.")
    ] = False,
) -> None:
    """The runs in a folder: name, kind, status, started, epochs, val/test."""
    from transferctl.commands.show import runs as run

    run(runs_dir, as_json)


@app.command(rich_help_panel="Data")
@handle_errors
def doctor(
    data_path: Annotated[
        Path,
        typer.Argument(
            metavar="DATA_PATH",
            help="Class sub-folders, or train/ (and val/, test/) each holding them.",
            show_default=False,
        ),
    ],
    validation_split: Annotated[
        float,
        typer.Option(
            "--validation-split", min=0.0, max=0.95, help="As data.validation_split, if carved."
        ),
    ] = 0.1,
    test_split: Annotated[
        float,
        typer.Option("--test-split", min=0.0, max=0.95, help="As data.test_split, if carved."),
    ] = 0.0,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every file of each finding, not the first 20.")
    ] = False,
) -> None:
    """Audit an image folder without training: classes, bad files, duplicates, tiny images."""
    from transferctl.commands.doctor import run

    run(data_path, validation_split, test_split, show_all)


def main() -> None:
    app()
