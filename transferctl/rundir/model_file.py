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
            return keras.saving.load_model(str(path), compile=False, safe_mode=safe_mode)
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file is the user's input
        if explain is None:
            raise
        raise explain(LoadFailure(path, error)) from None
