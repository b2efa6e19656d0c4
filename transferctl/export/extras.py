"""The optional packages some formats need, and the one-line fix when they are missing.

TensorFlow converts to TFLite by itself, but the parity gate runs the file in the LiteRT
interpreter (`tf.lite.Interpreter` is deprecated); ONNX needs tf2onnx and onnx to convert and
onnxruntime to run. They are extras, so a plain install stays small.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from transferctl.errors import UserError

# format -> (extra name, [(import name, pip name)])
NEEDS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "tflite": ("tflite", (("ai_edge_litert", "ai-edge-litert"),)),
    "onnx": ("onnx", (("tf2onnx", "tf2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"))),
}


def install_command(extra: str, *, upgrade: bool = False) -> str:
    return f"pip install {'--upgrade ' if upgrade else ''}'transferctl[{extra}]'"


def is_installed(module: str) -> bool:
    """Whether `module` can be found, without importing it (imports can take seconds)."""
    return importlib.util.find_spec(module) is not None


def check_installed(export_format: str) -> None:
    """Raise a `UserError` naming the missing packages and the pip command that adds them."""
    if export_format not in NEEDS:
        return
    extra, packages = NEEDS[export_format]
    missing = [pip_name for module, pip_name in packages if not is_installed(module)]
    if missing:
        raise UserError(
            f"--format {export_format}",
            f"needs the package{'s' if len(missing) > 1 else ''} {', '.join(missing)}, "
            "which is not installed",
            f"run: {install_command(extra)}",
        )


def load(module: str, export_format: str) -> ModuleType:
    """Import an optional package; one that is installed but broken is reported the same way."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = NEEDS[export_format][0]
        raise UserError(
            f"--format {export_format}",
            f"the package {module} is installed but does not import ({error})",
            f"run: {install_command(extra, upgrade=True)}",
        ) from None
