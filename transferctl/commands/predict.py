"""`transferctl predict MODEL IMAGE_OR_FOLDER...`: the top-k labels of each image.

A table on stdout, or one JSON object per line with `--json` (written as each batch finishes).
Unreadable files are named on stderr and skipped; the exit code is then 3 (`EXIT_SKIPPED`).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferctl.errors import EXIT_SKIPPED, UserError
from transferctl.model.tta import flip_note as tta_note
from transferctl.predict import (
    Prediction,
    Skipped,
    find_images,
    load_classifier,
    predict_images,
)


def run(
    target: Path,
    images: Sequence[Path],
    top_k: int,
    as_json: bool,
    unsafe: bool = False,
    tta: bool = False,
) -> None:
    if top_k < 1:
        raise UserError("--top-k", f"expected a whole number >= 1; got {top_k}", "use e.g. 3")
    unreadable: list[Skipped] = []  # folders that cannot be listed
    files = find_images(images, unreadable)  # before loading TensorFlow: a wrong path fails now
    notices = Console(stderr=True, soft_wrap=True, highlight=False)
    classifier = load_classifier(target, unsafe)
    notes = list(classifier.notes)
    if tta and (flip := tta_note(classifier.trained_flip)) is not None:
        notes.append(flip)
    for note in notes:
        notices.print(f"[yellow]note:[/] {escape(note)}")
    k = min(top_k, classifier.num_classes)

    rows: list[Prediction] = []
    skipped: list[Skipped] = []
    predictions = predict_images(classifier, files, k, test_time_augmentation=tta)
    for item in itertools.chain(unreadable, predictions):
        if isinstance(item, Skipped):
            skipped.append(item)
            notices.print(f"skipped {item.path}: {item.reason}", markup=False)
        elif as_json:
            sys.stdout.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            rows.append(item)

    predicted = len(files) + len(unreadable) - len(skipped)
    if predicted == 0:
        raise UserError(
            "IMAGE_OR_FOLDER",
            f"none of the {len(files) + len(unreadable)} file(s) is a readable image",
            "pass JPEG, PNG, BMP, GIF, WebP or TIFF images",
        )
    if not as_json:
        _print_table(_stdout_console(rows, k), rows, k)
    if skipped:
        notices.print(
            f"{len(skipped)} of {len(files) + len(unreadable)} file(s) could not be read and "
            f"were skipped (exit code {EXIT_SKIPPED})"
        )
        raise typer.Exit(EXIT_SKIPPED)


def _stdout_console(rows: Sequence[Prediction], k: int) -> Console:
    """On a terminal, its width; redirected, wide enough that no path is folded."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    longest = max((len(str(row.path)) for row in rows), default=0)
    return Console(highlight=False, width=max(80, longest + 24 * k + 8))


def _print_table(console: Console, rows: Sequence[Prediction], k: int) -> None:
    table = Table(title=f"top {k}" if k > 1 else "top 1", title_justify="left")
    table.add_column("image", overflow="fold")
    for rank in range(1, k + 1):
        table.add_column(f"#{rank}")
    for prediction in rows:
        table.add_row(
            escape(str(prediction.path)),
            *(
                f"{escape(label)} {probability:.1%}"
                for label, probability in zip(
                    prediction.labels, prediction.probabilities, strict=True
                )
            ),
        )
    console.print(table)
