"""Temperature scaling (Guo et al., 2017): the run's probabilities, calibrated by one number.

`transferctl report` fits a temperature T on the validation split and writes it to
`RUN_DIR/calibration.json`; `predict` on the run and every export apply it. Applying it is
folding it into the head: softmax((W x + b) / T) is softmax((W / T) x + b / T), so the
calibrated model has the same layers, parameters and outputs' argmax, and exports like the
model as trained. model.keras itself stays as trained (evaluate measures it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferctl import files
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir

CALIBRATION = "calibration.json"
OUTPUT_LAYER = "predictions"  # the head's softmax Dense (model/classifier.py's OUTPUT_NAME)
LOWEST, HIGHEST = 0.05, 20.0  # the temperatures a fit may find
KERAS_EPSILON = 1e-7


def fit(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `labels`."""
    from scipy.optimize import minimize_scalar

    logits = np.log(np.clip(probabilities.astype(np.float64), KERAS_EPSILON, 1.0))

    def loss(log_temperature: float) -> float:
        return negative_log_likelihood(labels, scaled(logits, float(np.exp(log_temperature))))

    best = minimize_scalar(loss, bounds=(np.log(LOWEST), np.log(HIGHEST)), method="bounded")
    temperature = float(np.exp(best.x))
    # never worse than leaving it alone, on the data it was fitted on
    if loss(0.0) <= best.fun:
        return 1.0
    return round(temperature, 6)


def scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T), computed stably; `logits` may be log-probabilities."""
    shifted = logits / temperature
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exponent = np.exp(shifted)
    return exponent / exponent.sum(axis=1, keepdims=True)


def apply(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The calibrated probabilities of probabilities the model gave."""
    logits = np.log(np.clip(probabilities.astype(np.float64), KERAS_EPSILON, 1.0))
    return scaled(logits, temperature).astype(np.float32)


def negative_log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
    chosen = probabilities[np.arange(labels.shape[0]), labels]
    return float(-np.mean(np.log(np.clip(chosen, KERAS_EPSILON, 1.0))))


def write(run_dir: Path, calibration: dict[str, Any]) -> None:
    """RUN_DIR/calibration.json (atomically): `temperature` and how it was fitted."""
    rundir.write_json(run_dir / CALIBRATION, calibration)


def read(run_dir: Path) -> float | None:
    """The run's fitted temperature; None when none was fitted (or it is 1)."""
    path = run_dir / CALIBRATION
    if not path.exists():
        return None
    try:
        document = files.read_json(path)
    except files.NotReadable as error:
        raise UserError(
            str(path), f"cannot read it ({error.reason})", "delete it, or run report again"
        ) from None
    value = document.get("temperature") if isinstance(document, dict) else None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not LOWEST <= value <= HIGHEST
    ):
        raise UserError(
            str(path),
            f"temperature must be a number from {LOWEST} to {HIGHEST}; got {value!r}",
            "delete the file, or run `transferctl report` on the run again",
        )
    return None if value == 1 else float(value)


def calibrated(model: Any, run_dir: Path) -> Any:
    """`model` with the run's temperature folded into its output layer (in place)."""
    temperature = read(run_dir)
    if temperature is not None:
        fold(model, temperature)
    return model


def fold(model: Any, temperature: float) -> None:
    """Divide the softmax Dense's kernel and bias by `temperature`."""
    try:
        layer = model.get_layer(OUTPUT_LAYER)
    except ValueError:
        raise UserError(
            str(CALIBRATION),
            f"the model has no {OUTPUT_LAYER!r} layer to apply the temperature to",
            f"delete {CALIBRATION} from the run",
        ) from None
    layer.set_weights([np.asarray(weight) / temperature for weight in layer.get_weights()])
