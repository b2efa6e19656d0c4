"""Loading a `.keras` file safely: a run's model.keras, a teacher's, a weights file, an export.

One way for every reader: Keras's `safe_mode` on unless the user passed `--unsafe` (it refuses
code hidden in Lambda layers), uncompiled (no optimizer state is needed to predict), TensorFlow's
native log lines dropped, and a file that does not load reported as the caller's one-line
`UserError`, never a traceback. Readers that load a model transferctl 0.1 wrote import
`transferctl.model.preprocess` first, which registers its custom layer (the model package sits
above this one).

Example:
    model = load_model_file(run / MODEL, check_as="RUN_DIR")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferctl import files, runtime
from transferctl.errors import UserError, first_line
from transferctl.runtime import hub_fixes

DAMAGED_FIX = "pass a .keras file saved by transferctl (a damaged file: train again)"


@dataclass(frozen=True)
class LoadFailure:
    """Why a model file did not load, for the caller's error line."""

    path: Path
    error: Exception

    @property
    def summary(self) -> str:
        """`ErrorType: its first line`."""
        return f"{type(self.error).__name__}: {first_line(self.error)}"

    @property
    def runs_code(self) -> bool:
        """The file was refused because it would run code (a Lambda layer under safe_mode)."""
        return "safe_mode" in str(self.error) or "Lambda" in str(self.error)


Explain = Callable[[LoadFailure], UserError]


def model_not_loaded(fix: str = DAMAGED_FIX) -> Explain:
    """The usual line: `PATH: cannot load the model (ErrorType: first line); fix`."""
    return lambda failure: UserError(
        str(failure.path), f"cannot load the model ({failure.summary})", fix
    )


DAMAGED: Explain = model_not_loaded()


def load_model_file(
    path: Path,
    *,
    explain: Explain | None = DAMAGED,
    check_as: str | None = None,
    safe_mode: bool = True,
) -> Any:
    """The Keras model in `path`, uncompiled.

    Args:
        path: a `.keras` file.
        explain: the `UserError` raised when it does not load; None lets Keras's own error
            through (a file transferctl has just written, where a failure is a bug).
        check_as: when given, the file is first checked to be a regular file that starts like
            a `.keras` zip archive, and a bad one named with this `where` (Keras itself reports
            a text file as "File not found").
        safe_mode: False only when the user passed `--unsafe`.
    """
    if check_as is not None:
        files.check_keras_file(path, check_as)
    keras = runtime.keras()
    try:
        with runtime.quiet_native_stderr():
            model = keras.saving.load_model(str(path), compile=False, safe_mode=safe_mode)
        hub_fixes.fix_vit_layer_configs()  # a KerasHub ViT in it saves loadably again
        return model
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file is the user's input
        if _needs_keras_hub(error):
            raise UserError(
                str(path),
                "holds KerasHub layers (a hub: backbone) and keras-hub is not installed",
                "pip install 'transferctl[hub]'",
            ) from None
        if explain is None:
            raise
        raise explain(LoadFailure(path, error)) from None


def _needs_keras_hub(error: Exception) -> bool:
    """Keras could not deserialise a `keras_hub` layer because KerasHub cannot be imported."""
    import importlib.util

    return "'module': 'keras_hub." in str(error) and importlib.util.find_spec("keras_hub") is None


def classifier_problem(model: Any, class_count: int | None = None) -> str | None:
    """Why `model` is not an image classifier (one [batch, height, width, 3] input, a softmax
    over `class_count` classes out), or None. A pretrain run's encoder, a feature extractor or
    a model ending in logits is not one: its outputs are no probabilities."""
    inputs, outputs = list(model.inputs), list(model.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        return f"it has {len(inputs)} input(s) and {len(outputs)} output(s), not one of each"
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        return f"its input is {list(shape)}, not a fixed [batch, height, width, 3] image"
    out = tuple(outputs[0].shape)
    if len(out) != 2:
        return f"its output is {list(out)}, not [batch, classes]: an encoder or feature map"
    if not _ends_in_softmax(model):
        return "its last layer is no softmax: its outputs are not probabilities"
    if class_count is not None and out[1] != class_count:
        return f"it has {out[1]} outputs, but its labels.txt names {class_count} classes"
    return None


def _ends_in_softmax(model: Any) -> bool:
    last = model.layers[-1]
    if getattr(last, "layers", None):  # a nested model as the last layer
        return _ends_in_softmax(last)
    if type(last).__name__ == "Softmax":
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"
