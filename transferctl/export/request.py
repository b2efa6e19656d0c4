"""What to export, checked before any work starts: formats, quantization, the run, the folder.

Everything here is cheap (no TensorFlow), so a mistake is reported in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transferctl import rundir
from transferctl.errors import UserError
from transferctl.export import extras

FORMATS = ("saved_model", "keras", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
EXPORT_DIR = "export"


@dataclass(frozen=True)
class ExportRequest:
    """A checked export request.

    Args:
        run_dir: the finished run directory (holds config.yaml, labels.txt, model.keras).
        formats: the formats, each once, in the order given.
        quantize: how the TFLite file is quantized; `none` for the other formats.
        out_dir: where the files go. Defaults to `RUN_DIR/export`.
    """

    run_dir: Path
    formats: tuple[str, ...]
    quantize: str
    out_dir: Path


def check_request(
    run_dir: Path, formats: Sequence[str], quantize: str, out_dir: Path | None
) -> ExportRequest:
    """Check every argument and the optional packages; the first mistake is a `UserError`."""
    chosen = _check_formats(formats)
    if quantize not in QUANTIZATIONS:
        raise UserError(
            "--quantize", f"expected one of {', '.join(QUANTIZATIONS)}; got {quantize!r}"
        )
    if quantize != "none" and "tflite" not in chosen:
        # Quietly ignoring it would leave a float file where the user asked for int8.
        raise UserError(
            "--quantize",
            f"{quantize} applies to --format tflite only; got --format {' '.join(chosen)}",
            "add --format tflite, or drop --quantize",
        )
    run = _check_run(run_dir)
    out = (out_dir if out_dir is not None else run / EXPORT_DIR).resolve()
    if out == run:
        raise UserError(
            "--out",
            f"{out} is the run directory itself; the export would replace its model.keras",
            f"pass another folder (the default is RUN_DIR/{EXPORT_DIR})",
        )
    rundir.check_writable(out, where="--out")
    for export_format in chosen:
        extras.check_installed(export_format)
    return ExportRequest(run_dir=run, formats=chosen, quantize=quantize, out_dir=out)


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if not formats:
        raise UserError(
            "--format",
            "no format given",
            f"pass one or more of --format {' | '.join(FORMATS)}",
        )
    chosen: list[str] = []
    for export_format in formats:
        name = export_format.strip().lower()
        if name not in FORMATS:
            raise UserError(
                "--format", f"expected one of {', '.join(FORMATS)}; got {export_format!r}"
            )
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def _check_run(run_dir: Path) -> Path:
    if not run_dir.exists():
        raise UserError("RUN_DIR", f"{run_dir} not found", "pass a run directory made by finetune")
    if not run_dir.is_dir():
        raise UserError("RUN_DIR", f"{run_dir} is a file, not a run directory", "pass its folder")
    for name in (rundir.MODEL, rundir.CONFIG, rundir.LABELS):
        if not (run_dir / name).is_file():
            unfinished = name == rundir.MODEL and (run_dir / rundir.CONFIG).is_file()
            raise UserError(
                "RUN_DIR",
                f"{run_dir} has no {name}"
                + ("; its training did not finish" if unfinished else ""),
                "pass a finished run directory made by finetune",
            )
    return run_dir.resolve()
