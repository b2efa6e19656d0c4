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


def select_classes(examples: Examples, class_names: list[str], wanted: list[str]) -> Examples:
    """Only the examples of `wanted` classes, relabelled 0..K-1 in the order of `wanted`.

    Example:
        subset = select_classes(train, ["0", "1", ..., "9"], ["7", "3"])  # 7 -> 0, 3 -> 1

    Args:
        class_names: the names of `examples`' labels, in label order.
        wanted: names from `class_names` (`data.classes`), in the order they get labels.
    """
    unknown = [name for name in wanted if name not in class_names]
    if unknown:
        raise ValueError(
            f"`wanted` names classes that `class_names` lacks. Received: wanted={wanted}, "
            f"class_names={class_names}"
        )
    new_label = np.full(len(class_names), -1, dtype=np.int32)
    for position, name in enumerate(wanted):
        new_label[class_names.index(name)] = position
    mapped = new_label[examples.labels]
    kept = examples.take(np.flatnonzero(mapped >= 0))
    return Examples(
        labels=mapped[mapped >= 0],
        images=kept.images,
        paths=kept.paths,
        orientation=kept.orientation,
    )


def per_class(examples: Examples, at_most: int | None, seed: int) -> Examples:
    """At most `at_most` examples of each class, drawn by `seed` (few-label runs).

    Each class is drawn on its own (from the seed and its label), keeping the examples' order,
    so the same config always trains on the same images.
    """
    if at_most is None:
        return examples
    chosen = []
    for label in np.unique(examples.labels):
        members = np.flatnonzero(examples.labels == label)
        if members.size > at_most:
            rng = np.random.default_rng([seed, int(label)])
            members = np.sort(rng.choice(members, size=at_most, replace=False))
        chosen.append(members)
    if not chosen:
        return examples
    return examples.take(np.sort(np.concatenate(chosen)))
