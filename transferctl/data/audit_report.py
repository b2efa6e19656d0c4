"""What the audit of a folder found (`FolderAudit`), and the questions asked of it.

`FolderAudit` holds one `FileReport` per file; its methods answer what loading (the usable files,
the classes kept, what bad_files.txt lists, where `data.on_bad_file: fail` stops) and `doctor`
(duplicates within and across splits, tiny images, class imbalance, converted modes) ask.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from transferctl.data.file_verdict import FileReport
from transferctl.labels import SPLITS

TINY_SIDE = 32  # pixels: smaller than this on a side is reported as tiny
EMPTY_CLASS = "class folder without usable images"


@dataclass
class FolderAudit:
    """What `audit_folder` found; the class names are train/'s class folders, sorted."""

    root: Path
    folders: dict[str, Path]  # split -> the folder holding its class folders
    class_names: list[str]
    files: list[FileReport]  # sorted by path
    other_classes: dict[str, list[str]] = field(default_factory=dict)  # split -> class folders
    loose_files: list[str] = field(default_factory=list)  # files beside the class folders
    seconds: float = 0.0

    def usable(self, split: str | None = None) -> list[FileReport]:
        return [f for f in self.files if f.usable and (split is None or f.split == split)]

    def bad(self) -> list[FileReport]:
        """Files that can't be used, hidden and system files included."""
        return [f for f in self.files if not f.usable]

    def warnings(self) -> list[FileReport]:
        return [f for f in self.files if f.warning is not None]

    def counts(self) -> dict[str, dict[str, int]]:
        """Usable images per split and class; every class of train/ appears in every split."""
        counts = {split: dict.fromkeys(self.class_names, 0) for split in self.folders}
        for report in self.usable():
            counts[report.split][report.class_name] += 1
        return counts

    def dropped_classes(self) -> list[str]:
        """Classes with no usable training image: left out with data.on_bad_file: skip."""
        train = self.counts()["train"]
        return [name for name in self.class_names if train[name] == 0]

    def kept_classes(self) -> list[str]:
        dropped = set(self.dropped_classes())
        return [name for name in self.class_names if name not in dropped]

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of everything left out, sorted by path: what bad_files.txt lists."""
        dropped = set(self.dropped_classes())
        entries = [(f.path, f.reason) for f in self.files if f.reason is not None]
        entries += [
            (str(self.folders["train"] / name), f"{EMPTY_CLASS}: class dropped") for name in dropped
        ]
        entries += [
            (f.path, f"class {f.class_name} dropped: it has no usable training image")
            for f in self.usable()
            if f.split != "train" and f.class_name in dropped
        ]
        return sorted(entries)

    def first_failure(self) -> tuple[str, str] | None:
        """What data.on_bad_file: fail stops at: the first bad file or empty class, by path.

        Hidden and system files are never failures.
        """
        entries = [(f.path, f.reason) for f in self.files if f.reason is not None and not f.ignored]
        entries += [
            (str(self.folders["train"] / name), EMPTY_CLASS) for name in self.dropped_classes()
        ]
        return min(entries, default=None)

    def duplicates(self) -> list[list[FileReport]]:
        """Groups of usable files with identical bytes, each in split order (train first)."""
        groups: dict[str, list[FileReport]] = defaultdict(list)
        for report in self.usable():
            assert report.sha1 is not None
            groups[report.sha1].append(report)
        ordered = [sorted(group, key=_split_order) for group in groups.values() if len(group) > 1]
        return sorted(ordered, key=lambda group: _split_order(group[0]))

    def tiny(self, side: int = TINY_SIDE) -> list[FileReport]:
        """Usable images smaller than `side` pixels on a side, smallest first."""
        tiny = [f for f in self.usable() if min(f.width, f.height) < side]
        return sorted(tiny, key=lambda f: (f.width * f.height, f.path))

    def imbalance(self) -> float:
        """Largest over smallest count of usable training images among the kept classes."""
        counts = [count for count in self.counts()["train"].values() if count > 0]
        return max(counts) / min(counts) if counts else 1.0

    def converted(self) -> list[FileReport]:
        """Usable files that decoding converts: not 8-bit RGB, or EXIF-rotated."""
        return [f for f in self.usable() if f.mode != "RGB" or f.orientation != 1]


def _split_order(report: FileReport) -> tuple[int, str]:
    return SPLITS.index(report.split), report.path


def split_shortfalls(counts: dict[str, int], carved: dict[str, float]) -> list[str]:
    """Classes with too few images to be in training and in every split carved from it.

    Args:
        counts: images per class of the folder the splits are carved from.
        carved: the fractions carved from it, by config key (`validation_split`: 0.1).
    """
    fractions = {key: value for key, value in carved.items() if value > 0}
    needed = 1 + len(fractions)
    if needed == 1:
        return []
    asked = " and ".join(f"{key} {value:g}" for key, value in fractions.items())
    return [
        f"class {name!r} has {count} image(s); {asked} need at least {needed} per class "
        "(one for training and one for each carved split)"
        for name, count in counts.items()
        if count < needed
    ]
