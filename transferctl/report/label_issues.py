"""Suspected label errors in the training data (confident learning, Northcutt et al., 2021).

Out-of-sample probabilities come from a probe on the features the run's head sees (its input),
each image predicted by a probe that never saw it: a 5-fold cross-validated logistic regression,
or, where that would cost too much (many classes and images), its k nearest other images.
cleanlab then flags the images whose given label those probabilities contradict, and ranks
every image by its label quality (the out-of-sample probability of its given label).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

FOLDS = 5
NEIGHBOURS = 10
# images x feature size x classes above which the probe is k-NN (a logistic regression's fits
# grow with the product: 1,200 digits x 576 x 10 take a few seconds, 3,000 x 576 x 1,500 minutes)
LOGISTIC_WORK = 2e8


@dataclass
class LabelIssues:
    """Rank order: the flagged images first, most suspect first, then the rest by score."""

    order: np.ndarray  # indices into the training images
    flagged: np.ndarray  # bool per training image
    score: np.ndarray  # label quality per training image, 0 (surely wrong) to 1
    suggested: np.ndarray  # the class the probe gives each training image
    probe_accuracy: float  # the out-of-sample probe's accuracy against the given labels
    probe: str  # the probe, in words


def find(features: np.ndarray, labels: np.ndarray, classes: int, seed: int) -> LabelIssues:
    """Out-of-sample probabilities by a `FOLDS`-fold probe, then cleanlab's verdicts."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if len(labels) * features.shape[1] * classes > LOGISTIC_WORK:
        probabilities = neighbours(features, labels, classes)
        probe = f"the {NEIGHBOURS} nearest other training images (cosine, standardised features)"
    else:
        probabilities, folds = out_of_sample(features, labels, classes, seed)
        probe = f"{folds}-fold cross-validated logistic regression"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab on classes with very few images
        flagged = np.asarray(find_label_issues(labels, probabilities, n_jobs=1), dtype=bool)
        score = np.asarray(get_label_quality_scores(labels, probabilities), dtype=np.float64)
    suggested = probabilities.argmax(axis=1)
    order = np.lexsort((score, ~flagged))  # flagged first; within each, lowest score first
    return LabelIssues(
        order=order,
        flagged=flagged,
        score=score,
        suggested=suggested,
        probe_accuracy=float((suggested == labels).mean()),
        probe=probe,
    )


def out_of_sample(
    features: np.ndarray, labels: np.ndarray, classes: int, seed: int
) -> tuple[np.ndarray, int]:
    """[N, classes] probabilities, each row from a probe trained on the other folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    smallest = int(np.bincount(labels, minlength=classes)[np.unique(labels)].min())
    folds = max(2, min(FOLDS, len(labels)))
    splitter: Any = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if smallest >= folds
        else KFold(folds, shuffle=True, random_state=seed)
    )
    probabilities = np.zeros((len(labels), classes), dtype=np.float64)
    for inside, outside in splitter.split(features, labels):
        probe = _probe(seed).fit(features[inside], labels[inside])
        probabilities[np.ix_(outside, probe.classes_)] = probe.predict_proba(features[outside])
    return probabilities, folds


def _probe(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=0.1, max_iter=300, random_state=seed)
    )


def neighbours(features: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """[N, classes] probabilities: the labels of each image's nearest other images, smoothed."""
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler, normalize

    points = normalize(StandardScaler().fit_transform(features))
    count = min(NEIGHBOURS, len(labels) - 1)
    _, found = NearestNeighbors(n_neighbors=count + 1).fit(points).kneighbors(points)
    # the image itself out (a duplicate of it may come first): the first `count` others per row
    itself = found == np.arange(len(labels))[:, None]
    others = np.take_along_axis(found, np.argsort(itself, axis=1, kind="stable")[:, :count], 1)
    votes = np.zeros((len(labels), classes), dtype=np.float32)
    np.add.at(votes, (np.repeat(np.arange(len(labels)), count), labels[others].ravel()), 1.0)
    smoothing = 0.1 / classes
    return (votes + smoothing) / (count + 0.1)
