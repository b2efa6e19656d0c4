"""Test-time augmentation (`evaluate --tta`, `predict --tta`): a model's class probabilities
averaged over views of each image, the image itself and its mirror image.

The views are what training's `data.augment.flip: horizontal` (the default) teaches a model to
see alike; a model trained without flips (digits, text: `flip: none`) sees its mirror images for
the first time, and TTA can then cost accuracy (`flip_note` says so). Probabilities are averaged,
not logits, so the result is again a distribution and every metric reads as before.

Example:
    probabilities = predict(model.predict_on_batch, images)     # float32 [B, C]
    metrics["tta"] = record()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# the views, by name, as metrics.json records them; each maps a batch [B, H, W, 3] to one
VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda images: images,
    "horizontal_flip": lambda images: images[:, :, ::-1, :],
}


def predict(predict_batch: Callable[[Any], Any], images: Any) -> np.ndarray:
    """The mean of `predict_batch` over the views of `images` (float32 RGB [B, H, W, 3]).

    Args:
        predict_batch: a batch of images -> class probabilities [B, C] (e.g. a Keras model's
            `predict_on_batch`).
        images: the batch, as a NumPy array or a tensor.
    """
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim != 4:
        raise ValueError(
            f"`images` must be a batch [batch, height, width, channels]. Received: "
            f"images.shape={pixels.shape}"
        )
    outputs = [
        np.asarray(predict_batch(np.ascontiguousarray(view(pixels))), dtype=np.float32)
        for view in VIEWS.values()
    ]
    return np.stack(outputs).mean(axis=0, dtype=np.float32)


class Averaged:
    """A model whose `predict_on_batch` averages over the views (for code that calls a Keras
    model's `predict_on_batch`, as evaluation does)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_on_batch(self, images: Any) -> np.ndarray:
        return predict(self.model.predict_on_batch, images)


def record(on: bool = True) -> dict[str, Any] | None:
    """What metrics.json says of TTA: the views and how they were combined; None when off."""
    if not on:
        return None
    return {"views": list(VIEWS), "combined": "mean of the views' probabilities"}


def flip_note(flip: str | None) -> str | None:
    """A note when the model never saw horizontally flipped images in training (`flip`: the
    run's `data.augment.flip`), else None."""
    if flip is None or "horizontal" in flip:
        return None
    return (
        f"the run trained with data.augment.flip: {flip}, so mirror images are new to it; "
        "--tta averages in each image's mirror image, which can cost accuracy (digits, text)"
    )
