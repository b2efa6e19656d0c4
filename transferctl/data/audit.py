"""The audit of an image folder before training: every file opened once, usable or why not.

`image_dataset_from_directory` lists a folder without opening a file, so a zero-byte, truncated or
text-as-image file kills `fit` mid-epoch, macOS `._x.jpg` resource forks are included and an empty
folder becomes a class (docs/keras-behaviour.md). `audit_folder` decodes every file once, before
training, in a thread pool (Pillow releases the GIL while it decodes and hashes), and decides for
each: usable, or bad with a short reason. No TensorFlow here, so `transferctl doctor` is quick.

This module walks the folder (splits, class folders, hidden and unreadable entries) and hands
each file to `file_verdict.inspect_file`, which decides what TensorFlow's decoder will make of
it; what was found is a `FolderAudit` (`audit_report`), which also answers what `doctor`
reports: sizes, modes, content hashes for exact duplicates within and across splits, and the
class counts. The names of both are importable from here.

Example:
    found = audit_folder(Path("data/flowers"))
    for path, reason in found.skipped():
        print(path, reason)
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from transferctl import labels
from transferctl.data.audit_report import EMPTY_CLASS, TINY_SIDE, FolderAudit, split_shortfalls
from transferctl.data.file_verdict import (
    ORIENTATION_TAG,
    FileReport,
    inspect_file,
    tensorflow_reads_webp,
)
from transferctl.errors import UserError, quote
from transferctl.files import paths
from transferctl.labels import SPLITS

__all__ = [
    "EMPTY_CLASS",
    "HIDDEN_FOLDER",
    "ORIENTATION_TAG",
    "TINY_SIDE",
    "UNLABELLED",
    "FileReport",
    "FolderAudit",
    "audit_folder",
    "class_folders",
    "find_splits",
    "inspect_file",
    "split_shortfalls",
    "tensorflow_reads_webp",
]

HIDDEN_FOLDER = "hidden folder"
UNLABELLED = "(unlabelled)"  # the one class of `audit_folder(..., unlabelled=True)`


def audit_folder(
    root: Path, *, where: str = "data.path", workers: int | None = None, unlabelled: bool = False
) -> FolderAudit:
    """Audit every file of `root`'s class folders (or of train/ [val/] [test/] under it).

    Args:
        root: class sub-folders, or train/ [val/] [test/] each holding them.
        where: the name of `root` in error messages (the config key or the argument).
        workers: threads that open files. Defaults to Python's default for I/O-bound pools.
        unlabelled: every image under each split folder, in sub-folders or not, as the one
            class `UNLABELLED` (`transferctl pretrain` ignores labels). Defaults to `False`.

    Raises:
        UserError: `root` is missing, is a file, or holds no class folders.
    """
    started = time.perf_counter()
    folders = find_splits(root, where)
    class_names = [UNLABELLED] if unlabelled else class_folders(folders["train"], where)
    if not class_names:
        raise UserError(
            where,
            f"{folders['train']} has no class sub-folders",
            "put each class's images in its own sub-folder",
        )
    jobs: list[tuple[Path, str, str]] = []
    reports: list[FileReport] = []
    other_classes: dict[str, list[str]] = {}
    loose: list[str] = []
    for split, folder in folders.items():
        if unlabelled:
            _collect(folder, split, UNLABELLED, jobs, reports)
            continue
        found = class_folders(folder, where)
        labels.check_class_folders([folder / name for name in found], where)
        if found != class_names:
            other_classes[split] = found
        loose += sorted(
            str(entry)
            for entry in _entries(folder, where)
            if entry.is_file() and not entry.name.startswith(".")
        )
        for name in class_names:
            if (folder / name).is_dir():
                _collect(folder / name, split, name, jobs, reports)
    webp = tensorflow_reads_webp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's, about odd EXIF or large images
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reports += pool.map(lambda job: inspect_file(*job, webp=webp), jobs)
    return FolderAudit(
        root=root,
        folders=folders,
        class_names=class_names,
        files=sorted(reports, key=lambda f: f.path),
        other_classes=other_classes,
        loose_files=loose,
        seconds=time.perf_counter() - started,
    )


def _collect(
    folder: Path,
    split: str,
    class_name: str,
    jobs: list[tuple[Path, str, str]],
    reports: list[FileReport],
) -> None:
    """Every file under `folder`: a job to inspect, or (hidden, unreadable) a report at once."""
    for path, problem in _walk(folder):
        if problem is None:
            jobs.append((path, split, class_name))
        elif problem == HIDDEN_FOLDER:
            reports.append(FileReport(str(path), split, class_name, HIDDEN_FOLDER, ignored=True))
        else:
            reports.append(FileReport(str(path), split, class_name, problem))


def find_splits(root: Path, where: str = "data.path") -> dict[str, Path]:
    """train/ [val/] [test/] when `root` has a train/ folder, else `root` itself as train."""
    if not root.exists():
        raise UserError(where, f"folder {paths.missing(root)}: {root}", "check the path")
    if not root.is_dir():
        raise UserError(where, f"expected a folder of class sub-folders; got the file {root}")
    if not (root / "train").is_dir():
        return {"train": root}
    return {split: root / split for split in SPLITS if (root / split).is_dir()}


def class_folders(folder: Path, where: str = "data.path") -> list[str]:
    return sorted(
        entry.name
        for entry in _entries(folder, where)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _entries(folder: Path, where: str) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as error:
        raise UserError(
            where,
            f"cannot read the folder {quote(str(folder))} ({error.strerror or error})",
            "check its permissions",
        ) from None


def _walk(class_folder: Path) -> list[tuple[Path, str | None]]:
    """Files under a class folder, sorted, each with None; hidden folders once each (not
    descended into) and folders that cannot be read, each with why."""
    found: list[tuple[Path, str | None]] = []

    def unreadable(error: OSError) -> None:
        folder = Path(error.filename) if error.filename else class_folder
        found.append((folder, f"cannot read the folder: {error.strerror or error}"))

    for directory, subfolders, names in os.walk(class_folder, onerror=unreadable):
        here = Path(directory)
        for name in sorted(subfolders):
            if name.startswith("."):
                found.append((here / name, HIDDEN_FOLDER))
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found += [(here / name, None) for name in sorted(names)]
    return found
