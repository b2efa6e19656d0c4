"""`compare --plot`: every run's validation accuracy per epoch in one picture.

Drawn with the same lines, epoch axis and accuracy limits as curves.png (`rundir/curves.py`);
matplotlib is imported inside the functions, with its Agg canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferctl.rundir import layout as rundir
from transferctl.rundir.curves import (
    MARKERS_UP_TO,
    Epoch,
    accuracy_limits,
    draw_line,
    epoch_axis,
)

OVERLAY_STYLES = ("-", "--", "-.", ":")
OVERLAY_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def overlay_figure(curves: Sequence[tuple[str, Sequence[Epoch]]], title: str) -> Any:
    """A matplotlib `Figure`: every run's validation accuracy per epoch, one line each.

    Args:
        curves: (label, history) per run, in legend order; a run without validation values
            is listed in the legend as such.
        title: drawn above the plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.8), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colors = _colors(len(curves))
    markers = max((len(history) for _, history in curves), default=0) <= MARKERS_UP_TO
    all_epochs: list[int] = []
    values: list[float] = []
    for index, ((label, history), color) in enumerate(zip(curves, colors, strict=True)):
        epochs = [row.epoch for row in history]
        accuracy = [row.val_accuracy for row in history]
        if not any(value is not None for value in accuracy):
            axes.plot([], [], color=color, label=f"{label} (no validation values)")
            continue
        # styles and markers cycle too, so runs whose curves coincide stay visible
        style = OVERLAY_STYLES[index % len(OVERLAY_STYLES)]
        marker = OVERLAY_MARKERS[index % len(OVERLAY_MARKERS)] if markers else None
        draw_line(axes, epochs, accuracy, label, color, style, marker)
        all_epochs += epochs
        values += [value for value in accuracy if value is not None]
    axes.set_title(title, fontsize=11)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy")
    if all_epochs:
        epoch_axis(axes, all_epochs)
        accuracy_limits(axes, values)
    axes.grid(True, color="0.9", linewidth=0.6)
    axes.set_axisbelow(True)
    # beside the plot, where it never hides a curve
    figure.legend(
        loc="outside right upper", fontsize=8.5, ncol=1 if len(curves) <= 16 else 2, frameon=False
    )
    return figure


def save_overlay(curves: Sequence[tuple[str, Sequence[Epoch]]], path: Path, title: str) -> None:
    """Draw `overlay_figure` into a PNG file at `path`, atomically."""
    figure = overlay_figure(curves, title)
    with rundir.atomic_path(path, suffix=".png") as temporary:
        figure.savefig(str(temporary), format="png")


def _colors(count: int) -> list[Any]:
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](index) for index in range(count)]
    return [colormaps["turbo"](index / max(count - 1, 1)) for index in range(count)]
