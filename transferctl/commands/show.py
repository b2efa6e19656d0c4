"""`transferctl show RUN_DIR` and `transferctl runs [RUNS_DIR]`: look at runs later; never
TensorFlow. The reading is `transferctl.inspect` (`compare.load_run`, `runs.list_runs`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from transferctl.inspect.compare import load_run
from transferctl.inspect.facts import run_facts
from transferctl.inspect.runs import Listed, list_runs, run_files, started
from transferctl.rundir import layout as rundir

MISSING = "-"


def show(run_dir: Path, as_json: bool) -> None:
    run = load_run(run_dir)
    if as_json:
        body = {**run.to_json(), "started": started(run.path), "files": dict(run_files(run.path))}
        typer.echo(json.dumps(body, indent=2, default=str))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in run_facts(run):
        table.add_row(escape(label), escape(value))
    _print(table)


def _print(table: Table) -> None:
    """On a terminal, at its width; in a file or a pipe, lines stay whole (no wrap at 80)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        options = console.options.update_width(10_000)
        width = Measurement.get(console, options, table).maximum
        console = Console(highlight=False, width=max(console.width, width))
    console.print(table)


def runs(folder: Path, as_json: bool) -> None:
    rows = list_runs(folder)
    if as_json:
        typer.echo(json.dumps([row.to_json() for row in rows], indent=2, default=str))
        return
    if not rows:
        Console(highlight=False).print(f"no runs in {escape(str(folder))}")
        return
    title = f"{len(rows)} runs in {escape(str(folder))}"
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0)
    )
    table.add_column("run", overflow="fold", min_width=16)
    for column in ("kind", "status", "started (UTC)"):
        table.add_column(column, no_wrap=True)
    for column in ("epochs", "val", "test"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row))
    if any(row.run is not None and row.run.kind == rundir.PRETRAIN for row in rows):
        table.caption = "val, test: accuracy; a pretrain run's, the reconstruction mse"
        table.caption_justify = "left"
    _print(table)


def _cells(row: Listed) -> list[str]:
    run = row.run
    if run is None:
        name, when = escape(row.path.name), row.started[5:16]
        return [name, MISSING, "[red]damaged[/]", when, MISSING, MISSING, MISSING]
    status = run.status if run.finished else f"[yellow]{run.status}[/]"
    return [
        escape(row.path.name),
        run.kind,
        status,
        row.started[5:16],
        str(run.epochs),
        _score(run.val),
        _score(run.test),
    ]


def _score(scores: dict[str, float]) -> str:
    """A split's headline: accuracy, or a pretrain run's reconstruction mse."""
    if "accuracy" in scores:
        return f"{scores['accuracy']:.4f}"
    if "mse" in scores:  # the caption says what a pretrain run's number is
        return f"{scores['mse']:.4f}"
    return MISSING
