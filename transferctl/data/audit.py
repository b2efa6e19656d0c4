"""The audit of an image folder before training: every file opened once, usable or why not.

`image_dataset_from_directory` lists a folder without opening a file, so a zero-byte, truncated or
text-as-image file kills `fit` mid-epoch, macOS `._x.jpg` resource forks are included and an empty
folder becomes a class (docs/keras-behaviour.md). `audit_folder` decodes every file once, before
training, in a thread pool (Pillow releases the GIL while it decodes and hashes), and decides for
each: usable, or bad with a short reason. No TensorFlow here, so `transferctl doctor` is quick.

The verdicts follow what `tf.io.decode_image(channels=3, expand_animations=False)` accepts,
measured file by file on TensorFlow 2.21: it reads BMP, GIF, JPEG (MPO too), PNG and still RGB
WebP, with any channel mode. Pillow reads more than that, so a file Pillow reads but TensorFlow
does not is bad here: TIFF and other formats, 1/4/16-bit, compressed or palette BMP (TensorFlow
fails, or reads the palette indices as grey), WebP with transparency or animation, a PNG cut
before its IEND chunk. TensorFlow does not apply EXIF orientation: the audit records it and the
pipeline rotates (`pipeline.orient`).

It also collects what `doctor` reports: sizes, modes, content hashes for exact duplicates within
and across splits, and the class counts.

Example:
    found = audit_folder(Path("data/flowers"))
    for path, reason in found.skipped():
        print(path, reason)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

from transferctl import files, labels
from transferctl.errors import UserError, quote
from transferctl.labels import SPLITS

# What tf.io.decode_image reads, by file name and by Pillow's name for the content.
EXTENSION_FORMATS = {
    ".bmp": "BMP",
    ".gif": "GIF",
    ".jpeg": "JPEG",
    ".jpg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
}
DECODABLE_FORMATS = ("BMP", "GIF", "JPEG", "MPO", "PNG", "WEBP")  # MPO: a JPEG with extra frames
FORMAT_NAMES = {"WEBP": "WebP", "JPEG2000": "JPEG 2000", "MPO": "JPEG"}
TINY_SIDE = 32  # pixels: smaller than this on a side is reported as tiny
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})
ORIENTATION_TAG = 0x0112
SNIFF_BYTES = 4096

HIDDEN_FILE = "hidden file"
HIDDEN_FOLDER = "hidden folder"
SYSTEM_FILE = "system file"
EMPTY_CLASS = "class folder without usable images"
TRUNCATED = "truncated image"
LOOKS_LIKE_TEXT = "not an image (looks like text)"
UNLABELLED = "(unlabelled)"  # the one class of `audit_folder(..., unlabelled=True)`


@dataclass(frozen=True)
class FileReport:
    """One entry of a class folder: usable (`reason` is None) or not, and what it holds."""

    path: str
    split: str
    class_name: str
    reason: str | None = None  # why it can't be used
    warning: str | None = None  # usable, but worth a look
    ignored: bool = False  # hidden or system: always skipped, never an error
    format: str | None = None  # Pillow's name for the content: JPEG, PNG, ...
    mode: str | None = None  # Pillow's mode: RGB, L, RGBA, P, CMYK, I;16, ...
    width: int = 0
    height: int = 0
    orientation: int = 1  # EXIF orientation, 1 (as stored) to 8
    sha1: str | None = None

    @property
    def usable(self) -> bool:
        return self.reason is None


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
        raise UserError(where, f"folder not found: {root}", "check the path")
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


def inspect_file(path: Path, split: str = "", class_name: str = "", *, webp: bool) -> FileReport:
    """Open one file the way training will read it; never raises for a bad file.

    Args:
        webp: whether TensorFlow's decoder reads WebP (`tensorflow_reads_webp()`).
    """
    report = FileReport(str(path), split, class_name)
    if path.name.startswith("."):
        return replace(report, reason=HIDDEN_FILE, ignored=True)
    if path.name.lower() in SYSTEM_FILES:
        return replace(report, reason=SYSTEM_FILE, ignored=True)
    suffix = path.suffix.lower()
    named = EXTENSION_FORMATS.get(suffix)
    try:
        # stat before open: a named pipe would block the read forever, a device never end
        if named is None:
            head = files.read_head(path, SNIFF_BYTES)
            reason = _not_an_image_name(head, suffix, webp) if head else "empty file"
            return replace(report, reason=reason)
        data = files.read_regular(path, limit=files.MAX_IMAGE_BYTES)
    except files.NotReadable as error:
        return replace(report, reason=error.reason)
    if not data:
        return replace(report, reason="empty file")
    report = replace(report, sha1=hashlib.sha1(data).hexdigest())
    return _examine(report, data, named, suffix, webp)


def _examine(report: FileReport, data: bytes, named: str, suffix: str, webp: bool) -> FileReport:
    """The verdict on one file's bytes: reason or warning; format, mode, size, orientation."""
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        return replace(report, reason=_unknown_content(data))
    except Image.DecompressionBombError as error:
        return replace(report, reason=files.too_many_pixels(error))
    except Exception as error:  # noqa: BLE001 - malformed files raise all kinds
        return replace(report, reason=_decode_failure(error))
    with image:
        content = image.format or "unknown"
        report = replace(
            report, format=content, mode=image.mode, width=image.width, height=image.height
        )
        too_large = files.pixels_problem(image.width, image.height)
        if too_large is not None:  # before a single pixel is decoded
            return replace(report, reason=too_large)
        unsupported = _unsupported(content, image, data, webp)
        if unsupported is not None:
            return replace(report, reason=unsupported)
        try:
            if content in ("JPEG", "MPO"):
                # DCT scaling: every scan is still decoded (truncation shows), ~5x faster.
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            if content == "GIF":
                for frame in ImageSequence.Iterator(image):  # TensorFlow reads every frame
                    frame.load()
            else:
                image.load()
        except Exception as error:  # noqa: BLE001 - malformed files raise all kinds
            return replace(report, reason=_decode_failure(error))
        report = replace(report, orientation=_orientation(image))
    if named != content and not (named == "JPEG" and content == "MPO"):
        report = replace(report, warning=f"content is {_format_name(content)} but named {suffix}")
    return report


