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


def comparison_table(comparison: Comparison, shown: Sequence[int] | None = None) -> Table:
    """Runs across (those at `shown` indices; all by default); the config keys that differ,
    then status, metrics, epochs, seconds down. The best value is chosen over all runs."""
    runs = comparison.runs
    shown = range(len(runs)) if shown is None else shown
    title = f"{len(runs)} runs" + (f" ({len(shown)} shown here)" if len(shown) < len(runs) else "")
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for index in shown:
        table.add_column(escape(runs[index].label), justify="right", overflow="fold")
    for row in _rows(comparison):
        if row is None:
            table.add_section()
        else:
            table.add_row(row[0], *(row[1][index] for index in shown))
    return table


def _rows(comparison: Comparison) -> list[tuple[str, list[str]] | None]:
    """The table's rows, a cell per run; None between the config and the results."""
    runs = comparison.runs
    rows: list[tuple[str, list[str]] | None] = [
        (escape(key), [escape(_config_value(value)) for value in values])
        for key, values in comparison.differences.items()
    ] or [("config", ["same"] * len(runs))]
    rows.append(None)
    kinds = {run.kind for run in runs}
    if len(kinds) > 1:
        rows.append(("kind", [run.kind for run in runs]))
    rows.append(("status", [_status(run) for run in runs]))
    for split in ("val", "test"):
        scores = [getattr(run, split) for run in runs]
        if not any(scores) and split == "test":
            continue
        if kinds != {rundir.PRETRAIN}:
            rows.append(
                (f"{split} accuracy", _best(runs, [s.get("accuracy") for s in scores], max))
            )
            rows.append((f"{split} loss", _best(runs, [s.get("loss") for s in scores], min)))
        if rundir.PRETRAIN in kinds:
            mse = [s.get("mse") for s in scores]
            rows.append((f"{split} reconstruction mse", _best(runs, mse, min)))
    if any(not run.finished for run in runs):
        rows.append(("last val accuracy", [_number(run.last_val_accuracy()) for run in runs]))
    rows.append(("epochs", [str(run.epochs) for run in runs]))
    rows.append(("seconds", [f"{run.seconds:.1f}" for run in runs]))
    for name in comparison.baseline_names():
        for split in ("val", "test"):
            values = [run.baselines.get(name, {}).get(split) for run in runs]
            if any(value is not None for value in values):
                rows.append((escape(f"{name} {split} accuracy"), _best(runs, values, max)))
    return rows


def _print_table(comparison: Comparison) -> None:
    """On a terminal: as many runs side by side as fit its width, the rest in more tables below
    (never columns squeezed to a character). In a file or a pipe: one table, whole."""
    console = Console(highlight=False)
    table = comparison_table(comparison)
    if not console.is_terminal:
        width = Measurement.get(console, console.options.update_width(10_000), table).maximum
        Console(highlight=False, width=max(console.width, width)).print(table)
        return
    count = len(comparison.runs)
    per_table = count
    while per_table > 1:
        options = console.options.update_width(10_000)  # each table's natural width
        widest = max(
            Measurement.get(console, options, comparison_table(comparison, shown)).maximum
            for shown in _chunks(count, per_table)
        )
        if widest <= console.width:
            break
        per_table -= 1
    for shown in _chunks(count, per_table):
        console.print(comparison_table(comparison, shown))


def _chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


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
