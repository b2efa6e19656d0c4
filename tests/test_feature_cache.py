"""Feature extraction: the cache, the probe-started head, and the probe as a baseline.

A source run learns digits 0-4; the target learns 5-9 from 5 labels per class on the source's
frozen backbone. Its head must reach what a logistic regression fitted here, on features taken
from the run's own model.keras, reaches (minus 1 point).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import interrupt_after_commit, write_config

pytestmark = pytest.mark.slow


def _target_config(runs: Path, **train: Any) -> dict[str, Any]:
    return {
        "name": "target",
        "seed": 5,
        "data": {
            "source": "digits",
            "classes": [5, 6, 7, 8, 9],
            "per_class": 5,
            "image_size": [32, 32],
            "validation_split": 0.2,
            "test_split": 0.3,
            "augment": {"flip": "none"},
        },
        "model": {"backbone": "mobilenet_v3_small", "weights": {"run": "source"}, "freeze": "all"},
        "train": {"phases": [{"epochs": 4, "learning_rate": 1e-3}], **train},
        "output": {"runs_dir": str(runs)},
    }


@pytest.fixture(scope="module")
def source_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/ holding a finished source run named `source` (digits 0-4, from scratch)."""
    from typer.testing import CliRunner

    from transferctl.cli import app

    work = tmp_path_factory.mktemp("source")
    config = {
        "name": "source",
        "seed": 3,
        "data": {
            "source": "digits",
            "classes": [0, 1, 2, 3, 4],
            "image_size": [32, 32],
            "limit": 400,
            "augment": {"flip": "none"},
        },
        "model": {
            "backbone": "mobilenet_v3_small",
            "weights": "none",
            "freeze": "none",
            "head": {"hidden": [], "dropout": 0.0},
        },
        "train": {"phases": [{"epochs": 3, "learning_rate": 2e-3}]},
        "output": {"runs_dir": str(work / "runs")},
    }
    result = CliRunner().invoke(app, ["finetune", str(write_config(work / "s.yaml", config)), "-q"])
    assert result.exit_code == 0, result.output
    return work / "runs"


def _pooled_features(run: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    import keras

    from transferctl.config.loader import load_config
    from transferctl.data import load_data

    model = keras.saving.load_model(str(run / "model.keras"), compile=False)
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)
    config = load_config(run / "config.yaml")
    data = load_data(config.data, config.seed)
    features, labels = [], []
    for images, onehot in data.plain(split):
        features.append(np.asarray(pooled(images, training=False)))
        labels.append(onehot.numpy().argmax(axis=1))
    return np.concatenate(features), np.concatenate(labels)


def _logistic_regression_test_accuracy(run: Path) -> float:
    """scikit-learn on standardised features, C chosen on the validation split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        _pooled_features(run, split) for split in ("train", "val", "test")
    )
    scaler = StandardScaler().fit(x_train)
    fits = [
        LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x_train), y_train)
        for c in (0.01, 0.1, 1.0, 10.0)
    ]
    best = max(fits, key=lambda fit: fit.score(scaler.transform(x_val), y_val))
    return float(best.score(scaler.transform(x_test), y_test))


def test_frozen_run_with_default_head_reaches_the_linear_probe(
    source_runs: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    config = write_config(tmp_path / "target.yaml", _target_config(source_runs))
    result: Any = cli("finetune", config)
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert "feature cache: on" in result.stderr
    assert "linear probe (logistic regression" in result.stderr

    metrics = json.loads((run / "metrics.json").read_text())
    probe_here = _logistic_regression_test_accuracy(run)
    assert metrics["test"]["accuracy"] >= probe_here - 0.01, (metrics["test"], probe_here)
    # finished: checkpoints/ keeps its state.json alone (the saved backbone went too), and the
    # run directory is little more than its model
    assert [path.name for path in (run / "checkpoints").iterdir()] == ["state.json"]
    size = sum(path.stat().st_size for path in run.rglob("*") if path.is_file())
    assert size <= 1.5 * (run / "model.keras").stat().st_size + 5 * 2**20, size
    assert metrics["test"]["accuracy"] > 0.35  # 5 classes: chance is 0.2
    assert set(metrics["linear_probe"]) >= {"val", "test", "C"}
    phase = metrics["training"]["phases"][0]
    assert phase["head_init"] == "linear_probe"
    assert phase["feature_cache"]["used"] is True


def test_cache_off_and_augmentation_say_why_and_train_alike(
    source_runs: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    accuracies = {}
    for cache in ("auto", "off"):
        config = _target_config(source_runs / ".." / f"runs-{cache}", feature_cache=cache)
        config["model"]["weights"] = str(next(source_runs.glob("source-*")))
        config["model"]["head"] = {"hidden": [], "dropout": 0.0, "init": "random"}
        path = write_config(tmp_path / f"{cache}.yaml", config)
        result: Any = cli("finetune", path)
        assert result.exit_code == 0, result.output
        run = Path(result.stdout.strip().splitlines()[-1])
        accuracies[cache] = json.loads((run / "metrics.json").read_text())["val"]["accuracy"]
        expected = "feature cache: on" if cache == "auto" else "train.feature_cache is off"
        assert expected in result.stderr
    assert abs(accuracies["auto"] - accuracies["off"]) < 0.1, accuracies

    config = _target_config(source_runs)
    config["data"]["augment"] = {"flip": "none", "rotation": 0.05}
    config["train"]["phases"][0]["epochs"] = 1
    result = cli("finetune", write_config(tmp_path / "augmented.yaml", config))
    assert result.exit_code == 0, result.output
    assert "feature cache: off (augmentation is on (data.augment))" in result.stderr


def test_a_cached_phase_resumes_where_it_was_killed(
    source_runs: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:

    interrupt_after_commit(monkeypatch, lambda state: state.epochs_done == 2 and not state.finished)
    config = _target_config(source_runs)
    config["train"]["phases"] = [
        {"name": "head", "epochs": 3, "learning_rate": 1e-3},
        {"name": "more", "epochs": 1, "learning_rate": 1e-4},
    ]
    run = tmp_path / "run"
    result: Any = cli("finetune", write_config(tmp_path / "t.yaml", config), "--run-dir", run)
    assert result.exit_code == 130, result.output
    monkeypatch.undo()
    assert (run / "checkpoints" / "backbone-phase-0.weights.h5").is_file()

    resumed: Any = cli("finetune", "--resume", run, "-q")
    assert resumed.exit_code == 0, resumed.output
    with open(run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    assert [row["phase"] for row in rows] == ["head", "head", "head", "more"]
    source = next(source_runs.glob("source-*"))
    assert _same_backbone(source / "model.keras", run / "model.keras")


def _same_backbone(first: Path, second: Path) -> bool:
    import keras

    a = keras.saving.load_model(str(first), compile=False).get_layer("backbone")
    b = keras.saving.load_model(str(second), compile=False).get_layer("backbone")
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_a_run_killed_while_caching_features_resumes(
    source_runs: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the run directory was written but before any checkpoint: resumable."""
    from transferctl.train import feature_cache

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(feature_cache, "extract", killed)
    config = _target_config(source_runs)
    config["train"]["phases"][0]["epochs"] = 1
    run = tmp_path / "run"
    result: Any = cli("finetune", write_config(tmp_path / "t.yaml", config), "--run-dir", run)
    assert result.exit_code == 130, result.output
    assert (run / "config.yaml").is_file() and not (run / "checkpoints" / "state.json").exists()
    monkeypatch.undo()

    resumed: Any = cli("finetune", "--resume", run, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert (run / "model.keras").is_file()
