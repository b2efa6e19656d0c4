"""The linear probe: a logistic regression on frozen features, as a baseline and as a head's start.

Measured (docs/keras-behaviour.md): pooled features of a frozen pretrained body are unnormalised,
and a Dense head trained with Adam on them reached 45-57% where scikit-learn's LogisticRegression on
standardised copies reached 69-70%. So, as LP-FT (Kumar et al., ICLR 2022) does, the probe is fitted
first (standardised features, multinomial, L2 strength chosen on the validation split) and the head
*starts* from its solution:

- the head's `feature_norm` layer (a frozen built-in `BatchNormalization`) takes the probe's
  standardisation;
- a head without hidden layers gets the probe's weights as its classifier;
- a head with hidden layers (at least 2 x classes units each) computes the probe exactly:
  hidden units 2k and 2k+1 take +z_k and -z_k (the probe's k-th logit), later hidden layers pass
  them through, and the classifier adds relu(z_k) - relu(-z_k) = z_k. The other hidden units keep
  their random start and a zero outgoing weight, free to learn what the probe misses.

Training then goes on from there; the phase keeps its best epoch, the start included.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferctl.errors import UserError

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MIN_SCALE = 1e-3  # sqrt of the feature_norm's epsilon: its variance stays >= 0
NORM_LAYER = "feature_norm"
OUTPUT_LAYER = "predictions"


@dataclass
class Probe:
    """A fitted probe: standardisation, weights [classes, features], bias, and its scores."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    C: float
    scores: dict[str, dict[str, float]]

    def summary(self) -> dict[str, Any]:
        """What metrics.json records as `linear_probe`."""
        return {**self.scores, "C": self.C}


def fit_probe(inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Probe:
    """Fit on `train`, choose C on `val` (accuracy, then log loss), score every split.

    Args:
        inputs: features per split, [N, D].
        labels: one-hot labels per split, [N, classes].
    """
    from sklearn.linear_model import LogisticRegression

    mean, scale = standardisation(inputs["train"])

    def standardised(split: str) -> np.ndarray:
        return (inputs[split] - mean) / scale

    x_train, y_train = standardised("train"), labels["train"].argmax(axis=1)
    classes = labels["train"].shape[1]
    best: tuple[tuple[float, float], Any] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes on tiny, separable sets
        for c in C_GRID if "val" in inputs else (1.0,):
            fitted = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
            if "val" not in inputs:
                best = ((0.0, 0.0), fitted)
                break
            accuracy, loss = _score(fitted, standardised("val"), labels["val"], classes)
            if best is None or (accuracy, -loss) > best[0]:
                best = ((accuracy, -loss), fitted)
    assert best is not None
    chosen = best[1]
    coef, intercept = _full_weights(chosen, classes, x_train.shape[1])
    scores: dict[str, dict[str, float]] = {}
    for split in ("val", "test"):
        if split in inputs:
            accuracy, loss = _score(chosen, standardised(split), labels[split], classes)
            scores[split] = {"accuracy": accuracy, "loss": loss}
    return Probe(mean, scale, coef, intercept, float(chosen.C), scores)


def standardisation(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and spread; spreads floored at `MIN_SCALE`.

    The head's `feature_norm` divides by sqrt(variance + 1e-6); flooring at 1e-3 keeps its
    standardisation exactly the probe's, also for the vanishing features of untrained networks.
    """
    mean = inputs.mean(axis=0, dtype=np.float64)
    scale = np.maximum(inputs.std(axis=0, dtype=np.float64), MIN_SCALE)
    return mean, scale


def init_head(model: Any, probe: Probe, where: str = "model.head.init") -> None:
    """Make `model`'s head compute `probe` exactly (see the module docstring)."""
    _set_norm(model, probe.mean, probe.scale)
    classes = probe.coef.shape[0]
    hidden = _hidden_layers(model)
    output = model.get_layer(OUTPUT_LAYER)
    if not hidden:
        output.set_weights([probe.coef.T.astype(np.float32), probe.intercept.astype(np.float32)])
        return
    narrow = [layer for layer in hidden if layer.units < 2 * classes]
    if narrow:
        raise UserError(
            where,
            f"a probe-initialised head needs hidden layers of at least 2 x {classes} units "
            f"(the classes); {narrow[0].name} has {narrow[0].units}",
            "widen model.head.hidden, or set model.head.init: random",
        )
    pairs = np.concatenate([probe.coef, -probe.coef], axis=0)  # [2K, D]: z_k then -z_k
    order = np.arange(2 * classes).reshape(2, classes).T.reshape(-1)  # k, K+k -> 2k, 2k+1
    first_kernel, first_bias = hidden[0].get_weights()
    first_kernel[:, : 2 * classes] = pairs[order].T
    first_bias[: 2 * classes] = np.concatenate([probe.intercept, -probe.intercept])[order]
    hidden[0].set_weights([first_kernel, first_bias])
    for layer in hidden[1:]:
        kernel, bias = layer.get_weights()
        kernel[:, : 2 * classes] = 0.0
        kernel[: 2 * classes, :] = 0.0
        kernel[np.arange(2 * classes), np.arange(2 * classes)] = 1.0
        bias[: 2 * classes] = 0.0
        layer.set_weights([kernel, bias])
    kernel = np.zeros(output.get_weights()[0].shape, np.float32)
    kernel[2 * np.arange(classes), np.arange(classes)] = 1.0
    kernel[2 * np.arange(classes) + 1, np.arange(classes)] = -1.0
    output.set_weights([kernel, np.zeros(classes, np.float32)])


def set_standardisation(model: Any, inputs: np.ndarray) -> None:
    """Standardise the head's input with the training features' mean and spread."""
    mean, scale = standardisation(inputs)
    _set_norm(model, mean, scale)


def _set_norm(model: Any, mean: np.ndarray, scale: np.ndarray) -> None:
    """`feature_norm` (a frozen BatchNormalization) computes (x - mean) / scale."""
    norm = model.get_layer(NORM_LAYER)
    norm.moving_mean.assign(mean.astype(np.float32))
    norm.moving_variance.assign((scale**2 - norm.epsilon).astype(np.float32))


def _hidden_layers(model: Any) -> list[Any]:
    return [layer for layer in model.layers if layer.name.startswith("hidden_")]


def _score(fitted: Any, x: np.ndarray, onehot: np.ndarray, classes: int) -> tuple[float, float]:
    from sklearn.metrics import log_loss

    truth = onehot.argmax(axis=1)
    probabilities = fitted.predict_proba(x)
    full = np.zeros((x.shape[0], classes))
    full[:, fitted.classes_] = probabilities
    accuracy = float((full.argmax(axis=1) == truth).mean())
    loss = float(log_loss(truth, full, labels=np.arange(classes)))
    return accuracy, loss


def _full_weights(fitted: Any, classes: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights for every class, also those absent from the training labels (very negative)."""
    coef = np.zeros((classes, width))
    intercept = np.full(classes, -30.0)
    if len(fitted.classes_) == 2:  # scikit-learn keeps one row for two classes
        low, high = fitted.classes_
        coef[high], intercept[high] = fitted.coef_[0] / 2, fitted.intercept_[0] / 2
        coef[low], intercept[low] = -fitted.coef_[0] / 2, -fitted.intercept_[0] / 2
    else:
        coef[fitted.classes_] = fitted.coef_
        intercept[fitted.classes_] = fitted.intercept_
    return coef, intercept
