"""How far the probabilities can be trusted: the reliability diagram and the expected calibration
error (ECE, 15 equal-width confidence bins, as in Guo et al., 2017), before and after temperature
scaling fitted on the validation split (`transferctl.model.temperature`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from transferctl.model import temperature as temperatures

BINS = 15


@dataclass
class Calibration:
    temperature: float
    fitted_on: str | None  # "val (N images)", or None when there was nothing to fit on
    split: str  # where before and after were measured
    before: dict[str, Any]
    after: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "fitted_on": self.fitted_on,
            "measured_on": self.split,
            "bins": BINS,
            "ece_before": self.before["ece"],
            "ece_after": self.after["ece"],
            "nll_before": self.before["nll"],
            "nll_after": self.after["nll"],
            "reliability_before": self.before["bins"],
            "reliability_after": self.after["bins"],
        }


def calibrate(
    split: str,
    labels: np.ndarray,
    probabilities: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> Calibration:
    """Fit T on `validation` (labels, probabilities); measure on `labels`, `probabilities`."""
    temperature, fitted_on = 1.0, None
    if validation is not None:
        temperature = kept_temperature(*validation)
        fitted_on = f"val ({len(validation[0])} images)"
    calibrated = temperatures.apply(probabilities, temperature)
    return Calibration(
        temperature=temperature,
        fitted_on=fitted_on,
        split=split,
        before=reliability(labels, probabilities),
        after=reliability(labels, calibrated),
    )


def kept_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature fitted on the validation split (by its negative log-likelihood), kept only
    when it also lowers that split's ECE: a model already about as calibrated as a few hundred
    images can tell keeps its own probabilities (T = 1)."""
    temperature = temperatures.fit(labels, probabilities)
    before = reliability(labels, probabilities)["ece"]
    after = reliability(labels, temperatures.apply(probabilities, temperature))["ece"]
    return temperature if after < before else 1.0


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Per confidence bin: images, mean confidence, accuracy; the ECE and the NLL over all."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for index in range(bins):
        inside = which == index
        count = int(inside.sum())
        if count == 0:
            continue
        mean_confidence = float(confidence[inside].mean())
        accuracy = float(correct[inside].mean())
        ece += count / len(labels) * abs(accuracy - mean_confidence)
        rows.append(
            {
                "low": float(edges[index]),
                "high": float(edges[index + 1]),
                "images": count,
                "confidence": mean_confidence,
                "accuracy": accuracy,
            }
        )
    return {
        "ece": float(ece),
        "nll": temperatures.negative_log_likelihood(labels, probabilities),
        "bins": rows,
    }
