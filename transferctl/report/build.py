"""`transferctl report`: the run's model over its data once, then one page and its numbers.

`write_report` writes RUN_DIR/report/: index.html (self-contained: pictures inlined, no script,
nothing loaded), report.json (every number on the page, and some more), label_issues.csv (the
training images the cross-validated probe suspects, most suspect first); and
RUN_DIR/calibration.json, the temperature `predict` and the exports apply.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferctl.evaluate.metrics import compute_metrics, most_confused_pairs, top_losses
from transferctl.inspect.compare import load_run
from transferctl.inspect.facts import run_facts
from transferctl.model import temperature as temperatures
from transferctl.report import calibration, collect, label_issues, page, pictures
from transferctl.rundir import layout as rundir

REPORT = "report"
LABEL_ISSUES = "label_issues.csv"
GALLERY = 24  # images per gallery
PAGE_CLASSES = 100  # per-class rows on the page (all of them in report.json)
CONFUSED_PAIRS = 10


@dataclass
class Report:
    folder: Path
    index: Path
    numbers: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def write_report(
    run_dir: Path, split: str | None = None, data: Path | None = None, say: collect.Say = print
) -> Report:
    found = collect.collect(run_dir, split, data, say)
    held, names, notes = found.held_out, found.class_names, list(found.notes)
    metrics = compute_metrics(held.labels, held.probabilities, names)
    predicted = held.probabilities.argmax(axis=1)
    calibrated = _calibration(found, notes)
    say("drawing the page")
    matrix_picture, matrix_classes = pictures.confusion_matrix(held.labels, predicted, names)
    if len(matrix_classes) < len(names):
        notes.append(
            f"the confusion matrix shows the {len(matrix_classes)} classes with the most "
            f"mistakes of {len(names)}"
        )
    per_class = _per_class(metrics, notes)
    mistakes = _mistakes(held, names)
    issues, issue_rows = _label_issues(found, say)
    numbers = {
        "run": str(found.run.path),
        "split": {"name": held.name, "source": held.source},
        "metrics": metrics,
        "most_confused": [
            {"true": true, "predicted": guess, "images": count}
            for true, guess, count in most_confused_pairs(
                held.labels, predicted, names, CONFUSED_PAIRS
            )
        ],
        "worst_mistakes": [_without_picture(item) for item in mistakes],
        "calibration": calibrated.to_json(),
        "label_issues": issues,
        "notes": notes,
    }
    context = {
        "title": found.run.path.name,
        "facts": run_facts(load_run(found.run.path)),
        "curves": pictures.inline_file(found.run.path / rundir.CURVES),
        "numbers": numbers,
        "per_class": per_class,
        "matrix": matrix_picture,
        "mistakes": mistakes,
        "reliability": pictures.reliability_diagram(
            calibrated.before, calibrated.after, calibrated.temperature
        ),
        "suspects": [row for row in issue_rows[:GALLERY] if row["flagged"]],
    }
    return _write(found.run.path / REPORT, numbers, context, issue_rows)


def _write(
    folder: Path, numbers: dict[str, Any], context: dict[str, Any], issue_rows: list[dict]
) -> Report:
    """report/: label_issues.csv (or none, when not looked for), report.json, index.html."""
    folder.mkdir(exist_ok=True)
    issues_file = folder / LABEL_ISSUES
    if numbers["label_issues"]["looked_for"]:
        rundir.write_text(issues_file, _csv(issue_rows))
    else:
        issues_file.unlink(missing_ok=True)  # an earlier report's, of data no longer at hand
    rundir.write_json(folder / "report.json", numbers)
    index = folder / "index.html"
    rundir.write_text(index, page.render(context))
    return Report(folder, index, numbers, numbers["notes"])


def _calibration(found: collect.Collected, notes: list[str]) -> calibration.Calibration:
    """The temperature fitted on the validation split, measured on the held-out one, and
    written to RUN_DIR/calibration.json for predict and the exports."""
    held, fit_on = found.held_out, found.validation
    calibrated = calibration.calibrate(
        held.name,
        held.labels,
        held.probabilities,
        None if fit_on is None else (fit_on.labels, fit_on.probabilities),
    )
    if fit_on is held:
        notes.append("the temperature was fitted and measured on the same (val) split")
    if calibrated.fitted_on is not None:
        temperatures.write(
            found.run.path,
            {
                "temperature": calibrated.temperature,
                "fitted_on": calibrated.fitted_on,
                "ece_before": calibrated.before["ece"],
                "ece_after": calibrated.after["ece"],
                "measured_on": held.name,
                "written_by": "transferctl report",
            },
        )
    return calibrated


def _per_class(metrics: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """The page's per-class rows: lowest F1 first, at most `PAGE_CLASSES`."""
    rows = sorted(
        ({"class": name, **scores} for name, scores in metrics["per_class"].items()),
        key=lambda row: (row["f1"], row["recall"], row["class"]),
    )
    if len(rows) > PAGE_CLASSES:
        notes.append(
            f"the page lists the {PAGE_CLASSES} classes with the lowest F1 of {len(rows)}; "
            "report.json has them all"
        )
    return rows[:PAGE_CLASSES]


def _mistakes(held: collect.Split, names: list[str]) -> list[dict[str, Any]]:
    """The top losses, each with its picture."""
    mistakes = top_losses(held.identifiers, held.labels, held.probabilities, names, GALLERY)
    positions = {identifier: index for index, identifier in enumerate(held.identifiers)}
    for item in mistakes:
        item["picture"] = pictures.thumbnail(held.examples, positions[item["image"]])
    return mistakes


def _without_picture(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "picture"}


def _label_issues(found: collect.Collected, say: collect.Say) -> tuple[dict[str, Any], list[dict]]:
    train = found.train
    if train is None or train.features is None or found.config is None:
        return {"looked_for": False}, []
    say(f"looking for label errors among {len(train.labels)} training images")
    result = label_issues.find(
        train.features, train.labels, len(found.class_names), found.config.seed
    )
    rows = []
    for rank, index in enumerate(result.order, start=1):
        rows.append(
            {
                "rank": rank,
                "path": train.identifiers[index],
                "given_label": found.class_names[int(train.labels[index])],
                "suggested_label": found.class_names[int(result.suggested[index])],
                "score": round(float(result.score[index]), 6),
                "flagged": bool(result.flagged[index]),
            }
        )
    flagged = rows[: int(result.flagged.sum())]
    for row, index in zip(flagged[:GALLERY], result.order, strict=False):
        row["picture"] = pictures.thumbnail(train.examples, int(index))
    summary = {
        "looked_for": True,
        "method": f"{result.probe} on the head's input features, cleanlab's find_label_issues",
        "training_images": int(len(train.labels)),
        "flagged": int(result.flagged.sum()),
        "probe_accuracy": result.probe_accuracy,
        "csv": LABEL_ISSUES,
        "top": [_without_picture(row) for row in flagged[:GALLERY]],
    }
    return summary, rows


COLUMNS = ("rank", "path", "given_label", "suggested_label", "score", "flagged")


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
