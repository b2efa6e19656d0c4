"""Where images come from: digits, CIFAR-10/100, a folder. No TensorFlow graph work here.

Each loader returns the splits the source itself defines (`train`, and `val`/`test` when it
has them) as `Examples`: uint8 arrays for in-memory sets, file paths for folders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferctl.config.classes import CIFAR10_CLASSES, CIFAR100_CLASSES, unknown_classes
from transferctl.data import audit, audit_cache
from transferctl.data.examples import Examples
from transferctl.errors import UserError
from transferctl.runtime.downloads import bounded_download

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


CIFAR_CACHE_FILES = {
    "cifar10": "cifar-10-batches-py-target_archive",
    "cifar100": "cifar-100-python-target_archive",
}


def load_digits() -> tuple[dict[str, Examples], list[str]]:
    """scikit-learn's 1,797 handwritten digits (8x8 scans, shipped with the package), as RGB."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    gray = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    rgb = np.repeat(gray[..., np.newaxis], 3, axis=-1)
    labels = bunch.target.astype(np.int32)
    return {"train": Examples(labels=labels, images=rgb)}, [str(d) for d in range(10)]


def load_cifar(source: str) -> tuple[dict[str, Examples], list[str]]:
    """CIFAR-10/100 through Keras's download and cache; fails fast and clearly offline."""
    from transferctl import runtime

    datasets = runtime.keras().datasets
    loader = datasets.cifar10 if source == "cifar10" else datasets.cifar100
    with bounded_download("data.source", "datasets", CIFAR_CACHE_FILES[source]):
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    names = CIFAR10_CLASSES if source == "cifar10" else CIFAR100_CLASSES
    return (
        {
            "train": Examples(labels=y_train.reshape(-1).astype(np.int32), images=x_train),
            "test": Examples(labels=y_test.reshape(-1).astype(np.int32), images=x_test),
        },
        list(names),
    )


def load_folder(root: Path) -> tuple[dict[str, Examples], list[str]]:
    """Class sub-folders under `root`, or `train/` [`val/`] [`test/`] each holding them.

    Lists image files by name without opening them; `load_scanned_folder` (what training uses)
    opens every file first and leaves the bad ones out.
    """
    if (root / "train").is_dir():
        layout = {"train": root / "train", "val": root / "val", "test": root / "test"}
        layout = {split: folder for split, folder in layout.items() if folder.is_dir()}
    else:
        layout = {"train": root}
    class_names = _class_folders(layout["train"])
    if len(class_names) < 2:
        raise UserError(
            "data.path",
            f"{layout['train']} has {len(class_names)} class folder(s); a classifier needs >= 2",
            "put each class's images in its own sub-folder",
        )
    splits: dict[str, Examples] = {}
    for split, folder in layout.items():
        names = _class_folders(folder)
        if split != "train" and names != class_names:
            missing = sorted(set(class_names) - set(names))
            extra = sorted(set(names) - set(class_names))
            raise UserError(
                "data.path",
                f"{folder} has other classes than train/ (missing: {missing or 'none'}; "
                f"extra: {extra or 'none'})",
                "give every split the same class folders",
            )
        paths: list[str] = []
        labels: list[int] = []
        for index, name in enumerate(class_names):
            files = _image_files(folder / name)
            if not files and split == "train":
                raise UserError(
                    "data.path",
                    f"class folder {folder / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})",
                    "add images or remove the folder",
                )
            paths.extend(files)
            labels.extend([index] * len(files))
        splits[split] = Examples(labels=np.asarray(labels, np.int32), paths=np.asarray(paths))
    return splits, class_names


@dataclass
class ScannedFolder:
    """A folder's splits after the audit: the usable files, and what was left out and why."""

    splits: dict[str, Examples]
    class_names: list[str]
    skipped: list[tuple[str, str]]  # path, reason; sorted by path
    audit: audit.FolderAudit


