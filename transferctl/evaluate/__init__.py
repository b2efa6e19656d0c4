"""The evaluation stage: a finished run and held-out images in, metrics and files out.

`evaluate(run_dir)` rebuilds the run's split from its resolved config (same seed, same split),
or reads another folder with the same classes (`data=`), runs `model.keras` over it a batch at a
time, and keeps only each image's true label and class probabilities, never the images. Every
metric is then computed once, from those predictions, with scikit-learn. The results go to
`RUN_DIR/eval/<split>/` (docs/run-directory.md): `metrics.json`, `confusion_matrix.csv`,
`confusion_matrix.png` and `predictions.csv`; a second evaluation replaces them atomically.

Example:
    result = evaluate(Path("runs/flowers-20261122-101500"), split="val")
    print(result.metrics["accuracy"], result.output_dir)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.data.examples import Examples
from transferctl.errors import ConfigErrors, UserError, quote
from transferctl.labels import HELD_OUT
from transferctl.predict import (
    RunFiles,
    decoder_messages_dropped,
    load_keras_model,
    open_run,
    read_labels,
)
from transferctl.rundir import layout as rundir

PREFERRED = HELD_OUT[::-1]  # evaluate's default: test when the data has it, else val

EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
PREDICTIONS_CSV = "predictions.csv"
# The most classes for which the confusion matrix is written: 200 x 200 cells is a 5,000-pixel
# picture (legible to about 100, report.py) and a CSV of 40,000 counts; 5,000 classes would be a
# 25-million-cell matrix, a 200 MB CSV and a picture matplotlib cannot draw.
CONFUSION_MATRIX_MAX_CLASSES = 200
NAME_CHARS = 100  # longest eval/ folder name made from a --data folder's name
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): how far Keras clips probabilities in its losses

# Called after each batch with (images done, images in all).
Progress = Callable[[int, int], None]


@dataclass
class Evaluation:
    """What `evaluate` wrote and found."""

    output_dir: Path
    name: str  # the folder under eval/: the split, or data-<folder> for --data
    source: str  # in words: which images were evaluated
    class_names: list[str]
    metrics: dict[str, Any]
    confusion: np.ndarray | None  # None above CONFUSION_MATRIX_MAX_CLASSES classes
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


@dataclass(frozen=True)
class _Target:
    """The images to evaluate: examples in order, how to batch them, and what to call them."""

    name: str
    source: str
    examples: Examples
    image_size: tuple[int, int]
    batch_size: int
    data_path: Path | None
    dataset: Any


def evaluate(
    run_dir: Path,
    *,
    split: str | None = None,
    data: Path | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Evaluate a finished run on held-out images; write `RUN_DIR/eval/<split>/`.

    Args:
        run_dir: a run directory made by `finetune`.
        split: `test` or `val`. Defaults to `test` when the run has a test split, else `val`.
            With `data`, picks the sub-folder of a folder laid out as train/ val/ test/.
        data: another folder with one sub-folder per class of the run (the names in
            labels.txt); all its images are evaluated. Defaults to the run's own data.
        progress: called after each batch with (images done, images in all).
    """
    if split is not None and split not in PREFERRED:
        raise UserError("--split", f"expected one of {', '.join(PREFERRED)}; got {split!r}")
    run = open_run(run_dir)
    class_names = read_labels(run.labels)
    config = _load_run_config(run, other_data=data is not None)
    if data is None:
        target = _run_split(run, config, class_names, split)
    else:
        target = _folder(data, config, class_names, split)
    notes = _count_notes(run, target)

    model = load_keras_model(run.model)
    _check_model(model, run, target, class_names)
    try:
        labels, probabilities = collect_predictions(
            model, target.dataset, len(target.examples), progress
        )
    except DecodeFailed as failure:
        raise _unreadable_file(target, failure.first_example) from None

    metrics = compute_metrics(labels, probabilities, class_names)
    confusion = None
    if len(class_names) <= CONFUSION_MATRIX_MAX_CLASSES:
        from sklearn.metrics import confusion_matrix

        confusion = confusion_matrix(
            labels, probabilities.argmax(axis=1), labels=range(len(class_names))
        )
    else:
        notes.append(
            f"{len(class_names):,} classes: no {CONFUSION_CSV} or {CONFUSION_PNG} (written up to "
            f"{CONFUSION_MATRIX_MAX_CLASSES} classes); {METRICS_FILE} has every class's scores"
        )
    metrics = {
        "split": target.name,
        "data": str(target.data_path) if target.data_path is not None else None,
        **metrics,
    }

    output_dir = run.path / EVAL_DIR / target.name
    replaced = (output_dir / METRICS_FILE).exists()
    identifiers = _identifiers(target.examples)
    write_results(output_dir, metrics, confusion, class_names, identifiers, labels, probabilities)
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
        predicted=probabilities.argmax(axis=1),
        labels=labels,
    )


