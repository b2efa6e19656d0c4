"""Training curves: `curves.png` in every run directory (the overlay `compare --plot` draws is
`rundir/overlay.py`, with the same lines and axes).

`curves.png` has two panels, loss and accuracy, each with the training and the validation line per
epoch; phases are shaded in turn, separated by vertical lines and named at the top of their span,
and the epoch model.keras holds (metrics.json's `kept`) is ringed and named in the title; runs
written before `kept` ring the epoch each phase restored. Everything is read from the run's
`history.csv` (and `metrics.json` for the kept epoch), so it can be drawn again at any time.
Matplotlib is imported inside the functions and drawn with its Agg canvas (no display, no pyplot
global state), so importing this module stays cheap and never loads TensorFlow.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferctl import files
from transferctl.errors import UserError, printable
from transferctl.rundir import layout as rundir

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"
SPAN_SHADE = "0.94"
# Loss spanning more than this ratio (max / min) is drawn on a log scale.
LOG_LOSS_RATIO = 30.0
# Up to this many epochs every point gets a marker (a one-epoch run is a single point).
MARKERS_UP_TO = 40
PHASE_FONT = 8.5


@dataclass(frozen=True)
class Epoch:
    """One row of history.csv; a metric is None where the run had no value (no validation)."""

    epoch: int
    phase: str
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float | None
    seconds: float | None


def load_history(path: Path) -> list[Epoch]:
    """The rows of a `history.csv`, in file order; [] when the file does not exist.

    Raises:
        UserError: naming the file, when it cannot be parsed.
    """
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [_epoch(row) for row in csv.DictReader(handle)]
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as error:
        raise UserError(
            str(path), f"damaged history ({error})", "restore it from a backup or rerun"
        ) from None


def curves_figure(
    history: Sequence[Epoch], title: str = "Training curves", kept_epochs: Sequence[int] = ()
) -> Any:
    """A matplotlib `Figure`: loss and accuracy per epoch, train and validation, phases marked.

    Example:
        figure = curves_figure(load_history(run / "history.csv"), run.name)
        figure.savefig("curves.png")

    Args:
        history: the epochs, in order (as `load_history` returns them).
        title: drawn above the panels.
        kept_epochs: epochs (1-based, as in history.csv) that were kept (the one model.keras
            holds); ringed on the validation line. Defaults to none.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(printable(title), fontsize=11)  # no control glyphs
    panels = figure.subplots(1, 2)
    if not history:
        for axes in panels:
            axes.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", fontsize=11)
            axes.set_axis_off()
        return figure

    for axes, metric in ((panels[0], "loss"), (panels[1], "accuracy")):
        _metric_panel(axes, history, metric, set(kept_epochs))
    # below the panels, where it never hides a point
    figure.legend(
        *panels[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncol=3,
        fontsize=8.5,
        frameon=False,
    )
    return figure


def _metric_panel(axes: Any, history: Sequence[Epoch], metric: str, kept_epochs: set[int]) -> None:
    """One panel of `curves_figure`: `metric` (loss or accuracy) per epoch, train and validation,
    phases shaded and named, the kept epochs ringed."""
    epochs = [row.epoch for row in history]
    marker = "o" if len(history) <= MARKERS_UP_TO else None
    train = [getattr(row, metric) for row in history]
    val = [getattr(row, f"val_{metric}") for row in history]
    if all(value is None for value in train + val):
        # a run without labels (transferctl pretrain) has a loss and nothing else
        axes.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", fontsize=11)
        axes.set_axis_off()
        return
    _shade_phases(axes, history)
    draw_line(axes, epochs, train, "train", TRAIN_COLOR, "-", marker)
    if any(value is not None for value in val):
        draw_line(axes, epochs, val, "validation", VAL_COLOR, "--", marker)
        kept = [
            (e, v) for e, v in zip(epochs, val, strict=True) if e in kept_epochs and v is not None
        ]
        if kept:
            axes.scatter(
                [e for e, _ in kept],
                [v for _, v in kept],
                s=110,
                facecolors="none",
                edgecolors="black",
                linewidths=1.2,
                zorder=4,
                label="kept (the epoch model.keras holds)",
            )
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(metric, fontsize=10, pad=18)
    epoch_axis(axes, epochs)
    if metric == "loss":
        _loss_scale(axes, [v for v in train + val if v is not None])
    else:
        accuracy_limits(axes, [v for v in train + val if v is not None])
    axes.grid(True, axis="y", color="0.88", linewidth=0.6)
    axes.set_axisbelow(True)
    _name_phases(axes, history)


def save_curves(
    history: Sequence[Epoch], path: Path, title: str, kept_epochs: Sequence[int] = ()
) -> None:
    """Draw `curves_figure` into a PNG file at `path`, atomically."""
    figure = curves_figure(history, title, kept_epochs)
    with rundir.atomic_path(path, suffix=".png") as temporary:
        figure.savefig(str(temporary), format="png")


def write_run_curves(run_dir: Path, console: Any | None = None) -> Path | None:
    """Draw `run_dir/curves.png` from its history; a failure is a warning, never an error.

    Called when training ends (also after a resume), where a picture must not fail a finished run.

    Returns:
        The PNG's path, or None when it could not be drawn (the warning says why).
    """
    path = run_dir / rundir.CURVES
    try:
        history = load_history(run_dir / rundir.HISTORY)
        save_curves(history, path, _run_title(run_dir, history), _kept_epochs(run_dir))
    except Exception as error:  # noqa: BLE001 - a picture never fails a finished training
        line = f"could not draw {path} ({type(error).__name__}: {error}); the run is complete"
        if console is not None:
            console.print(f"[yellow]warning[/]: {line}", highlight=False)
        else:
            print(f"warning: {line}", file=sys.stderr)
        return None
    return path


def _epoch(row: dict[str, str]) -> Epoch:
    return Epoch(
        epoch=int(row["epoch"]),
        phase=row["phase"] or "",
        loss=_number(row["loss"]),
        accuracy=_number(row["accuracy"]),
        val_loss=_number(row["val_loss"]),
        val_accuracy=_number(row["val_accuracy"]),
        learning_rate=_number(row["learning_rate"]),
        seconds=_number(row["seconds"]),
    )


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _phases(history: Sequence[Epoch]) -> list[tuple[str, int, int]]:
    """(name, first epoch, last epoch) of each run of consecutive epochs in one phase."""
    spans: list[tuple[str, int, int]] = []
    for row in history:
        if spans and spans[-1][0] == row.phase:
            spans[-1] = (row.phase, spans[-1][1], row.epoch)
        else:
            spans.append((row.phase, row.epoch, row.epoch))
    return spans


def _shade_phases(axes: Any, history: Sequence[Epoch]) -> None:
    spans = _phases(history)
    for index, (_, first, last) in enumerate(spans):
        if index % 2 == 1:
            axes.axvspan(first - 0.5, last + 0.5, color=SPAN_SHADE, zorder=0, linewidth=0)
        if index > 0:
            axes.axvline(first - 0.5, color="0.45", linewidth=1.0, linestyle=":", zorder=1)


def _name_phases(axes: Any, history: Sequence[Epoch]) -> None:
    """Each phase's name above its span; one too long for its span is written down inside it."""
    spans = _phases(history)
    if len(spans) == 1 and not spans[0][0]:
        return
    left, right = axes.get_xlim()
    width_inches = axes.get_position().width * axes.figure.get_figwidth()
    inches_per_epoch = width_inches / max(right - left, 1e-9)
    for name, first, last in spans:
        label = _shorten(name, 28)
        fits = len(label) * PHASE_FONT * 0.6 / 72 < (last - first + 1) * inches_per_epoch * 0.92
        axes.text(
            (first + last) / 2,
            1.01 if fits else 0.97,
            label,
            transform=axes.get_xaxis_transform(),
            ha="center",
            va="bottom" if fits else "top",
            fontsize=PHASE_FONT,
            color="0.25",
            rotation=0 if fits else 90,
            clip_on=False,
            zorder=2,  # under the lines: a name never hides a point
        )


def draw_line(
    axes: Any,
    epochs: Sequence[int],
    values: Sequence[float | None],
    label: str,
    color: str,
    style: str,
    marker: str | None,
) -> None:
    points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
    axes.plot(
        [e for e, _ in points],
        [v for _, v in points],
        style,
        color=color,
        label=label,
        linewidth=1.6,
        marker=marker,
        markersize=4,
        zorder=3,
    )


def epoch_axis(axes: Any, epochs: Sequence[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    first, last = min(epochs), max(epochs)
    axes.set_xlim(first - 0.5, last + 0.5)
    if last - first < 12:
        axes.set_xticks(range(first, last + 1))
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))


def _loss_scale(axes: Any, values: Sequence[float]) -> None:
    positive = [value for value in values if value > 0]
    if positive and len(positive) == len(values) and max(positive) / min(positive) > LOG_LOSS_RATIO:
        axes.set_yscale("log")
        axes.set_ylabel("loss (log scale)")


def accuracy_limits(axes: Any, values: Sequence[float]) -> None:
    """Autoscaled, but never past 0 and 1, and never a sliver narrower than 0.1."""
    if not values:
        return
    low, high = min(values), max(values)
    pad = max((high - low) * 0.08, 0.02)
    bottom, top = max(low - pad, 0.0), min(high + pad, 1.0)
    if top - bottom < 0.1:
        middle = (top + bottom) / 2
        bottom, top = max(middle - 0.05, 0.0), min(middle + 0.05, 1.0)
        bottom, top = (top - 0.1, top) if top == 1.0 else (bottom, bottom + 0.1)
    margin = (top - bottom) * 0.04  # room for a marker (and its ring) at exactly 0 or 1
    axes.set_ylim(bottom - margin, top + margin)


def _run_title(run_dir: Path, history: Sequence[Epoch]) -> str:
    """The run's name, and the epoch model.keras holds (runs before `kept`: the best one)."""
    kept = _metrics(run_dir).get("kept")
    if isinstance(kept, dict) and kept.get("epoch") is not None:
        value = kept.get("value")
        score = f", {kept.get('monitor')} {value:.4g}" if isinstance(value, int | float) else ""
        return f"{run_dir.name}: model.keras is epoch {kept['epoch']} ({kept.get('phase')}{score})"
    for metric, pick, label in (
        ("val_accuracy", max, "best validation accuracy"),
        ("val_loss", min, "lowest validation loss"),
    ):
        scored = [row for row in history if getattr(row, metric) is not None]
        if scored:
            best = pick(scored, key=lambda row: getattr(row, metric))
            return f"{run_dir.name}: {label} {getattr(best, metric):.4g} (epoch {best.epoch})"
    return run_dir.name


def _kept_epochs(run_dir: Path) -> list[int]:
    """The epoch model.keras holds (metrics.json's `kept`); for a run written before it, each
    phase's restored best epoch; [] when neither is there."""
    metrics = _metrics(run_dir)
    try:
        if isinstance(metrics.get("kept"), dict):
            epoch = metrics["kept"].get("epoch")
            return [] if epoch is None else [int(epoch)]
        phases = metrics["training"]["phases"]
        return [int(phase["best_epoch"]) for phase in phases if phase.get("best_epoch")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def _metrics(run_dir: Path) -> dict[str, Any]:
    try:
        metrics = files.read_json(run_dir / rundir.METRICS)
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _shorten(name: str, limit: int) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
