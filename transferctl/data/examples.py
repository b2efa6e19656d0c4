"""A set of labelled examples: in-memory uint8 images, or image file paths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Examples:
    labels: np.ndarray
    images: np.ndarray | None = None  # uint8 [N, H, W, 3]
    paths: np.ndarray | None = None  # str [N]
    # EXIF orientation of each file, 1 (as stored) to 8, for the pipeline to undo; None: all 1
    orientation: np.ndarray | None = None  # uint8 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray) -> Examples:
        return Examples(
            labels=self.labels[indices],
            images=None if self.images is None else self.images[indices],
            paths=None if self.paths is None else self.paths[indices],
            orientation=None if self.orientation is None else self.orientation[indices],
        )
