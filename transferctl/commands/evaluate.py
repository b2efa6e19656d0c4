"""`transferctl evaluate RUN_DIR`: metrics on held-out data; the results folder is the last line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferctl.evaluate import Evaluation, evaluate


def run(run_dir: Path, split: str | None, data: Path | None, tta: bool = False) -> None:
    notices = Console(stderr=True, soft_wrap=True, highlight=False)
    with _ProgressBar(notices) as progress:
        result = evaluate(
            run_dir, split=split, data=data, progress=progress, test_time_augmentation=tta
        )
    for note in result.notes:
        notices.print(f"[yellow]note:[/] {note}")
    _print_summary(Console(highlight=False), result)
    if result.replaced:
        notices.print(f"replaced the earlier results in {result.output_dir}")
    typer.echo(str(result.output_dir))


def _print_summary(console: Console, result: Evaluation) -> None:
    metrics = result.metrics
    overall = Table(title=escape(f"{result.name}: {result.source}"), title_justify="left")
    overall.add_column("metric")
    overall.add_column("value", justify="right")
    overall.add_row("images", str(metrics["num_examples"]))
    if metrics.get("tta"):
        overall.add_row("test-time augmentation", " + ".join(metrics["tta"]["views"]))
    overall.add_row("accuracy", f"{metrics['accuracy']:.4f}")
    if "top_5_accuracy" in metrics:
        overall.add_row("top-5 accuracy", f"{metrics['top_5_accuracy']:.4f}")
    overall.add_row("loss", f"{metrics['loss']:.4f}")
    for average in ("macro", "weighted"):
        scores = metrics[average]
        overall.add_row(
            f"{average} precision / recall / F1",
            f"{scores['precision']:.4f} / {scores['recall']:.4f} / {scores['f1']:.4f}",
        )
    console.print(overall)

    worst = Table(title="worst classes (lowest F1)", title_justify="left")
    for column in ("class", "precision", "recall", "F1", "images"):
        worst.add_column(column, justify="left" if column == "class" else "right")
    for name, scores in result.worst_classes():
        worst.add_row(
            escape(name),
            f"{scores['precision']:.3f}",
            f"{scores['recall']:.3f}",
            f"{scores['f1']:.3f}",
            str(scores["support"]),
        )
    console.print(worst)

    pairs = result.most_confused()
    if pairs:
        confused = Table(title="most confused (true -> predicted)", title_justify="left")
        confused.add_column("true class")
        confused.add_column("predicted as")
        confused.add_column("images", justify="right")
        for true, predicted, count in pairs:
            confused.add_row(escape(true), escape(predicted), str(count))
        console.print(confused)
    else:
        console.print("no mistakes")

    if result.top_losses:
        losses = Table(title="top losses (surest mistakes)", title_justify="left")
        for column in ("image", "true", "predicted", "confidence", "loss"):
            losses.add_column(column, justify="left" if column == "image" else "right")
        for item in result.top_losses:
            losses.add_row(
                escape(item["image"]),
                escape(item["true"]),
                escape(item["predicted"]),
                f"{item['confidence']:.3f}",
                f"{item['loss']:.3f}",
            )
        console.print(losses)


class _ProgressBar:
    """A transient progress bar on a terminal's stderr; nothing when stderr is redirected."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _ProgressBar:
        if sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(console=self.console, transient=True)
            self.bar.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            return
        if self.task is None:
            self.task = self.bar.add_task("evaluating", total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
