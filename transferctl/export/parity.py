"""The parity gate: an export must compute what the Keras model computes, on the same images.

Float exports (SavedModel, .keras, ONNX, float TFLite) may differ from Keras by rounding only:
at most `FLOAT_MAX_ABS_DIFF` on any probability. Quantized TFLite files (float16, dynamic, int8)
change the numbers by design, so they must agree on the top-1 class for at least
`QUANTIZED_MIN_TOP1` of the images. A failed gate is not a user mistake: exit 1, files kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferctl.errors import TrainingFailed

FLOAT_MAX_ABS_DIFF = 1e-4
QUANTIZED_MIN_TOP1 = 0.97


class ExportFailed(TrainingFailed):
    """An export was written but is not fit to use; exit 1, the files are kept to inspect."""


class ExportParityError(ExportFailed):
    """An export disagrees with the Keras model beyond the gate's thresholds."""


@dataclass(frozen=True)
class Parity:
    """How an export's probabilities compare with the Keras model's on the same images."""

    max_abs_diff: float  # inf when the export produced NaN or infinite values
    top1_agreement: float
    num_images: int
    quantized: bool

    @property
    def passed(self) -> bool:
        if self.quantized:
            return self.top1_agreement >= QUANTIZED_MIN_TOP1
        return self.max_abs_diff <= FLOAT_MAX_ABS_DIFF

    def describe(self) -> str:
        """`max abs diff 3.1e-07, top-1 agreement 100.0% on 100 images`, and the limit missed."""
        text = (
            f"max abs diff {self.max_abs_diff:.1e}, top-1 agreement "
            f"{self.top1_agreement:.1%} on {self.num_images} images"
        )
        if not self.passed:
            if self.quantized:
                text += f" (needs >= {QUANTIZED_MIN_TOP1:.0%})"
            else:
                text += f" (needs max abs diff <= {FLOAT_MAX_ABS_DIFF:.0e})"
        return text

    def to_json(self) -> dict[str, Any]:
        finite = math.isfinite(self.max_abs_diff)
        return {
            "max_abs_diff": float(f"{self.max_abs_diff:.3e}") if finite else None,
            "top1_agreement": round(self.top1_agreement, 6),
            "num_images": self.num_images,
            "gate": (
                {"min_top1_agreement": QUANTIZED_MIN_TOP1}
                if self.quantized
                else {"max_abs_diff": FLOAT_MAX_ABS_DIFF}
            ),
            "passed": self.passed,
            **({} if finite else {"non_finite_outputs": True}),
        }


def compare(probabilities: np.ndarray, reference: np.ndarray, *, quantized: bool) -> Parity:
    """Compare an export's probabilities [N, C] with the Keras model's on the same N images."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if probabilities.shape != reference.shape:
        raise ExportParityError(
            f"the export returned probabilities of shape {list(probabilities.shape)}; "
            f"the Keras model returns {list(reference.shape)}"
        )
    if not np.isfinite(probabilities).all():
        return Parity(math.inf, 0.0, len(reference), quantized)
    max_abs_diff = float(np.abs(probabilities - reference).max())
    agreement = float(np.mean(probabilities.argmax(axis=1) == reference.argmax(axis=1)))
    return Parity(max_abs_diff, agreement, len(reference), quantized)
