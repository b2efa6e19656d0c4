"""Reading what the user points at, bounded: regular files only, sizes and pixels capped.

A named pipe called `pipe.png` blocks `open()` until a writer comes, forever; a character
device (`/dev/zero`) never ends; a 390 KB PNG can declare 20000x20000 pixels and take 6 GB to
decode. So every file the user names (a config, an image) is checked with `stat` before it is
opened, opened with `O_NONBLOCK` (a FIFO swapped in after the check still cannot block), checked
again on the open descriptor, and read up to a limit; an image's size is read from its header
before anything decodes its pixels. The audit, `predict` and `evaluate --data` share the pixel
cap, so a file one of them refuses is refused by all.

Example:
    data = read_regular(Path("photo.jpg"), limit=MAX_IMAGE_BYTES)
    problem = pixels_problem(width, height)
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

# Pillow's own decompression-bomb threshold (its `Image.MAX_IMAGE_PIXELS`, 89,478,485 pixels:
# about 9459x9459, 256 MiB as RGB), applied as a hard limit everywhere images are read.
DEFAULT_MAX_PIXELS = 89_478_485
# An image file larger than this is not read at all (the largest camera JPEGs are ~100 MB).
MAX_IMAGE_BYTES = 512 * 2**20

KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotReadable(OSError):
    """A path that is not a regular file, is too large, or cannot be opened; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def kind(mode: int) -> str | None:
    """What a non-regular file is, in words ("a named pipe (FIFO)"); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in KINDS:
        if test(mode):
            return name
    return "not a regular file"


def special_kind(path: Path) -> str | None:
    """What `path` is when it is neither a regular file nor a folder; None otherwise.

    Follows symbolic links; a path that cannot be examined is None (reading it says why).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISDIR(mode) else kind(mode)


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes.

    Raises:
        NotReadable: a FIFO, device, socket or folder; larger than `limit`; or an OS error
            (missing, permission denied), with the reason in words.
    """
    with _open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if limit is not None and size > limit:
            raise NotReadable(f"file too large: {size:,} bytes (the limit is {limit:,})")
        data = _read(handle, -1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise NotReadable(f"file too large: more than {limit:,} bytes")
    return data


# a run's metrics.json holds per-class tables: thousands of classes fit in a few megabytes
JSON_MAX_BYTES = 64 * 2**20


def read_json(path: Path, limit: int = JSON_MAX_BYTES) -> Any:
    """The JSON value in `path`: a regular file of at most `limit` bytes, UTF-8. Nesting is
    bounded by the decoder's recursion check (a 20,000-deep file is refused, not a crash).

    Raises:
        NotReadable: not a regular file, too large, not UTF-8, not JSON, nested too deeply.
    """
    data = read_regular(path, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise NotReadable("not UTF-8 text") from None
    except ValueError as error:
        raise NotReadable(f"not valid JSON ({error})") from None
    except RecursionError:
        raise NotReadable("JSON nested too deeply") from None


def read_head(path: Path, count: int) -> bytes:
    """The first `count` bytes of `path` if it is a regular file (see `read_regular`)."""
    with _open_regular(path) as handle:
        return _read(handle, count)


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file (see `read_regular`); close it."""
    return _open_regular(path)


def _open_regular(path: Path) -> BinaryIO:
    try:
        found = kind(os.stat(path).st_mode)
    except OSError as error:
        raise NotReadable(f"cannot read: {error.strerror or error}") from None
    if found is not None:
        raise NotReadable(f"not a regular file: {found}")
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise NotReadable(f"cannot read: {error.strerror or error}") from None
    handle = open(descriptor, "rb", closefd=True)  # noqa: SIM115 - returned to a with block
    found = kind(os.fstat(descriptor).st_mode)
    if found is not None:  # swapped for something else after the check above
        handle.close()
        raise NotReadable(f"not a regular file: {found}")
    return handle


def _read(handle: BinaryIO, count: int) -> bytes:
    try:
        return handle.read(count)
    except OSError as error:
        raise NotReadable(f"cannot read: {error.strerror or error}") from None


def max_pixels() -> int:
    """The most pixels an image may have: Pillow's decompression-bomb threshold."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS)


def pixels_problem(width: int, height: int) -> str | None:
    """Why an image of `width` x `height` is not decoded (too many pixels), or None."""
    limit = max_pixels()
    if width * height > limit:
        return (
            f"image too large: {width}x{height} pixels, more than {limit:,} "
            "(a decompression bomb?); downscale it"
        )
    return None


def too_many_pixels(error: BaseException) -> str:
    """The reason for Pillow's `DecompressionBombError` (raised above twice its threshold,
    before the size is known to the caller; its message holds the pixel count)."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    count = f"{int(found.group(1)):,} pixels" if found else f"more than {2 * max_pixels():,} pixels"
    return (
        f"image too large: {count}, more than {max_pixels():,} (a decompression bomb?); "
        "downscale it"
    )


KERAS_FILE_FIX = "pass a .keras file saved by transferctl (a damaged file: train or export again)"


def check_keras_file(path: Path, where: str | None = None) -> None:
    """A `UserError` unless `path` is a regular file that starts like a `.keras` zip archive.

    Keras itself reports a text file named model.keras as "File not found".
    """
    from transferctl.errors import UserError

    try:
        head = read_head(path, 4)
    except NotReadable as error:
        raise UserError(where or str(path), f"{path}: {error.reason}", KERAS_FILE_FIX) from None
    if not head:
        raise UserError(where or str(path), f"{path} is empty", KERAS_FILE_FIX)
    if not head.startswith(b"PK"):
        raise UserError(
            where or str(path),
            f"{path} is not a Keras model file (a .keras file is a zip archive)",
            KERAS_FILE_FIX,
        )
