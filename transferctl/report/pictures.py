"""The report's pictures, each a PNG inlined as a data: URI (the page loads nothing)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from transferctl.data.examples import Examples

THUMBNAIL = 96  # pixels, the longer side of a gallery image
MATRIX_CLASSES = 30  # the confusion matrix drawn over at most this many classes
MAX_PICTURE_BYTES = 8 * 1024 * 1024  # curves.png inlined up to this size


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(before: dict[str, Any], after: dict[str, Any], temperature: float) -> str:
    """Accuracy against confidence per bin, before and after the temperature; the diagonal."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    titles = ("as trained", f"temperature {temperature:.3g}")
    for axis, title, curve in zip(axes, titles, (before, after), strict=True):
        bins = curve["bins"]
        centres = [(row["low"] + row["high"]) / 2 for row in bins]
        width = 0.9 * (bins[0]["high"] - bins[0]["low"]) if bins else 0.06
        axis.bar(
            centres,
            [row["accuracy"] for row in bins],
            width=width,
            color="#4c72b0",
            label="accuracy",
        )
        axis.plot(
            centres,
            [row["confidence"] for row in bins],
            "o",
            color="#dd8452",
            label="mean confidence",
        )
        axis.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("confidence (bins)")
        axis.set_title(f"{title}: ECE {curve['ece']:.4f}")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    return data_uri(_figure_png(figure))


def confusion_matrix(
    labels: np.ndarray, predicted: np.ndarray, class_names: list[str]
) -> tuple[str, list[str]]:
    """The confusion matrix as a picture, over at most `MATRIX_CLASSES` classes (those in the
    most mistakes); the classes drawn."""
    classes = len(class_names)
    shown = np.arange(classes)
    if classes > MATRIX_CLASSES:
        wrong = predicted != labels
        mistakes = np.bincount(labels[wrong], minlength=classes) + np.bincount(
            predicted[wrong], minlength=classes
        )
        shown = np.sort(np.argsort(-mistakes, kind="stable")[:MATRIX_CLASSES])
    index = {int(cls): position for position, cls in enumerate(shown)}
    matrix = np.zeros((len(shown), len(shown)), dtype=np.int64)
    for true, guess in zip(labels, predicted, strict=True):
        if int(true) in index and int(guess) in index:
            matrix[index[int(true)], index[int(guess)]] += 1
    names = [class_names[int(cls)] for cls in shown]
    plt = _pyplot()
    size = 3 + 0.3 * len(shown)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(shown)), [name[:20] for name in names], rotation=90, fontsize=8)
    axis.set_yticks(range(len(shown)), [name[:20] for name in names], fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(shown) <= 15:
        for row in range(len(shown)):
            for column in range(len(shown)):
                if matrix[row, column]:
                    colour = "white" if matrix[row, column] > matrix.max() / 2 else "black"
                    axis.text(
                        column,
                        row,
                        str(matrix[row, column]),
                        ha="center",
                        va="center",
                        color=colour,
                        fontsize=8,
                    )
    return data_uri(_figure_png(figure)), names


def inline_file(path: Path) -> str | None:
    """A PNG file of the run (curves.png) as a data: URI; None when missing or too large."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_PICTURE_BYTES:
            return None
        return data_uri(path.read_bytes())
    except OSError:
        return None


def thumbnail(examples: Examples, index: int) -> str | None:
    """Image `index` of `examples`, at most `THUMBNAIL` pixels on its longer side; None when
    the file cannot be read now."""
    from PIL import Image, ImageOps

    try:
        if examples.images is not None:
            image = Image.fromarray(np.asarray(examples.images[index], dtype=np.uint8))
            scale = max(1, THUMBNAIL // max(image.size))
            image = image.resize(
                (image.width * scale, image.height * scale), Image.Resampling.NEAREST
            )
        else:
            assert examples.paths is not None
            with Image.open(str(examples.paths[index])) as opened:
                opened.draft("RGB", (THUMBNAIL, THUMBNAIL))
                image = ImageOps.exif_transpose(opened).convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            if max(image.size) < THUMBNAIL // 2:
                scale = THUMBNAIL // max(image.size)
                image = image.resize(
                    (image.width * scale, image.height * scale), Image.Resampling.NEAREST
                )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return data_uri(buffer.getvalue())
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _enlarged(image: Any) -> Any:
    """A small image (an 8x8 digit) enlarged by a whole factor, pixels kept sharp."""
    from PIL import Image

    scale = THUMBNAIL // max(image.size)
    if scale < 2:
        return image
    size = (image.width * scale, image.height * scale)
    return image.resize(size, Image.Resampling.NEAREST)
