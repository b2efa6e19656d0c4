"""`transferctl compare RUN_DIR RUN_DIR...`: one table, or one JSON document; never TensorFlow.

The reading and diffing is `transferctl.inspect.compare.compare_runs`; this module lays out
its result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from transferctl.errors import UserError
from transferctl.inspect.compare import Comparison, RunSummary, compare_runs
from transferctl.rundir import layout as rundir

MISSING = "-"


def run(run_dirs: Sequence[Path], plot: Path | None, as_json: bool) -> None:
    if plot is not None:
        _check_plot_path(plot)
    comparison = compare_runs(run_dirs)
    if as_json:
        typer.echo(json.dumps(comparison.to_json(), indent=2, default=str))
    else:
        _print_table(comparison)
    if plot is not None:
        from transferctl.rundir.overlay import save_overlay

        curves = [
            (_legend(run, index, comparison.differences), run.history)
            for index, run in enumerate(comparison.runs)
        ]
        save_overlay(curves, plot, f"validation accuracy, {len(curves)} runs")
        Console(stderr=True, highlight=False).print(f"wrote {escape(str(plot))}")


def comparison_table(comparison: Comparison) -> Table:
    """Runs across; the config keys that differ, then status, metrics, epochs, seconds down."""
    runs = comparison.runs
    table = Table(title=f"{len(runs)} runs", title_justify="left")
    table.add_column("")
    for run in runs:
        table.add_column(escape(run.label), justify="right")
    for key, values in comparison.differences.items():
        table.add_row(escape(key), *(escape(_config_value(value)) for value in values))
    if not comparison.differences:
        table.add_row("config", *(["same"] * len(runs)))
    table.add_section()
    if len({run.kind for run in runs}) > 1:
        table.add_row("kind", *(run.kind for run in runs))
    table.add_row("status", *(_status(run) for run in runs))
    kinds = {run.kind for run in runs}
    for split in ("val", "test"):
        scores = [getattr(run, split) for run in runs]
        if not any(scores) and split == "test":
            continue
        if kinds != {rundir.PRETRAIN}:
            accuracies = [s.get("accuracy") for s in scores]
            table.add_row(f"{split} accuracy", *_best(runs, accuracies, max))
            table.add_row(f"{split} loss", *_best(runs, [s.get("loss") for s in scores], min))
        if rundir.PRETRAIN in kinds:
            mse = [s.get("mse") for s in scores]
            table.add_row(f"{split} reconstruction mse", *_best(runs, mse, min))
    if any(not run.finished for run in runs):
        table.add_row("last val accuracy", *(_number(run.last_val_accuracy()) for run in runs))
    table.add_row("epochs", *(str(run.epochs) for run in runs))
    table.add_row("seconds", *(f"{run.seconds:.1f}" for run in runs))
    for name in comparison.baseline_names():
        for split in ("val", "test"):
            values = [run.baselines.get(name, {}).get(split) for run in runs]
            if any(value is not None for value in values):
                row = _best(runs, values, max)
                table.add_row(escape(f"{name} {split} accuracy"), *row)
    return table


def _print_table(comparison: Comparison) -> None:
    console = Console(highlight=False)
    table = comparison_table(comparison)
    if not console.is_terminal:
        # in a file or a pipe, a wide table stays whole instead of wrapping at 80 columns
        width = Measurement.get(console, console.options, table).maximum
        console = Console(highlight=False, width=max(console.width, width))
    console.print(table)


def _best(
    runs: Sequence[RunSummary],
    values: Sequence[float | None],
    pick: Callable[[list[float]], float],
) -> list[str]:
    """Formatted cells; the best finished value in bold when there is something to choose."""
    scored = [v for run, v in zip(runs, values, strict=True) if v is not None and run.finished]
    best = pick(scored) if len(scored) > 1 else None
    return [
        f"[bold]{_number(value)}[/]" if value is not None and value == best else _number(value)
        for value in values
    ]


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def _status(run: RunSummary) -> str:
    return "finished" if run.finished else "[yellow]unfinished[/]"


# at most this many differing config keys name a run in the plot's legend
LEGEND_KEYS = 3


def _legend(run: RunSummary, index: int, differences: dict[str, list[Any]]) -> str:
    """The run's name, then what tells it from the others: the config keys that differ (their
    last part, e.g. `learning_rate=0.001`); `(unfinished)` when it is."""
    keys = [key for key in differences if not key.endswith(".name") and key != "name"]
    told = ", ".join(
        f"{key.rsplit('.', 1)[-1]}={_config_value(differences[key][index])}"
        for key in keys[:LEGEND_KEYS]
    )
    label = f"{run.label}: {told}" if told else run.label
    return label if run.finished else f"{label} (unfinished)"


def _config_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _check_plot_path(plot: Path) -> None:
    if plot.suffix.lower() != ".png":
        raise UserError("--plot", f"expected a .png file; got {plot}", "name it FILE.png")
    if plot.is_dir():
        raise UserError("--plot", f"{plot} is a folder", "pass a file name ending in .png")
    rundir.check_writable(plot.parent if str(plot.parent) else Path("."), where="--plot")
