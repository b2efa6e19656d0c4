"""The export stage: write each requested format, load it back, hold it to the parity gate.

Example:
    request = check_request(Path("runs/flowers-20261122-101500"), ["onnx"], "none", None)
    results = export_run(request)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferctl import runtime
from transferctl.export import metadata, parity
from transferctl.export.request import ExportRequest
from transferctl.export.source import (
    Samples,
    Source,
    calibration_images,
    load_source,
    parity_samples,
)
from transferctl.model import temperature
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock

# The packages whose versions each format's entry records (besides TensorFlow and Keras).
_PACKAGES = {
    "tflite": ("ai_edge_litert",),
    "onnx": ("tf2onnx", "onnx", "onnxruntime"),
}


@dataclass
class ExportResult:
    """One exported file or folder and how it compares with the Keras model."""

    export_format: str
    quantization: str
    path: Path
    parity: dict[str, parity.Parity]  # per signature / entry point
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.export_format == "tflite":
            return f"tflite ({self.quantization})"
        return self.export_format

    @property
    def passed(self) -> bool:
        return not self.problems and all(check.passed for check in self.parity.values())

    def summary(self) -> str:
        """`onnx: /path/model.onnx: max abs diff 6.0e-07, top-1 agreement 100.0% on 100 images`."""
        checks = [
            (f"{name} " if len(self.parity) > 1 else "") + check.describe()
            for name, check in self.parity.items()
        ]
        return f"{self.label}: {self.path}: {'; '.join(checks + self.problems)}"


def export_run(
    request: ExportRequest, on_result: Callable[[ExportResult], None] | None = None
) -> list[ExportResult]:
    """Export the run in every requested format into `request.out_dir`.

    Each export is written, loaded back with its own runtime and compared with the Keras model on
    the run's images; its entry in export.json records the numbers. Every format is exported
    even when one fails the gate; then `ExportParityError` names the failures (files kept).

    Args:
        request: from `check_request`.
        on_result: called with each result as soon as it is known (for progress output).
    """
    source = load_source(request.run_dir)
    out = request.out_dir
    document = metadata.start(out, source.run_dir, source.class_names, source.image_size)
    samples = parity_samples(source)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    # one export per folder at a time, so that what a killed one left can be cleaned up
    with runlock.holding(out, "--out", "an export is writing to it"):
        remove_leftovers(out)
        metadata.write_labels(out, source.class_names)
        for export_format in request.formats:
            quantization = request.quantize if export_format == "tflite" else "none"
            result, entry = _export_one(source, samples, export_format, quantization, out)
            metadata.record(out, document, result.path.name, entry)
            results.append(result)
            if on_result is not None:
                on_result(result)
    failed = [result for result in results if not result.passed]
    if failed:
        raise parity.ExportParityError(
            "export failed its checks: "
            + "; ".join(_failure(result) for result in failed)
            + f"; the files are kept in {out} and {metadata.EXPORT_INFO} records the numbers"
        )
    return results


def remove_leftovers(out: Path) -> list[Path]:
    """Remove what a killed export left in `out`: temporary files and folders (`.NAME.*.tmp*`),
    and the previous SavedModel set aside during a swap (`.saved_model.*.old`), which is put
    back when the swap never finished. The caller holds the folder's lock."""
    removed = []
    for leftover in sorted(out.glob(".*.tmp*")) + sorted(out.glob(".*.old")):
        if leftover.suffix == ".old" and leftover.is_dir() and not leftover.is_symlink():
            for kept in leftover.iterdir():
                if not (out / kept.name).exists():
                    os.replace(kept, out / kept.name)  # the swap stopped half way: undo it
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def _export_one(
    source: Source, samples: Samples, export_format: str, quantization: str, out: Path
) -> tuple[ExportResult, dict[str, Any]]:
    from transferctl.export import keras_file, onnx_file, saved_model, tflite_file

    model, size = source.model, source.image_size
    problems: list[str] = []
    if export_format == "saved_model":
        target = out / saved_model.NAME
        details = saved_model.write(model, target, size)
        outputs = saved_model.predict(target, samples)
    elif export_format == "keras":
        target = out / keras_file.NAME
        details = keras_file.write(model, target, size)
        outputs = keras_file.predict(target, samples)
    elif export_format == "onnx":
        target = out / onnx_file.NAME
        details = onnx_file.write(model, target, size, source.class_names)
        outputs = onnx_file.predict(target, samples)
    else:
        target = out / tflite_file.file_name(quantization)
        calibration = calibration_images(source) if quantization == "int8" else None
        details = tflite_file.write(model, target, size, quantization, calibration)
        if calibration is not None:
            details["calibration_images"] = len(calibration)
            problems = [
                f"not a full-integer int8 file: {problem}"
                for problem in tflite_file.integer_only_problems(target)
            ]
        outputs = tflite_file.predict(target, samples)
    quantized = export_format == "tflite" and quantization != "none"
    checks = {
        name: parity.compare(probabilities, samples.reference, quantized=quantized)
        for name, probabilities in outputs.items()
    }
    result = ExportResult(export_format, quantization, target, checks, problems)
    entry = {
        "format": export_format,
        "quantization": quantization,
        "path": target.name,
        "bytes": metadata.size_in_bytes(target),
        # report's temperature, folded into the output layer: the probabilities are calibrated
        "temperature": temperature.read(source.run_dir) or 1.0,
        **details,
        "parity": {
            "compared_with": f"the run's {rundir.MODEL} (its temperature applied) on the same "
            "images, resized like training",
            "images": samples.counts,
            **{name: check.to_json() for name, check in checks.items()},
        },
        "problems": problems,
        "passed": result.passed,
        "versions": _versions(export_format),
    }
    return result, entry


def _failure(result: ExportResult) -> str:
    reasons = [
        (f"{name} " if len(result.parity) > 1 else "") + check.describe()
        for name, check in result.parity.items()
        if not check.passed
    ]
    return f"{result.label} ({result.path.name}) " + ", ".join(reasons + result.problems)


def _versions(export_format: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {
        key: value
        for key, value in runtime.versions().items()
        if key in ("transferctl", "tensorflow", "keras", "numpy")
    }
    for package in _PACKAGES.get(export_format, ()):
        distribution = package.replace("_", "-")
        try:
            found[package] = version(distribution)
        except PackageNotFoundError:
            continue
    return found