# ----------------------------------------------------------------------------------------------
# Which images
# ----------------------------------------------------------------------------------------------


def _load_run_config(run: RunFiles, *, other_data: bool) -> Any:
    from transferctl.config.loader import load_config

    try:
        return load_config(run.config)
    except ConfigErrors as error:
        if not all(item.where == "data.path" for item in error.errors):
            raise
        if not other_data:
            raise UserError(
                "data.path",
                f"the run's training data is gone ({error.errors[0].what})",
                "restore the folder, or evaluate another folder with --data PATH",
            ) from None
    # The training folder has moved, but --data names the images: keep the rest of the run's
    # data section (image size, batch size) and let the source go.
    return load_config(run.config, ["data.source=digits", "data.path="])


def _run_split(run: RunFiles, config: Any, class_names: list[str], split: str | None) -> _Target:
    from transferctl.data import load_data

    bundle = load_data(config.data, config.seed)
    if bundle.class_names != class_names:
        missing, extra = _class_difference(class_names, bundle.class_names)
        raise UserError(
            "data.path",
            f"the run's data now has other classes than its {rundir.LABELS} (missing: "
            f"{missing}; extra: {extra})",
            "restore the training folder, or evaluate another folder with --data PATH",
        )
    available = [name for name in PREFERRED if bundle.has(name)]
    if split is None:
        if not available:
            raise UserError(
                "RUN_DIR",
                f"{run.path} has no held-out split (test_split and validation_split are 0)",
                "evaluate another folder with --data PATH",
            )
        split = available[0]
    elif not bundle.has(split):
        raise UserError(
            "--split",
            f"the run has no {split} split (its splits: {', '.join(['train', *available])})",
            f"use --split {available[0]}" if available else "evaluate a folder with --data PATH",
        )
    source = {
        "folder": f"the {split} split of {config.data.path}",
        "digits": f"the {split} split of scikit-learn's digits",
    }.get(config.data.source, f"the {split} split of {config.data.source}")
    return _Target(
        name=split,
        source=source,
        examples=bundle.examples[split],
        image_size=bundle.image_size,
        batch_size=bundle.batch_size,
        data_path=None,
        dataset=bundle.plain(split),
    )


def _folder(path: Path, config: Any, class_names: list[str], split: str | None) -> _Target:
    """Every image of another folder whose class sub-folders are the run's classes."""
    if not path.exists():
        raise UserError("--data", f"{path} not found", "pass a folder of class sub-folders")
    if not path.is_dir():
        raise UserError("--data", f"{path} is a file", "pass a folder of class sub-folders")
    path = path.resolve()
    has_splits = (path / "train").is_dir()
    if has_splits:
        present = [name for name in (*PREFERRED, "train") if (path / name).is_dir()]
        chosen = split or present[0]
        if chosen not in present:
            raise UserError(
                "--split",
                f"{path} has no {chosen}/ sub-folder; it has {', '.join(present)}",
                f"use --split {present[0]}" if present[0] in PREFERRED else "drop --split",
            )
        root = path / chosen
    else:
        if split is not None:
            raise UserError(
                "--split",
                f"{path} is not split into train/ val/ test/ sub-folders",
                "drop --split to evaluate all of its images",
            )
        chosen = None
        root = path
    _check_class_folders(root, class_names)

    from transferctl.data import pipeline, sources

    # the same audit as training: bad files are left out (and named), EXIF orientation kept
    try:
        scanned = sources.load_scanned_folder(root, "skip")
        folder_classes = scanned.class_names
    except UserError as error:
        if "class folder" not in error.what:
            raise UserError("--data", error.what, error.fix) from None
        folder_classes = []  # no class has a usable image: say which, below
    empty = sorted(set(class_names) - set(folder_classes))
    if empty:
        raise UserError(
            "--data",
            f"class folder(s) without a usable image: {', '.join(empty)}",
            "every class of the run needs at least one image",
        )
    examples = scanned.splits["train"]
    for skipped_path, reason in scanned.skipped:
        print(f"warning: --data: skipped {skipped_path}: {reason}", file=sys.stderr)
    # The folder's classes are sorted by name; map them onto the run's label indices.
    to_run_index = np.asarray([class_names.index(name) for name in folder_classes], np.int32)
    examples = dataclasses.replace(examples, labels=to_run_index[examples.labels])

    image_size = config.data.image_size
    batch_size = config.data.batch_size
    name = _safe_name(f"data-{path.name}" + (f"-{chosen}" if chosen else ""))
    return _Target(
        name=name,
        source=str(root),
        examples=examples,
        image_size=image_size,
        batch_size=batch_size,
        data_path=root,
        dataset=pipeline.make_dataset(examples, image_size, batch_size, len(class_names)),
    )


