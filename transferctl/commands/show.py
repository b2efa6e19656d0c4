"""`transferctl show RUN_DIR` and `transferctl runs [RUNS_DIR]`: look at runs later; never
TensorFlow. The reading is `transferctl.inspect` (`compare.load_run`, `runs.list_runs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from transferctl.inspect.compare import RunSummary, load_run
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
    for label, value in _facts(run):
        table.add_row(label, value)
    _print(table)


def _print(table: Table) -> None:
    """On a terminal, at its width; in a file or a pipe, lines stay whole (no wrap at 80)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        options = console.options.update_width(10_000)
        width = Measurement.get(console, options, table).maximum
        console = Console(highlight=False, width=max(console.width, width))
    console.print(table)


def _facts(run: RunSummary) -> list[tuple[str, str]]:
    """`show`'s rows: what the run is, what it trained, what it kept and reached, its files."""
    config = run.config
    size = config.get("data.image_size") or ["?", "?"]
    data = f"{config.get('data.source')}" + (
        f" {config['data.path']}" if config.get("data.path") else ""
    )
    rows = [
        ("run", escape(f"{run.path} ({run.kind}, {run.status})")),
        ("started", f"{started(run.path)} UTC"),
        ("data", escape(data)),
        (
            "model",
            escape(
                f"{config.get('model.backbone')} at {size[0]}x{size[1]}, weights "
                f"{config.get('model.weights')}"
            ),
        ),
    ]
    rows += [("phases", escape(line)) for line in _phases(config, run.kind)]
    rows.append(("epochs", f"{run.epochs} in {run.seconds:.1f} s"))
    if run.kept:
        value = run.kept.get("value")
        score = f", {run.kept.get('monitor')} {value:.4f}" if isinstance(value, float) else ""
        rows.append(
            (
                "kept",
                escape(
                    f"epoch {run.kept.get('epoch')} of phase "
                    f"{run.kept.get('phase')}{score} (model.keras)"
                ),
            )
        )
    for split in ("val", "test"):
        scores = getattr(run, split)
        if scores:
            rows.append((split, ", ".join(f"{key} {value:.4f}" for key, value in scores.items())))
    for name, scores in run.baselines.items():
        line = ", ".join(f"{split} accuracy {value:.4f}" for split, value in scores.items())
        rows.append((escape(name), line))
    files = ", ".join(f"{name} {_size(size)}" for name, size in run_files(run.path))
    rows.append(("files", escape(files)))
    return rows


def _phases(config: dict[str, Any], kind: str) -> list[str]:
    if kind == rundir.PRETRAIN:
        return [
            f"pretrain: {config.get('pretrain.epochs')} epochs at "
            f"{config.get('pretrain.learning_rate')}, objective {config.get('pretrain.objective')}"
        ]
    lines, index = [], 0
    while f"train.phases.{index}.epochs" in config:
        phase = f"train.phases.{index}"
        freeze = _value(config, f"{phase}.freeze") or _value(config, "model.freeze")
        lines.append(
            f"{config.get(f'{phase}.name')}: {config.get(f'{phase}.epochs')} epochs at "
            f"{config.get(f'{phase}.learning_rate')}, freeze {_plain(freeze)}"
        )
        index += 1
    return lines


def _value(config: dict[str, Any], key: str) -> Any:
    """A flattened config's value at `key`, a mapping put together again (`{until: NAME}`)."""
    if key in config:
        return config[key]
    inner = {name[len(key) + 1 :]: v for name, v in config.items() if name.startswith(key + ".")}
    return inner or None


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"


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
