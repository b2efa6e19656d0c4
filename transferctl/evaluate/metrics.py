"""Predictions and metrics: the model over the images, then every number of `metrics.json`.

Only each image's true label and class probabilities are kept, never the images. Every metric is
computed once, from those predictions, with scikit-learn.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.errors import UserError

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): how far Keras clips probabilities in its losses

# Called after each batch with (images done, images in all).
Progress = Callable[[int, int], None]


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
