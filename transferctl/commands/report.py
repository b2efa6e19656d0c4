"""`transferctl report RUN_DIR`: writes RUN_DIR/report/; the page's path is the last line."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from transferctl.report import Report, write_report


def run(run_dir: Path, split: str | None, data: Path | None, open_page: bool) -> None:
    notices = Console(stderr=True, soft_wrap=True, highlight=False)
    result = write_report(
        run_dir, split, data, say=lambda line: notices.print(f"report: {escape(line)}")
    )
    summarise(notices, result)
    typer.echo(str(result.index))
    if open_page and not webbrowser.open(result.index.resolve().as_uri()):
        notices.print("[yellow]note:[/] no web browser to open it with")


def summarise(console: Console, result: Report) -> None:
    """A few lines on stderr: accuracy, calibration, label errors, notes."""
    numbers = result.numbers
    metrics, calibration = numbers["metrics"], numbers["calibration"]
    console.print(
        f"{numbers['split']['name']}: accuracy {metrics['accuracy']:.4f}, macro F1 "
        f"{metrics['macro']['f1']:.4f}; ECE {calibration['ece_before']:.4f} as trained, "
        f"{calibration['ece_after']:.4f} at temperature {calibration['temperature']:.3g}"
    )
    issues = numbers["label_issues"]
    if issues.get("looked_for"):
        console.print(
            f"suspected label errors: {issues['flagged']} of {issues['training_images']} "
            f"training images ({escape(str(result.folder / issues['csv']))})"
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
