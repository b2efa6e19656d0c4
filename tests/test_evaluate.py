"""`transferctl evaluate`: metrics recomputed from predictions.csv, finetune's numbers reproduced,
other folders, bad input, and a confusion-matrix picture that stays legible up to 100 classes."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import make_image_folder
from transferctl.evaluate import compute_metrics, most_confused
from transferctl.evaluate.confusion import confusion_matrix_figure, save_confusion_matrix

CLASSES = ["blue", "green", "red"]
EVAL_FILES = ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv")


def read_predictions(folder: Path) -> list[dict[str, str]]:
    with open(folder / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def read_confusion(folder: Path) -> tuple[list[str], np.ndarray]:
    with open(folder / "confusion_matrix.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    assert header[1:] == [row[0] for row in body]
    return header[1:], np.array([[int(value) for value in row[1:]] for row in body])


def recompute(rows: list[dict[str, str]], classes: list[str]) -> dict[str, Any]:
    """The metrics of metrics.json, from predictions.csv with plain numpy (no scikit-learn)."""
    true = np.array([classes.index(row["true_label"]) for row in rows])
    predicted = np.array([classes.index(row["predicted_label"]) for row in rows])
    true_probability = np.array([float(row["true_label_probability"]) for row in rows])
    confusion = np.zeros((len(classes), len(classes)), int)
    np.add.at(confusion, (true, predicted), 1)
    hits = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    precision = np.divide(
        hits, predicted_counts, out=np.zeros(len(classes)), where=predicted_counts > 0
    )
    recall = np.divide(hits, support, out=np.zeros(len(classes)), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(len(classes)), where=denominator > 0
    )
    weights = support / support.sum()
    return {
        "num_examples": len(rows),
        "accuracy": float(np.mean(true == predicted)),
        "loss": float(np.mean(-np.log(np.clip(true_probability, 1e-7, 1.0 - 1e-7)))),
        "confusion": confusion,
        "macro": {"precision": precision.mean(), "recall": recall.mean(), "f1": f1.mean()},
        "weighted": {
            "precision": float(weights @ precision),
            "recall": float(weights @ recall),
            "f1": float(weights @ f1),
        },
        "per_class": {
            name: {
                "precision": precision[index],
                "recall": recall[index],
                "f1": f1[index],
                "support": int(support[index]),
            }
            for index, name in enumerate(classes)
        },
    }


def assert_metrics_match_predictions(folder: Path, classes: list[str]) -> dict[str, Any]:
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = read_predictions(folder)
    expected = recompute(rows, classes)
    assert metrics["num_examples"] == expected["num_examples"] == len(rows)
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert metrics["loss"] == pytest.approx(expected["loss"], abs=1e-6)
    for average in ("macro", "weighted"):
        for key in ("precision", "recall", "f1"):
            assert metrics[average][key] == pytest.approx(expected[average][key], abs=1e-12)
    assert list(metrics["per_class"]) == classes
    for name in classes:
        for key in ("precision", "recall", "f1", "support"):
            assert metrics["per_class"][name][key] == pytest.approx(
                expected["per_class"][name][key], abs=1e-12
            ), (name, key)
    names, confusion = read_confusion(folder)
    assert names == classes
    np.testing.assert_array_equal(confusion, expected["confusion"])
    return metrics


def small_run_copy(tiny_run: Path, destination: Path, *, model: bool = True) -> Path:
    """The files evaluate reads, copied, so a test can change them without touching tiny_run."""
    destination.mkdir()
    names = ["config.yaml", "labels.txt", "metrics.json"] + (["model.keras"] if model else [])
    for name in names:
        shutil.copy(tiny_run / name, destination / name)
    return destination


# ----------------------------------------------------------------------------------------------
# Through the CLI, on the session's tiny run (3 colour classes, val and test splits)
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_defaults_to_test_and_reproduces_finetune(
    tiny_run: Path, cli: Callable[..., Any]
) -> None:
    result = cli("evaluate", tiny_run)
    assert result.exit_code == 0, result.output
    folder = tiny_run / "eval" / "test"
    assert result.stdout.strip().splitlines()[-1] == str(folder)
    for name in EVAL_FILES:
        assert (folder / name).is_file(), name
    assert "accuracy" in result.stdout and "worst classes" in result.stdout

    metrics = assert_metrics_match_predictions(folder, CLASSES)
    assert metrics["split"] == "test" and metrics["data"] is None
    assert "top_5_accuracy" not in metrics  # 3 classes
    trained = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert metrics["num_examples"] == trained["num_examples"]
    assert metrics["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(trained["loss"], abs=1e-4)  # sklearn vs Keras

    # one row per test image, in the split's order, named by its file
    rows = read_predictions(folder)
    assert all(Path(row["image"]).is_file() for row in rows)
    assert all(Path(row["image"]).parent.name == row["true_label"] for row in rows)
    assert all(0.0 < float(row["confidence"]) <= 1.0 for row in rows)
    with Image.open(folder / "confusion_matrix.png") as picture:
        assert picture.format == "PNG" and min(picture.size) > 300


@pytest.mark.slow
def test_evaluate_val_reproduces_finetune_and_replaces_results(
    tiny_run: Path, cli: Callable[..., Any]
) -> None:
    first = cli("evaluate", tiny_run, "--split", "val")
    assert first.exit_code == 0, first.output
    folder = tiny_run / "eval" / "val"
    metrics = assert_metrics_match_predictions(folder, CLASSES)
    trained = json.loads((tiny_run / "metrics.json").read_text())["val"]
    assert metrics["num_examples"] == trained["num_examples"]
    assert metrics["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(trained["loss"], abs=1e-4)

    again = cli("evaluate", tiny_run, "--split", "val")
    assert again.exit_code == 0, again.output
    assert f"replaced the earlier results in {folder}" in again.stderr
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert sorted(path.name for path in folder.iterdir()) == sorted(EVAL_FILES)  # no temp files


@pytest.mark.slow
def test_evaluate_another_folder_with_mistakes(
    tiny_run: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    folder = make_image_folder(tmp_path / "new photos", per_class=6, seed=11)
    # Mislabel three images: the model, which learned colours, must get these wrong.
    for source, target in (("red", "blue"), ("red", "blue"), ("green", "red")):
        moved = sorted((folder / source).iterdir())[0]
        moved.rename(folder / target / f"moved_{moved.name}")

    result = cli("evaluate", tiny_run, "--data", folder)
    assert result.exit_code == 0, result.output
    output = tiny_run / "eval" / "data-new_photos"
    assert result.stdout.strip().splitlines()[-1] == str(output)
    metrics = assert_metrics_match_predictions(output, CLASSES)
    assert metrics["data"] == str(folder.resolve())
    assert metrics["num_examples"] == 18
    assert metrics["per_class"]["blue"]["support"] == 8
    assert metrics["accuracy"] < 1.0
    rows = read_predictions(output)
    assert {Path(row["image"]).parent.parent for row in rows} == {folder.resolve()}
    accuracy = sum(row["true_label"] == row["predicted_label"] for row in rows) / len(rows)
    assert metrics["accuracy"] == accuracy
    assert "most confused" in result.stdout


# ----------------------------------------------------------------------------------------------
# Bad input: exit 2, one clear line
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_missing_run_and_run_without_model(
    tiny_run: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    missing = cli("evaluate", tmp_path / "nowhere")
    assert missing.exit_code == 2
    assert missing.stderr == (
        f"error: RUN_DIR: {tmp_path / 'nowhere'} not found; "
        "pass a run directory made by `finetune`\n"
    )

    unfinished = small_run_copy(tiny_run, tmp_path / "unfinished", model=False)
    result = cli("evaluate", unfinished)
    assert result.exit_code == 2
    assert f"error: RUN_DIR: {unfinished} has no model.keras: its training did not finish" in (
        result.stderr
    )
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_split_the_run_does_not_have(
    tiny_run: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    run = small_run_copy(tiny_run, tmp_path / "no-test")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["test_split"] = 0.0
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = cli("evaluate", run, "--split", "test")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --split: the run has no test split (its splits: train, val); use --split val\n"
    )
    assert not (run / "eval").exists()


@pytest.mark.slow
def test_other_folder_with_other_classes(
    tiny_run: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    folder = make_image_folder(tmp_path / "other", classes=("green", "red", "yellow"), per_class=2)
    result = cli("evaluate", tiny_run, "--data", folder)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --data: {folder.resolve()} has other classes than the run's labels.txt "
        "(missing: blue; extra: yellow); give it exactly one sub-folder per class of the run\n"
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("evaluate", tiny_run, "--data", empty)
    assert result.exit_code == 2
    assert (
        "has no class sub-folders; put the images in one sub-folder per class: blue, green, red"
        in (result.stderr)
    )

    for name in CLASSES:
        (empty / name).mkdir()
    result = cli("evaluate", tiny_run, "--data", empty)
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: --data: class folder(s) without a usable image: blue, green, red; "
    )


@pytest.mark.slow
def test_other_folder_with_a_damaged_image(
    tiny_run: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    folder = make_image_folder(tmp_path / "damaged", per_class=3, seed=5)
    broken = folder / "red" / "zz_broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    result = cli("evaluate", tiny_run, "--data", folder)
    # as in training (data.on_bad_file: skip), the damaged file is named and left out
    assert result.exit_code == 0, result.output
    assert f"warning: --data: skipped {broken}: " in result.stderr
    out = Path(result.stdout.strip().splitlines()[-1])
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 9 and not any("zz_broken" in row for row in rows)


# ----------------------------------------------------------------------------------------------
# Metrics and the picture, directly (fast)
# ----------------------------------------------------------------------------------------------


def test_compute_metrics_on_known_predictions() -> None:
    rng = np.random.default_rng(3)
    classes = [f"c{index}" for index in range(7)]
    labels = rng.integers(0, 6, size=200)  # class c6 has no images
    logits = rng.normal(size=(200, 7))
    logits[np.arange(200), labels] += 1.5
    logits[:, 5] -= 20.0  # c5 is never predicted
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)

    metrics = compute_metrics(labels, probabilities, classes)
    predicted = probabilities.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == labels))
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    assert metrics["top_5_accuracy"] == pytest.approx(
        np.mean((top5 == labels[:, None]).any(axis=1))
    )
    true_probability = probabilities[np.arange(200), labels].astype(float)
    assert true_probability.min() < 1e-7  # c5's images: clipped as Keras clips
    assert metrics["loss"] == pytest.approx(
        np.mean(-np.log(np.clip(true_probability, 1e-7, 1.0))), abs=1e-6
    )
    assert metrics["per_class"]["c6"]["support"] == 0
    assert metrics["per_class"]["c5"]["precision"] == 0.0  # never predicted: 0, not NaN
    assert sum(scores["support"] for scores in metrics["per_class"].values()) == 200
    assert "top_5_accuracy" not in compute_metrics(
        labels % 5,
        probabilities[:, :5] / probabilities[:, :5].sum(axis=1, keepdims=True),
        classes[:5],
    )


@pytest.mark.slow
def test_loss_is_the_one_keras_reports() -> None:
    from transferctl import runtime
    from transferctl.evaluate import cross_entropy

    keras = runtime.keras()
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 12, size=300)
    logits = rng.normal(scale=8.0, size=(300, 12))  # many true-class probabilities below 1e-7
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits.astype(np.float32)))
    assert (probabilities[np.arange(300), labels] < 1e-7).sum() > 10
    reported = keras.losses.CategoricalCrossentropy()(np.eye(12)[labels], probabilities)
    assert cross_entropy(labels, probabilities, 12) == pytest.approx(float(reported), abs=1e-5)


def test_most_confused_pairs() -> None:
    confusion = np.array([[5, 3, 0], [1, 4, 0], [0, 7, 2]])
    assert most_confused(confusion, ["a", "b", "c"], 5) == [
        ("c", "b", 7),
        ("a", "b", 3),
        ("b", "a", 1),
    ]


def _synthetic_confusion(classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, size=40 * classes)
    predicted = np.where(rng.random(true.size) < 0.7, true, rng.integers(0, classes, true.size))
    confusion = np.zeros((classes, classes), int)
    np.add.at(confusion, (true, predicted), 1)
    return confusion


def _assert_no_overlap(boxes: list[Any], axis: str) -> None:
    ordered = sorted(boxes, key=lambda box: box.y0 if axis == "y" else box.x0)
    for first, second in zip(ordered, ordered[1:], strict=False):
        if axis == "y":
            assert first.y1 <= second.y0 + 0.5, (first, second)
        else:
            assert first.x1 <= second.x0 + 0.5, (first, second)


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_confusion_matrix_picture_is_legible(classes: int, tmp_path: Path) -> None:
    names = [f"class_{index:03d}" for index in range(classes)]
    confusion = _synthetic_confusion(classes)
    figure = confusion_matrix_figure(confusion, names, "test: accuracy 0.70")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (axes, *_colorbar) = figure.axes
    for axis, labels in (("y", axes.get_yticklabels()), ("x", axes.get_xticklabels())):
        assert [label.get_text() for label in labels] == names  # every class is labelled
        assert min(label.get_fontsize() for label in labels) >= 6
        _assert_no_overlap([label.get_window_extent(renderer) for label in labels], axis)

    path = tmp_path / f"cm{classes}.png"
    save_confusion_matrix(confusion, names, path, "test: accuracy 0.70")
    with Image.open(path) as picture:
        width, height = picture.size
    assert 400 < width < 4000 and 400 < height < 4000


def test_long_class_names_are_shortened_but_stay_distinct() -> None:
    names = [f"a_rather_long_class_name_number_{index}" for index in range(12)]
    figure = confusion_matrix_figure(_synthetic_confusion(12), names)
    shown = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert len(set(shown)) == 12
    assert all(len(text) <= 24 for text in shown)
    assert shown[11].endswith("number_11")


def test_confusion_matrix_must_match_the_class_names() -> None:
    with pytest.raises(ValueError, match="one row per class name"):
        confusion_matrix_figure(np.zeros((3, 3)), ["a", "b"])
