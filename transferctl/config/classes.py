"""The classes of a data source, known without TensorFlow or opening an image.

`data.classes` is checked against them by `validate` (config/checks.py) and again when the data
loads; `plan` sizes the head with them.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from transferctl.config.schema import Data
from transferctl.errors import UserError, quote
from transferctl.rundir.reading import read_labels

SHOWN_CLASSES = 12

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR100_CLASSES = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
]


def source_class_names(data: Data) -> list[str] | None:
    """The classes of `data.source`, in label order, before `data.classes` picks from them.

    digits: "0".."9"; CIFAR: Keras's label order; folder: the class sub-folders of train/ (or of
    the folder itself), sorted. None when the folder cannot be listed.
    """
    if data.source == "digits":
        return [str(digit) for digit in range(10)]
    if data.source in ("cifar10", "cifar100"):
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
    if not available:
        return UserError(
            "data.classes",
            f"unknown class(es) {', '.join(named)}: the folder has no class sub-folders",
            "put each class's images in a sub-folder named for the class (data.path/CLASS/...)",
        )
    listing = ", ".join(available)
    if len(available) > SHOWN_CLASSES:
        listing = f"{', '.join(available[:10])}, ... ({len(available)} classes)"
    return UserError(
        "data.classes", f"unknown class(es) {', '.join(named)}", f"the source has {listing}"
    )


def teacher_class_problem(run_dir: Path, class_names: list[str]) -> UserError | None:
    """The `distill.teacher` error when the run's labels.txt holds other classes, or None.

    The order may differ (the teacher's outputs are reordered); the set of classes may not.

    Example:
        error = teacher_class_problem(Path("runs/teacher-20260101-120000"), ["0", "1"])
    """
    try:
        taught = read_labels(run_dir / "labels.txt")
    except UserError as error:
        return UserError(
            "distill.teacher",
            f"cannot use {error.where} ({error.what})",
            "pass a run directory made by `finetune`",
        )
    if set(taught) == set(class_names) and len(taught) == len(class_names):
        return None
    differences = []
    missing = [name for name in class_names if name not in taught]
    extra = [name for name in taught if name not in class_names]
    if missing:
        differences.append(f"it never learned {_names(missing)}")
    if extra:
        differences.append(f"it learned {_names(extra)}, which the data does not have")
    if not differences:
        differences.append(f"its {len(taught)} labels repeat a class")
    return UserError(
        "distill.teacher",
        f"the run {run_dir} learned other classes than this data has: {'; '.join(differences)}",
        "pick a teacher trained on the same classes (its labels.txt), or set data.classes to them",
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(quote(name) for name in names[:SHOWN_CLASSES])
    return shown + (f" and {len(names) - SHOWN_CLASSES} more" if len(names) > SHOWN_CLASSES else "")