def _check_class_folders(root: Path, class_names: list[str]) -> None:
    try:
        entries = list(root.iterdir())
    except OSError as error:
        raise UserError(
            "--data", f"cannot read {quote(str(root))} ({error.strerror or error})"
        ) from None
    folders = sorted(
        entry.name for entry in entries if entry.is_dir() and not entry.name.startswith(".")
    )
    if not folders:
        raise UserError(
            "--data",
            f"{root} has no class sub-folders",
            f"put the images in one sub-folder per class: {', '.join(class_names)}",
        )
    if set(folders) != set(class_names):
        missing, extra = _class_difference(class_names, folders)
        raise UserError(
            "--data",
            f"{root} has other classes than the run's {rundir.LABELS} (missing: {missing}; "
            f"extra: {extra})",
            "give it exactly one sub-folder per class of the run",
        )


def _class_difference(expected: Sequence[str], found: Sequence[str]) -> tuple[str, str]:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    return ", ".join(missing) or "none", ", ".join(extra) or "none"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:NAME_CHARS] or "data"


def _count_notes(run: RunFiles, target: _Target) -> list[str]:
    """A warning when the rebuilt split is not the one training measured."""
    if target.data_path is not None or not (run.path / rundir.METRICS).is_file():
        return []
    try:
        trained = json.loads((run.path / rundir.METRICS).read_text(encoding="utf-8"))
        expected = int(trained[target.name]["num_examples"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if expected == len(target.examples):
        return []
    return [
        f"the {target.name} split has {len(target.examples)} images now but had {expected} "
        "when the run finished: the data changed since training, so results differ"
    ]


def _check_model(model: Any, run: RunFiles, target: _Target, class_names: list[str]) -> None:
    shape = tuple(model.input_shape)
    if tuple(shape[1:3]) != tuple(target.image_size):
        raise UserError(
            str(run.model),
            f"the model takes {shape[1]}x{shape[2]} images but the run's config says "
            f"data.image_size {list(target.image_size)}",
            "keep the config.yaml that was saved with this model",
        )
    classes = int(tuple(model.output_shape)[-1])
    if classes != len(class_names):
        raise UserError(
            str(run.model),
            f"the model has {classes} outputs but {rundir.LABELS} names {len(class_names)} classes",
            f"keep the {rundir.LABELS} that was saved with this model",
        )


def _identifiers(examples: Examples) -> list[str]:
    if examples.paths is not None:
        return [str(path) for path in examples.paths]
    return [str(index) for index in range(len(examples))]


# ----------------------------------------------------------------------------------------------
# Predictions and metrics
# ----------------------------------------------------------------------------------------------


def collect_predictions(
    model: Any, dataset: Any, total: int, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` over `dataset` (batches of images, one-hot labels) in order.

    Only the labels (int32 [N]) and probabilities (float32 [N, C]) are kept; each batch of
    images is dropped once predicted, so memory does not grow with the images' size or number
    beyond those two small arrays.
    """
    tf = runtime.tf()
    labels: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    done = 0
    batches = iter(dataset)
    while True:
        try:
            images, one_hot = next(batches)
        except StopIteration:
            break
        except tf.errors.InvalidArgumentError as error:
            raise DecodeFailed(done) from error
        batch = np.asarray(model.predict_on_batch(images), dtype=np.float32)
        probabilities.append(batch)
        labels.append(np.argmax(np.asarray(one_hot), axis=1).astype(np.int32))
        done += batch.shape[0]
        if progress is not None:
            progress(done, total)
    if not labels:
        raise UserError("data", "no images to evaluate", "check the split or folder")
    return np.concatenate(labels), np.concatenate(probabilities)


class DecodeFailed(Exception):
    """An image of the dataset could not be decoded, at or after example `first_example`."""

    def __init__(self, first_example: int) -> None:
        super().__init__(f"an image at or after example {first_example} cannot be decoded")
        self.first_example = first_example


def _unreadable_file(target: _Target, first_example: int) -> UserError:
    """Name the file that broke the input pipeline (it fails in the batch after the last one)."""
    where = "--data" if target.data_path is not None else "data.path"
    paths = target.examples.paths
    if paths is not None:
        tf = runtime.tf()
        for path in paths[first_example:]:
            try:
                with decoder_messages_dropped():
                    tf.io.decode_image(
                        tf.io.read_file(str(path)), channels=3, expand_animations=False
                    )
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
                reason = str(error.message).split("[Op:")[0].split("}}")[-1].strip()
                return UserError(
                    where,
                    f"cannot decode {path} ({reason or type(error).__name__})",
                    "remove or replace the file",
                )
    return UserError(
        where,
        f"an image at or after example {first_example} cannot be decoded",
        "check the images",
    )


def compute_metrics(
    labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """All the metrics of `metrics.json`, from true labels and predicted probabilities.

    Computed with scikit-learn. A class never predicted has precision 0, a class with no
    images recall 0 (and support 0). `loss` is the mean categorical cross-entropy, without the
    label smoothing training may have used. `top_5_accuracy` is there with more than 5 classes.

    Args:
        labels: int [N], class indices.
        probabilities: float [N, C], rows summing to 1.
        class_names: C names in index order.
    """
    from sklearn.metrics import (
        accuracy_score,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    classes = list(range(len(class_names)))
    predicted = probabilities.argmax(axis=1)
    metrics: dict[str, Any] = {
        "num_examples": int(labels.shape[0]),
        "accuracy": float(accuracy_score(labels, predicted)),
        "loss": cross_entropy(labels, probabilities, len(classes)),
    }
    if len(classes) > 5:
        metrics["top_5_accuracy"] = float(
            top_k_accuracy_score(labels, probabilities, k=5, labels=classes)
        )
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predicted, labels=classes, average=average, zero_division=0
        )
        metrics[average] = {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, average=None, zero_division=0
    )
    metrics["per_class"] = {
        str(name): {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(class_names)
    }
    return metrics


def cross_entropy(labels: np.ndarray, probabilities: np.ndarray, classes: int) -> float:
    """Mean categorical cross-entropy (scikit-learn's `log_loss`), as Keras computes it.

    Keras's `CategoricalCrossentropy` divides each row by its sum and clips it to
    [1e-7, 1 - 1e-7] before the log; doing the same here (in float64) makes the loss agree with
    `model.evaluate` even when the true class got a probability below 1e-7.
    """
    from sklearn.metrics import log_loss

    rows = probabilities.astype(np.float64)
    rows = np.clip(rows / rows.sum(axis=1, keepdims=True), KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    with warnings.catch_warnings():
        # the clipped rows sum to 1 within C * 1e-7, not within float64 precision
        warnings.filterwarnings("ignore", "The y_prob values do not sum to one", UserWarning)
        return float(log_loss(labels, rows, labels=list(range(classes))))


def most_confused(
    confusion: np.ndarray, class_names: Sequence[str], count: int = 5
) -> list[tuple[str, str, int]]:
    """The largest off-diagonal cells: (true class, predicted class, images), most first."""
    mistakes = np.array(confusion, copy=True)
    np.fill_diagonal(mistakes, 0)
    flat = np.argsort(-mistakes, axis=None, kind="stable")[:count]
    pairs = []
    for index in flat:
        true, predicted = np.unravel_index(index, mistakes.shape)
        if mistakes[true, predicted] > 0:
            pairs.append(
                (
                    class_names[int(true)],
                    class_names[int(predicted)],
                    int(mistakes[true, predicted]),
                )
            )
    return pairs


def most_confused_pairs(
    labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], count: int = 5
) -> list[tuple[str, str, int]]:
    """`most_confused` from the predictions themselves, without a classes x classes matrix."""
    wrong = labels != predicted
    pairs, counts = np.unique(
        np.stack([labels[wrong], predicted[wrong]], axis=1).astype(np.int64),
        axis=0,
        return_counts=True,
    )
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], *pairs[i]))[:count]
    return [
        (class_names[int(pairs[i][0])], class_names[int(pairs[i][1])], int(counts[i]))
        for i in order
    ]


def top_losses(
    identifiers: Sequence[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    count: int = 5,
) -> list[dict[str, Any]]:
    """The wrongly predicted images the model was surest of (fastai's top losses)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    if wrong.size == 0:
        return []
    true_probability = probabilities[wrong, labels[wrong]]
    order = wrong[np.argsort(true_probability, kind="stable")[:count]]
    return [
        {
            "image": identifiers[index],
            "true": class_names[int(labels[index])],
            "predicted": class_names[int(predicted[index])],
            "confidence": float(probabilities[index, predicted[index]]),
            "loss": float(-math.log(max(float(probabilities[index, labels[index]]), 1e-7))),
        }
        for index in order
    ]


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


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
    rundir.write_json(output_dir / METRICS_FILE, metrics)
    predicted = probabilities.argmax(axis=1)
    with (
        rundir.atomic_path(output_dir / PREDICTIONS_CSV) as temporary,
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
