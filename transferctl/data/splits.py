"""Carving validation/test splits and applying `limit`: reproducible by seed, stratified."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from transferctl.data.examples import Examples
from transferctl.errors import UserError


def carve(
    examples: Examples, fraction: float, seed: int, split_name: str
) -> tuple[Examples, Examples | None]:
    """Split off `fraction` of `examples` (stratified by class when possible)."""
    if fraction <= 0.0:
        return examples, None
    count = len(examples)
    held_out = int(round(count * fraction))
    if held_out < 1 or held_out >= count:
        raise UserError(
            f"data.{split_name}_split",
            f"{fraction} of {count} images leaves an empty split",
            "use more images or another fraction",
        )
    keep, take = _split_indices(examples.labels, held_out, seed)
    return examples.take(keep), examples.take(take)


def limit(examples: Examples, at_most: int | None, seed: int) -> Examples:
    """At most `at_most` examples, keeping the class balance."""
    if at_most is None or len(examples) <= at_most:
        return examples
    _, kept = _split_indices(examples.labels, at_most, seed)
    return examples.take(np.sort(kept))


def _split_indices(
    labels: np.ndarray, second_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    indices = np.arange(labels.shape[0])
    classes, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and second_size >= len(classes) else None
    if stratify is not None and labels.shape[0] - second_size < len(classes):
        stratify = None
    first, second = train_test_split(
        indices, test_size=second_size, random_state=seed, stratify=stratify
    )
    return np.sort(first), np.sort(second)
