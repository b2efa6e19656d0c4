"""What to export, checked before any work starts: formats, quantization, the run, the folder.

Everything here is cheap (no TensorFlow), so a mistake is reported in milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transferctl import files
from transferctl.errors import UserError
from transferctl.export import extras
from transferctl.export.metadata import EXPORT_INFO
from transferctl.files import paths
from transferctl.rundir import layout as rundir
from transferctl.rundir import reading

FORMATS = ("saved_model", "keras", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# what each format writes (saved_model.NAME, keras_file.NAME, onnx_file.NAME; tflite_file names
# its file by quantization)
FORMAT_FILES = {"saved_model": "saved_model", "keras": rundir.MODEL, "onnx": "model.onnx"}


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
    out = paths.resolved_for(out_dir if out_dir is not None else run / rundir.EXPORT, "--out")
    if out == run:
        raise UserError(
            "--out",
            f"{out} is the run directory itself; the export would replace its {rundir.MODEL}",
            f"pass another folder (the default is RUN_DIR/{rundir.EXPORT})",
        )
    if out != run / rundir.EXPORT:
        _check_out(out, run)
    rundir.check_writable(out, where="--out")
    for export_format in chosen:
        extras.check_installed(export_format)
    return ExportRequest(run_dir=run, formats=chosen, quantize=quantize, out_dir=out)


def _check_out(out: Path, run: Path) -> None:
    """An explicit `--out` is never another run, another run's exports, nor a folder with
    anything else in it (a folder holding this run's earlier exports excepted: export.json
    says so)."""
    for folder in (out, *out.parents):
        if folder != run and _is_run_directory(folder):
            inside = "" if folder == out else f" is inside {folder}, which"
            raise UserError(
                "--out",
                f"{out}{inside} is another run directory; runs are never overwritten",
                "pass a new or empty folder",
            )
    if not out.is_dir():
        return
    info = out / EXPORT_INFO
    if info.is_file():
        source = _source_run(info)
        if source is None:
            return  # the export's own check compares classes and input size with the model's
        if source == run:
            return  # this run's exports, elsewhere: export adds to them, as in RUN_DIR/export
        raise UserError(
            "--out",
            f"{out} holds the exports of another run ({source}); they would be replaced",
            "pass a new or empty folder",
        )
    if _has_anything(out):
        raise UserError(
            "--out",
            f"{out} is not empty and holds no export (no {EXPORT_INFO}); the export would write "
            "its files among others",
            "pass a new or empty folder",
        )


def _has_anything(folder: Path) -> bool:
    """Anything in `folder` but what a killed export leaves (its `.NAME.tmp*` and `.NAME.old`
    files, removed by the next export, and its lock); one that cannot be listed counts."""
    try:
        with os.scandir(folder) as entries:
            return any(not _export_leftover(entry.name) for entry in entries)
    except OSError:
        return True


def _export_leftover(name: str) -> bool:
    return name.startswith(".") and (
        ".tmp" in name or name.endswith(".old") or name == ".transferctl.lock"
    )


def _is_run_directory(folder: Path) -> bool:
    return (folder / rundir.CONFIG).is_file() and (
        (folder / rundir.CHECKPOINTS).is_dir() or (folder / rundir.MODEL).is_file()
    )


def _source_run(info: Path) -> Path | None:
    try:
        document = files.read_json(info, limit=16 * 2**20)
    except files.NotReadable:
        return None  # reported by the export itself
    source = document.get("source_run") if isinstance(document, dict) else None
    return Path(source).resolve() if isinstance(source, str) and source else None


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
    run = reading.find_run(
        run_dir,
        "RUN_DIR",
        "export",
        fix="pass a run directory made by finetune",
        folder_fix="pass its folder",
    )
    missing = run.first_missing()
    if missing is not None:
        unfinished = missing == run.model and run.config.is_file()
        raise UserError(
            "RUN_DIR",
            f"{run_dir} has no {missing.name}"
            + ("; its training did not finish" if unfinished else ""),
            "pass a finished run directory made by finetune",
        )
    files.check_keras_file(run.model, "RUN_DIR")
    return run_dir.resolve()
