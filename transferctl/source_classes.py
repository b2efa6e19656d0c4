"""The classes of a data source, known without TensorFlow or opening an image.

`data.classes` is checked against them by `validate` (config/checks.py) and again when the data
loads; `plan` sizes the head with them.
"""

from __future__ import annotations

import difflib
import os

from transferctl.config.schema import Data
from transferctl.errors import UserError, quote

SHOWN_CLASSES = 12


def source_class_names(data: Data) -> list[str] | None:
    """The classes of `data.source`, in label order, before `data.classes` picks from them.

    digits: "0".."9"; CIFAR: Keras's label order; folder: the class sub-folders of train/ (or of
    the folder itself), sorted. None when the folder cannot be listed.
    """
    if data.source == "digits":
        return [str(digit) for digit in range(10)]
    if data.source in ("cifar10", "cifar100"):
        from transferctl.data.sources import CIFAR10_CLASSES, CIFAR100_CLASSES

        return list(CIFAR10_CLASSES if data.source == "cifar10" else CIFAR100_CLASSES)
    if data.path is None:
        return None
    folder = data.path / "train" if (data.path / "train").is_dir() else data.path
    try:
        return sorted(
            entry.name
            for entry in os.scandir(folder)
            if entry.is_dir() and not entry.name.startswith(".")
        )
    except OSError:
        return None


def unknown_classes(wanted: list[str], available: list[str]) -> UserError | None:
    """The `data.classes` error for the names in `wanted` that `available` lacks, or None.

    Example:
        error = unknown_classes(["x"], ["0", "1"])
        # error.line(): "data.classes: unknown class(es) 'x'; the source has 0, 1"
    """
    missing = [name for name in wanted if name not in available]
    if not missing:
        return None
    named = []
    for name in missing:
        close = difflib.get_close_matches(name, available, n=1)
        named.append(quote(name) + (f" (did you mean {quote(close[0])}?)" if close else ""))
    listing = ", ".join(available)
    if len(available) > SHOWN_CLASSES:
        listing = f"{', '.join(available[:10])}, ... ({len(available)} classes)"
    return UserError(
        "data.classes", f"unknown class(es) {', '.join(named)}", f"the source has {listing}"
    )
