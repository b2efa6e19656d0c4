"""The confusion-matrix picture: legible for 2 classes and for 100.

Colour is the share of each true class (rows sum to 1), so a rare class's mistakes show as
clearly as a common one's; the counts are written in the cells while they fit (up to 30
classes). Cell size and label font shrink with the number of classes, within bounds that keep
every label readable, and long class names are shortened. Matplotlib is imported here only, and
drawn with its Agg canvas (no display, no pyplot global state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Most classes whose counts are written in the cells.
ANNOTATE_UP_TO = 30
# Longest class name shown in full on an axis.
LABEL_CHARS = 24


def confusion_matrix_figure(
    matrix: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix"
) -> Any:
    """A matplotlib `Figure`: true classes down, predicted classes across, row-normalised colour.

    Example:
        figure = confusion_matrix_figure(confusion, ["cat", "dog"], "test: accuracy 0.93")
        figure.savefig("confusion_matrix.png")

    Args:
        matrix: counts, `matrix[true, predicted]`, square with one row per class.
        class_names: in index order.
        title: drawn above the matrix.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize, PowerNorm
    from matplotlib.figure import Figure

    counts = np.asarray(matrix)
    classes = len(class_names)
    if counts.shape != (classes, classes):
        raise ValueError(
            f"`matrix` must be square with one row per class name. Received: "
            f"matrix.shape={counts.shape}, {classes} class names"
        )
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)

    cell = float(np.clip(7.0 / classes, 0.17, 0.9))  # inches per cell
    label_size = float(np.clip(cell * 72 * 0.55, 6.0, 11.0))  # points; 0.17in -> 6.7pt
    side = cell * classes
    figure = Figure(figsize=(side + 2.8, side + 1.6), dpi=150 if classes > 30 else 110)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    annotated = classes <= ANNOTATE_UP_TO
    # Without numbers in the cells, a square-root scale keeps the small confusions visible.
    norm = Normalize(0.0, 1.0) if annotated else PowerNorm(0.5, 0.0, 1.0)
    image = axes.imshow(shares, cmap="Blues", norm=norm, interpolation="nearest")
    axes.set_aspect("equal")

    _label_axes(axes, class_names, label_size, title)
    if annotated:
        _write_counts(axes, counts, shares, cell)
    _draw_lines(axes, classes, between_cells=annotated)

    colorbar = figure.colorbar(
        image, ax=axes, fraction=0.04, pad=0.02, shrink=0.8 if classes <= 10 else 0.4
    )
    scale = "" if annotated else ", square-root scale"
    colorbar.set_label(f"share of the true class (row){scale}", fontsize=max(label_size, 9.0))
    colorbar.ax.tick_params(labelsize=max(label_size - 1, 7.0))
    return figure


def save_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str = "Confusion matrix"
) -> None:
    """Draw `confusion_matrix_figure` into a PNG file at `path`."""
    figure = confusion_matrix_figure(matrix, class_names, title)
    figure.savefig(str(path), format="png", bbox_inches="tight", pad_inches=0.15)


def _label_axes(axes: Any, class_names: Sequence[str], label_size: float, title: str) -> None:
    """Class names along both axes (across, turned upright when many or long), and the titles."""
    classes = len(class_names)
    names = [_shorten(str(name)) for name in class_names]
    ticks = np.arange(classes)
    axes.set_xticks(ticks)
    axes.set_yticks(ticks)
    axes.set_yticklabels(names, fontsize=label_size)
    if classes > 10 or max(len(name) for name in names) > 6:
        axes.set_xticklabels(names, fontsize=label_size, rotation=90)
    else:
        axes.set_xticklabels(names, fontsize=label_size)
    axes.tick_params(length=2 if classes > 30 else 3.5, pad=2)
    axes.set_xlabel("predicted class", fontsize=max(label_size, 9.0))
    axes.set_ylabel("true class", fontsize=max(label_size, 9.0))
    axes.set_title(title, fontsize=max(label_size + 1, 10.0), pad=10)


def _draw_lines(axes: Any, classes: int, *, between_cells: bool) -> None:
    """Thin white lines between the cells; without them (many classes), a faint guide line
    every 10th class, so a row can be followed across."""
    if between_cells:
        axes.set_xticks(np.arange(classes + 1) - 0.5, minor=True)
        axes.set_yticks(np.arange(classes + 1) - 0.5, minor=True)
        axes.grid(which="minor", color="white", linewidth=0.8)
        axes.tick_params(which="minor", length=0)
        return
    for position in np.arange(10, classes, 10) - 0.5:
        axes.axhline(position, color="0.85", linewidth=0.4)
        axes.axvline(position, color="0.85", linewidth=0.4)


def _write_counts(axes: Any, counts: np.ndarray, shares: np.ndarray, cell: float) -> None:
    largest = len(str(int(counts.max()))) if counts.size else 1
    # fit the widest number in a cell: ~0.6em per digit
    size = float(np.clip(cell * 72 * 0.8 / max(largest * 0.6, 1.2), 5.0, 12.0))
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            count = int(counts[row, column])
            if count == 0 and row != column:
                continue
            dark = shares[row, column] > 0.55
            axes.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=size,
                color="white" if dark else "0.15",
            )


def _shorten(name: str) -> str:
    """Long names keep their start and end, where names that share a prefix differ."""
    if len(name) <= LABEL_CHARS:
        return name
    head = (LABEL_CHARS - 1) // 2
    return f"{name[:head]}…{name[-(LABEL_CHARS - 1 - head) :]}"
