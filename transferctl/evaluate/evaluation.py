"""The evaluation stage: a finished run and held-out images in, metrics and files out.

`evaluate(run_dir)` reads the run's own held-out split or another folder (`target`), runs
`model.keras` over it a batch at a time (`metrics`), and writes `RUN_DIR/eval/<split>/`
(`results`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferctl.errors import UserError
from transferctl.evaluate import results
from transferctl.evaluate import target as targets
from transferctl.evaluate.metrics import (
    DecodeFailed,
    Progress,
    collect_predictions,
    compute_metrics,
    most_confused,
    most_confused_pairs,
    top_losses,
)
from transferctl.model import tta
from transferctl.rundir import layout as rundir
from transferctl.rundir.model_file import load_model_file
from transferctl.rundir.reading import RunFiles, open_run, read_labels


@dataclass
class Evaluation:
    """What `evaluate` wrote and found."""

    output_dir: Path
    name: str  # the folder under eval/: the split, or data-<folder> for --data
    source: str  # in words: which images were evaluated
    class_names: list[str]
    metrics: dict[str, Any]
    confusion: np.ndarray | None  # None above results.CONFUSION_MATRIX_MAX_CLASSES classes
    replaced: bool  # earlier results in output_dir were replaced
    notes: list[str] = field(default_factory=list)
    top_losses: list[dict[str, Any]] = field(default_factory=list)
    predicted: np.ndarray | None = None  # class index per image
    labels: np.ndarray | None = None  # true class index per image

    def worst_classes(self, count: int = 5) -> list[tuple[str, dict[str, float]]]:
        """The classes with the lowest F1 (ties: lowest recall), among those with images."""
        present = [
            (name, scores)
            for name, scores in self.metrics["per_class"].items()
            if scores["support"] > 0
        ]
        present.sort(key=lambda item: (item[1]["f1"], item[1]["recall"], item[0]))
        return present[:count]

    def most_confused(self, count: int = 5) -> list[tuple[str, str, int]]:
        """(true class, predicted class, images) for the most frequent mistakes."""
        if self.confusion is not None:
            return most_confused(self.confusion, self.class_names, count)
        assert self.labels is not None and self.predicted is not None
        return most_confused_pairs(self.labels, self.predicted, self.class_names, count)


def evaluate(
    run_dir: Path,
    *,
    split: str | None = None,
    data: Path | None = None,
    progress: Progress | None = None,
    test_time_augmentation: bool = False,
) -> Evaluation:
    """Evaluate a finished run on held-out images; write `RUN_DIR/eval/<split>/`.

    Args:
        run_dir: a run directory made by `finetune`.
        split: `test` or `val`. Defaults to `test` when the run has a test split, else `val`.
            With `data`, picks the sub-folder of a folder laid out as train/ val/ test/.
        data: another folder with one sub-folder per class of the run (the names in
            labels.txt); all its images are evaluated. Defaults to the run's own data.
        progress: called after each batch with (images done, images in all).
        test_time_augmentation: average each image's probabilities with its mirror image's
            (`model/tta.py`); metrics.json's `tta` records it. Defaults to `False`.
    """
    if split is not None and split not in targets.PREFERRED:
        raise UserError("--split", f"expected one of {', '.join(targets.PREFERRED)}; got {split!r}")
    run = open_run(run_dir, verb="evaluate")
    class_names = read_labels(run.labels)
    config = targets.load_run_config(run, other_data=data is not None)
    if data is None:
        target = targets.run_split(run, config, class_names, split)
    else:
        target = targets.other_folder(data, config, class_names, split)
    notes = targets.count_notes(run, target)
    flip_note = tta.flip_note(config.data.augment.flip) if test_time_augmentation else None
    notes += [flip_note] if flip_note is not None else []

    labels, probabilities = _predict(run, target, class_names, progress, test_time_augmentation)
    predicted = probabilities.argmax(axis=1)
    confusion = results.confusion_counts(labels, predicted, len(class_names))
    if confusion is None:
        notes.append(results.too_many_classes(len(class_names)))
    metrics = {
        "split": target.name,
        "data": str(target.data_path) if target.data_path is not None else None,
        **compute_metrics(labels, probabilities, class_names),
        "tta": tta.record(test_time_augmentation),
    }
    output_dir = run.path / rundir.EVAL / target.name
    replaced = (output_dir / rundir.METRICS).exists()
    identifiers = targets.identifiers(target.examples)
    results.write_results(
        output_dir, metrics, confusion, class_names, identifiers, labels, probabilities
    )
    return Evaluation(
        output_dir=output_dir,
        name=target.name,
        source=target.source,
        class_names=class_names,
        metrics=metrics,
        confusion=confusion,
        replaced=replaced,
        notes=notes,
        top_losses=top_losses(identifiers, labels, probabilities, class_names),
        predicted=predicted,
        labels=labels,
    )


def _predict(
    run: RunFiles,
    target: targets.Target,
    class_names: list[str],
    progress: Progress | None,
    test_time_augmentation: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The run's model over the target's images (and their views, with
    `test_time_augmentation`): true labels and probabilities."""
    import transferctl.model.preprocess  # noqa: F401 - registers BackbonePreprocess (0.1 runs)

    model = load_model_file(run.model, check_as=str(run.model))
    targets.check_model(model, run, target, class_names)
    predictor = tta.Averaged(model) if test_time_augmentation else model
    try:
        return collect_predictions(predictor, target.dataset, len(target.examples), progress)
    except DecodeFailed as failure:
        raise targets.unreadable_file(target, failure.first_example) from None
