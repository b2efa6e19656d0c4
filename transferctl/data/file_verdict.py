"""The verdict on one file: usable for training, or not and why, and what it holds.

The verdicts follow what `tf.io.decode_image(channels=3, expand_animations=False)` accepts,
measured file by file on TensorFlow 2.21: it reads BMP, GIF, JPEG (MPO too), PNG and still RGB
WebP, with any channel mode. Pillow reads more than that, so a file Pillow reads but TensorFlow
does not is bad here: TIFF and other formats, 1/4/16-bit, compressed or palette BMP (TensorFlow
fails, or reads the palette indices as grey), WebP with transparency or animation, a PNG cut
before its IEND chunk. TensorFlow does not apply EXIF orientation: the verdict records it and
the pipeline rotates (`pipeline.orient`). No TensorFlow here (`tensorflow_reads_webp` looks at
its files), so the audit stays quick.

Example:
    report = inspect_file(Path("data/flowers/rose/1.jpg"), webp=tensorflow_reads_webp())
    print(report.usable, report.reason)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

from transferctl import files

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
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})
ORIENTATION_TAG = 0x0112
SNIFF_BYTES = 4096

HIDDEN_FILE = "hidden file"
SYSTEM_FILE = "system file"
TRUNCATED = "truncated image"
LOOKS_LIKE_TEXT = "not an image (looks like text)"


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