def load_scanned_folder(
    root: Path,
    on_bad_file: str = "skip",
    classes: Sequence[str] | None = None,
    *,
    unlabelled: bool = False,
) -> ScannedFolder:
    """Like `load_folder`, after opening every file (`audit.audit_folder`).

    With `on_bad_file="skip"` bad files, hidden files and class folders without a usable image
    are left out and listed in `skipped`; with `"fail"` the first of them in path order is a
    `UserError` (hidden and system files are skipped either way). EXIF orientations travel in
    `Examples.orientation`, for the pipeline to undo.

    Example:
        scanned = load_scanned_folder(Path("data/flowers"), "skip")
        train = scanned.splits["train"]

    Args:
        root: class sub-folders, or train/ [val/] [test/] each holding them.
        on_bad_file: `skip` or `fail`, as `data.on_bad_file`. Defaults to `skip`.
        classes: only these class folders, labelled in this order (`data.classes`); the
            others are left out before any verdict, so their bad files do not count. Defaults
            to every class folder, sorted.
        unlabelled: every image under the folder (or under each of train/ val/ test/), with
            or without class sub-folders, as one class (`audit.UNLABELLED`): for pretraining,
            which ignores labels. Not with `classes`. Defaults to `False`.
    """
    if on_bad_file not in ("skip", "fail"):
        raise ValueError(f"`on_bad_file` must be skip or fail. Received: on_bad_file={on_bad_file}")
    if unlabelled and classes is not None:
        raise ValueError(f"`classes` needs labelled data, not `unlabelled`. Received: {classes=}")
    found = audit_cache.cached_audit(root, unlabelled=unlabelled)  # unchanged: no rescan
    if classes is not None:
        found = _only_classes(found, list(classes))
    class_names = _kept_classes(found, on_bad_file, unlabelled)
    return ScannedFolder(_usable_examples(found, class_names), class_names, found.skipped(), found)


def _kept_classes(found: audit.FolderAudit, on_bad_file: str, unlabelled: bool) -> list[str]:
    """The classes a folder's audit leaves to train on; a `UserError` where they can't be used:
    splits with other classes, a bad file under `on_bad_file: fail`, too few classes."""
    if found.other_classes:
        split, names = next(iter(found.other_classes.items()))
        missing = sorted(set(found.class_names) - set(names))
        extra = sorted(set(names) - set(found.class_names))
        raise UserError(
            "data.path",
            f"{found.folders[split]} has other classes than train/ (missing: {missing or 'none'}; "
            f"extra: {extra or 'none'})",
            "give every split the same class folders",
        )
    first = found.first_failure()
    if on_bad_file == "fail" and first is not None:
        path, reason = first
        raise UserError(
            "data.path", f"{path}: {reason}", "fix or remove it, or set data.on_bad_file: skip"
        )
    class_names = found.kept_classes()
    if unlabelled and not class_names:
        raise UserError(
            "data.path",
            f"{found.folders['train']} holds no usable images ({', '.join(IMAGE_EXTENSIONS)})",
            "add images; `transferctl doctor` says why the files there are unusable",
        )
    if len(class_names) < 2 and not unlabelled:
        usable = f" ({', '.join(class_names)})" if class_names else ""
        raise UserError(
            "data.path",
            f"{found.folders['train']} has {len(class_names)} class folder(s) with usable "
            f"images{usable}; a classifier needs >= 2",
            "put each class's images in its own sub-folder",
        )
    return class_names


def _usable_examples(found: audit.FolderAudit, class_names: list[str]) -> dict[str, Examples]:
    """Each split's usable files of `class_names`, labelled in that order, with orientations."""
    index = {name: position for position, name in enumerate(class_names)}
    splits: dict[str, Examples] = {}
    for split in found.folders:
        files = [f for f in found.usable(split) if f.class_name in index]
        orientation = np.asarray([f.orientation for f in files], np.uint8)
        splits[split] = Examples(
            labels=np.asarray([index[f.class_name] for f in files], np.int32),
            paths=np.asarray([f.path for f in files], dtype=str),
            orientation=orientation if (orientation != 1).any() else None,
        )
    return splits


def _only_classes(found: audit.FolderAudit, classes: list[str]) -> audit.FolderAudit:
    """The audit of the `classes` folders alone, with `class_names` in that order."""
    problem = unknown_classes(classes, found.class_names)
    if problem is not None:
        raise problem
    keep = set(classes)
    short = {
        split: [name for name in names if name in keep]
        for split, names in found.other_classes.items()
        if not keep <= set(names)
    }
    return dataclasses.replace(
        found,
        class_names=classes,
        files=[report for report in found.files if report.class_name in keep],
        other_classes=short,
    )


def _class_folders(folder: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _image_files(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue  # hidden files and folders (.DS_Store, macOS ._x.jpg)
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            found.append(str(path))
    return found
