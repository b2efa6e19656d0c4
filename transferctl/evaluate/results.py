"""The files of `RUN_DIR/eval/<split>/`: metrics.json, predictions.csv and the confusion matrix.

Each file is written atomically, so a second evaluation replaces them whole (docs/run-directory.md).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferctl.rundir import layout as rundir

CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
PREDICTIONS_CSV = "predictions.csv"
# The most classes for which the confusion matrix is written: 200 x 200 cells is a 5,000-pixel
# picture (legible to about 100, report.py) and a CSV of 40,000 counts; 5,000 classes would be a
# 25-million-cell matrix, a 200 MB CSV and a picture matplotlib cannot draw.
CONFUSION_MATRIX_MAX_CLASSES = 200


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray | None:
    """The classes x classes confusion matrix (rows: true class), or None above
    `CONFUSION_MATRIX_MAX_CLASSES` classes."""
    if classes > CONFUSION_MATRIX_MAX_CLASSES:
        return None
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predicted, labels=range(classes))


def too_many_classes(classes: int) -> str:
    """The note that says why no confusion matrix was written."""
    return (
        f"{classes:,} classes: no {CONFUSION_CSV} or {CONFUSION_PNG} (written up to "
        f"{CONFUSION_MATRIX_MAX_CLASSES} classes); {rundir.METRICS} has every class's scores"
    )


def write_results(
    output_dir: Path,
    metrics: dict[str, Any],
    confusion: np.ndarray | None,
    class_names: Sequence[str],
    identifiers: Sequence[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
) -> None:
    """The four files of `eval/<split>/`, each written atomically (a rerun replaces them).

    metrics.json comes first; without `confusion` (too many classes) the confusion-matrix CSV
    and picture are not written, and earlier ones are removed, so none contradicts the metrics.
    """
    from transferctl.evaluate.confusion import save_confusion_matrix

    output_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_json(output_dir / rundir.METRICS, metrics)
    _write_predictions(
        output_dir / PREDICTIONS_CSV, class_names, identifiers, labels, probabilities
    )
    if confusion is None:
        for name in (CONFUSION_CSV, CONFUSION_PNG):
            (output_dir / name).unlink(missing_ok=True)
        return
    with (
        rundir.atomic_path(output_dir / CONFUSION_CSV) as temporary,
        open(temporary, "w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, confusion, strict=True):
            writer.writerow([name, *(int(value) for value in row)])
    title = (
        f"{metrics['split']}: accuracy {metrics['accuracy']:.4f}, {metrics['num_examples']} images"
    )
    with rundir.atomic_path(output_dir / CONFUSION_PNG, suffix=".png") as temporary:
        save_confusion_matrix(confusion, class_names, temporary, title)


def _write_predictions(
    target: Path,
    class_names: Sequence[str],
    identifiers: Sequence[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
) -> None:
    """predictions.csv: one row per image, its true and predicted class and their probabilities."""
    predicted = probabilities.argmax(axis=1)
    with (
        rundir.atomic_path(target) as temporary,
        open(temporary, "w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(
            ["image", "true_label", "predicted_label", "confidence", "true_label_probability"]
        )
        for index, identifier in enumerate(identifiers):
            writer.writerow(
                [
                    identifier,
                    class_names[int(labels[index])],
                    class_names[int(predicted[index])],
                    f"{probabilities[index, predicted[index]]:.8g}",
                    f"{probabilities[index, labels[index]]:.8g}",
                ]
            )