def _unsupported(content: str, image: Image.Image, data: bytes, webp: bool) -> str | None:
    """Why TensorFlow's decoder would fail on (or misread) a file Pillow opened, if it would."""
    if content not in DECODABLE_FORMATS or (content == "WEBP" and not webp):
        return f"unsupported format {_format_name(content)}: convert to PNG or JPEG"
    if content == "WEBP":
        if getattr(image, "is_animated", False):
            return "animated WebP: TensorFlow reads only still WebP; convert to GIF or PNG"
        if image.mode != "RGB":
            return "WebP with transparency: TensorFlow can't decode it as RGB; convert to PNG"
    if content == "BMP":
        return _bmp_problem(data, image.mode)
    if content == "PNG" and data.rfind(b"IEND", max(0, len(data) - 4096)) < 0:
        return TRUNCATED  # Pillow stops after the pixels; TensorFlow's libpng wants IEND
    return None


def _bmp_problem(data: bytes, mode: str) -> str | None:
    """TensorFlow's BMP decoder reads uncompressed 24/32-bit, and 8-bit as grey (no palette)."""
    header_size = int.from_bytes(data[14:18], "little")
    if header_size < 40:
        return "OS/2 BMP: TensorFlow can't decode it; convert to PNG"
    bits = int.from_bytes(data[28:30], "little")
    compression = int.from_bytes(data[30:34], "little")
    if compression not in (0, 3):
        return "compressed BMP: TensorFlow can't decode it; convert to PNG"
    if bits in (24, 32) or (bits == 8 and mode == "L"):
        return None
    if bits == 8:
        return "palette BMP: TensorFlow would read its colours as grey; convert to PNG"
    return f"{bits}-bit BMP: TensorFlow can't decode it; convert to PNG"


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels are still fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _decode_failure(error: BaseException) -> str:
    message = str(error).split("\n")[0]
    if isinstance(error, EOFError) or "truncated" in message.lower():
        return TRUNCATED
    return f"cannot decode: {message or type(error).__name__}"


def _unknown_content(head: bytes) -> str:
    """A file Pillow can't identify: text (an HTML error page, a note) or unknown bytes."""
    sample = head[:SNIFF_BYTES]
    if sample.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "not an image (looks like an HTML page: a failed download?)"
    if _looks_like_text(sample):
        return LOOKS_LIKE_TEXT
    return "cannot decode: not an image format Pillow or TensorFlow knows"


def _not_an_image_name(head: bytes, suffix: str, webp: bool) -> str:
    """A file whose name is not an image's: what its content is, and what to do."""
    try:
        with Image.open(io.BytesIO(head)) as image:
            content = image.format or "unknown"
    except Exception:  # noqa: BLE001 - whatever it is, it is not an image
        if _looks_like_text(head):
            return LOOKS_LIKE_TEXT
        return f"not an image file ({suffix or 'no extension'})"
    if content in DECODABLE_FORMATS and (content != "WEBP" or webp):
        extension = {"JPEG": ".jpg", "MPO": ".jpg"}.get(content, f".{content.lower()}")
        name = f"named {suffix}" if suffix else "has no extension"
        return f"content is {_format_name(content)} but {name}: rename it to {extension}"
    return f"unsupported format {_format_name(content)}: convert to PNG or JPEG"


def _looks_like_text(sample: bytes) -> bool:
    if not sample or b"\0" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start >= len(sample) - 3  # a character cut at the end of the sample
    return True


def _format_name(content: str) -> str:
    return FORMAT_NAMES.get(content, content)


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


@functools.cache
def tensorflow_reads_webp() -> bool:
    """Whether the installed TensorFlow decodes WebP (2.21 does), found without importing it.

    `tf.io.decode_image` reads still WebP in the versions that have the `DecodeWebP` op; the
    generated op wrappers are a plain file, so looking there keeps the audit free of TensorFlow.
    """
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        generated = Path(location) / "python" / "ops" / "gen_image_ops.py"
        if generated.is_file():
            return "DecodeWebP" in generated.read_text(encoding="utf-8", errors="replace")
    return False


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
