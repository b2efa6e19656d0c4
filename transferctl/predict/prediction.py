"""Predicting: image files through a loaded classifier, a batch at a time, top-k labels out.

Files are read in a thread pool and predicted a batch at a time; only one batch of decoded
images is held at a time. What native decoders print about a damaged file (libjpeg's "Input
file read error") is dropped: the file is reported once, as a `Skipped`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferctl.model import tta
from transferctl.predict.classifier import Classifier
from transferctl.predict.images import Skipped, UnreadableImage, read_image
from transferctl.runtime.native import native_stderr_dropped


@dataclass(frozen=True)
class Prediction:
    """The top-k labels of one image, most probable first."""

    path: Path
    labels: list[str]
    probabilities: list[float]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "predictions": [
                {"label": label, "probability": round(probability, 6)}
                for label, probability in zip(self.labels, self.probabilities, strict=True)
            ],
        }


# float32 RGB pixels of one batch: at a large input size, fewer images per model call
MAX_BATCH_BYTES = 512 * 2**20


def predict_images(
    classifier: Classifier,
    files: Sequence[Path],
    top_k: int,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    test_time_augmentation: bool = False,
) -> Iterator[Prediction | Skipped]:
    """One `Prediction` or `Skipped` per file, in order, predicted `batch_size` at a time.

    Only one batch of decoded images is held at a time, so memory does not grow with the number
    of files.

    Args:
        classifier: from `load_classifier`.
        files: image files, e.g. from `find_images`.
        top_k: how many labels per image; capped at the number of classes.
        batch_size: images per model call. Defaults to the run's `data.batch_size` (32 for
            models without a run).
        workers: threads decoding images. Defaults to the number of CPUs, at most 8.
        test_time_augmentation: average each image's probabilities with its mirror image's
            (`model/tta.py`). Defaults to `False`.
    """
    if top_k < 1:
        raise ValueError(f"`top_k` must be at least 1. Received: top_k={top_k}")
    k = min(top_k, classifier.num_classes)
    height, width = classifier.image_size
    size = min(
        batch_size or classifier.batch_size, max(1, MAX_BATCH_BYTES // (height * width * 12))
    )
    threads = workers or max(1, min(8, os.cpu_count() or 1))

    def load(path: Path) -> np.ndarray | Skipped:
        try:
            return read_image(path, classifier.image_size)
        except UnreadableImage as error:
            return Skipped(path, str(error))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(files), size):
            chunk = files[start : start + size]
            with native_stderr_dropped():  # each unreadable file is a Skipped
                loaded = list(pool.map(load, chunk))
            readable = [index for index, item in enumerate(loaded) if isinstance(item, np.ndarray)]
            images = [item for item in loaded if isinstance(item, np.ndarray)]
            results: dict[int, Prediction] = {}
            if images:
                batch = np.stack(images).astype(np.float32, copy=False)
                if test_time_augmentation:
                    probabilities = tta.predict(classifier.predict_batch, batch)
                else:
                    probabilities = classifier.predict_batch(batch)
                for row, index in enumerate(readable):
                    results[index] = top_labels(
                        chunk[index], probabilities[row], classifier.class_names, k
                    )
            for index, item in enumerate(loaded):
                yield item if isinstance(item, Skipped) else results[index]


def top_labels(
    path: Path, probabilities: np.ndarray, class_names: Sequence[str], k: int
) -> Prediction:
    """The `k` most probable classes; ties keep class order."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return Prediction(
        path=path,
        labels=[class_names[index] for index in order],
        probabilities=[float(probabilities[index]) for index in order],
    )
