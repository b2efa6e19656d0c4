"""Finding image files and reading them as training does, for `predict`.

Images are decoded and resized exactly as training does (`data.pipeline.decode_and_resize`), so
a run directory's top-1 here equals `evaluate`'s for the same file. Formats TensorFlow can't
decode (WebP, TIFF, some CMYK JPEGs) are read with Pillow, converted to RGB, and go through the
same resize. An unreadable file is reported (a `Skipped`), never fatal.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferctl import files, runtime
from transferctl.errors import UserError, first_line
from transferctl.files import paths as filepaths

# What a folder is searched for (case-insensitive). A file named on the command line is tried
# whatever its name.
IMAGE_SUFFIXES = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".jpe",
    ".jfif",
    ".png",
    ".webp",
    ".tif",
    ".tiff",
)


@dataclass(frozen=True)
class Skipped:
    """A file that could not be read, and why."""

    path: Path
    reason: str


def find_images(paths: Sequence[Path], problems: list[Skipped] | None = None) -> list[Path]:
    """The files named, and the image files under the folders named (recursively, sorted).

    Hidden files and folders (`.DS_Store`, macOS `._x.jpg`) are left out, as in training.
    Named pipes, devices and sockets with an image's name are kept, for `read_image` to
    report; sub-folders that cannot be read are added to `problems`, never skipped silently.
    """
    if not paths:
        raise UserError("IMAGE_OR_FOLDER", "no images given", "name image files or folders")
    found: list[Path] = []
    for path in paths:
        try:
            missing = not path.exists() and not path.is_symlink()
            folder = path.is_dir()
        except OSError:  # cannot even be examined: read_image says why
            missing = folder = False
        if missing:
            raise UserError(
                "IMAGE_OR_FOLDER", f"{path} {filepaths.missing(path)}", "check the path"
            )
        if folder:
            unreadable: list[Skipped] = []
            inside = _images_in(path, unreadable)
            if not inside and not unreadable:
                raise UserError(
                    "IMAGE_OR_FOLDER",
                    f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                    "name a folder with images in it",
                )
            found.extend(inside)
            if problems is not None:
                problems.extend(unreadable)
        else:
            found.append(path)
    return found


def _images_in(folder: Path, unreadable: list[Skipped]) -> list[Path]:
    def report(error: OSError) -> None:
        where = Path(error.filename) if error.filename else folder
        unreadable.append(Skipped(where, f"cannot read the folder: {error.strerror or error}"))

    inside: list[Path] = []
    for directory, subfolders, names in os.walk(folder, onerror=report):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        here = Path(directory)
        for name in sorted(names):
            file = here / name
            if name.startswith(".") or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if file.is_file() or files.special_kind(file) is not None:
                inside.append(file)
    return sorted(inside)  # by path, as `rglob` sorted them


class UnreadableImage(Exception):
    """A file that neither TensorFlow nor Pillow can decode."""


def read_image(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """float32 RGB 0-255 [H, W, 3] at `image_size`, decoded, EXIF-oriented and resized as
    training does.

    Only a regular file is opened (a named pipe would block forever), and its header is read
    first: an image with more pixels than `files.max_pixels()` is refused before decoding (a
    390 KB PNG can declare 20000x20000 pixels).
    """
    tf = runtime.tf()
    from transferctl.data.pipeline import decode, orient, resize

    try:
        encoded = files.read_regular(path, limit=files.MAX_IMAGE_BYTES)
    except files.NotReadable as error:
        raise UnreadableImage(error.reason) from None
    if not encoded:
        raise UnreadableImage("the file is empty")
    orientation = _check_header(encoded)
    try:
        image = decode(tf.constant(encoded))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        image = tf.constant(_pillow_rgb(encoded))  # WebP, TIFF, some CMYK JPEGs: Pillow reads them
    return np.asarray(resize(orient(image, orientation), image_size))


def _check_header(encoded: bytes) -> int:
    """The EXIF orientation (1-8; 1 when there is none: training undoes it too), after checking
    the pixel count in the header; raises `UnreadableImage` for too many pixels."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(encoded))  # the header only
    except Image.DecompressionBombError as error:
        raise UnreadableImage(files.too_many_pixels(error)) from None
    except Exception:  # noqa: BLE001 - not for Pillow: TensorFlow's decoder says what it is
        return 1
    with image:
        problem = files.pixels_problem(image.width, image.height)
        if problem is not None:
            raise UnreadableImage(problem)
        try:
            return int(image.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001 - no readable EXIF means no rotation
            return 1


def _pillow_rgb(encoded: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.seek(0)  # animated GIF/WebP: the first frame, as TensorFlow does
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise UnreadableImage("not an image file Pillow or TensorFlow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"damaged or unsupported image ({first_line(error)})") from None
