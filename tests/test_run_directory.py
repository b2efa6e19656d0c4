"""A finished run has every file of the documented run-directory layout, and they are consistent."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

RUN_FILES = ("config.yaml", "env.json", "labels.txt", "history.csv", "metrics.json", "model.keras")


def test_run_directory_has_every_file(tiny_run: Path) -> None:
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "checkpoints").is_dir()
    assert any((tiny_run / "tensorboard").rglob("events.out.tfevents*"))
    assert (tiny_run / "labels.txt").read_text().split() == ["blue", "green", "red"]
    env = json.loads((tiny_run / "env.json").read_text())
    assert {"python", "tensorflow", "keras", "transferctl", "device", "command_line"} <= set(env)
    leftovers = [p.name for p in tiny_run.rglob(".*.tmp*")]
    assert leftovers == []


def test_history_has_a_row_per_epoch_of_each_phase(tiny_run: Path) -> None:
    with open(tiny_run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "epoch",
        "phase",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "seconds",
        "trainable_params",
    ]
    assert [(row["epoch"], row["phase"]) for row in rows] == [("1", "head"), ("2", "finetune")]
    assert int(rows[0]["trainable_params"]) > int(rows[1]["trainable_params"]) > 0
    assert float(rows[0]["learning_rate"]) == pytest.approx(2.0e-3)
    assert float(rows[1]["learning_rate"]) == pytest.approx(5.0e-4)
    assert all(row["val_accuracy"] for row in rows)


def test_resolved_config_is_explicit_and_reloads(tiny_run: Path) -> None:
    from transferctl.config.loader import load_config

    saved = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert saved["data"]["image_size"] == [32, 32]
    assert saved["model"]["train_batchnorm"] is True  # weights: none trains BatchNorm
    assert Path(saved["data"]["path"]).is_absolute()
    reloaded = load_config(tiny_run / "config.yaml")
    again = load_config(tiny_run / "config.yaml")
    assert reloaded == again
    assert reloaded.model_dump(mode="json") == saved


def test_model_keras_reproduces_the_reported_validation_accuracy(tiny_run: Path) -> None:
    import keras
    import numpy as np

    import transferctl.model.preprocess  # noqa: F401 - registers the layer
    from transferctl.config.loader import load_config
    from transferctl.data import load_data

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    config = load_config(tiny_run / "config.yaml")
    data = load_data(config.data, config.seed)
    model = keras.saving.load_model(str(tiny_run / "model.keras"), compile=False, safe_mode=True)
    for split in ("val", "test"):
        correct = total = 0
        for images, labels in data.plain(split):
            predicted = np.argmax(model.predict(images, verbose=0), axis=1)
            correct += int((predicted == np.argmax(labels.numpy(), axis=1)).sum())
            total += len(predicted)
        assert total == metrics[split]["num_examples"]
        assert correct / total == pytest.approx(metrics[split]["accuracy"], abs=1e-6)


def test_an_existing_run_directory_is_never_overwritten(cli, tmp_path: Path, tiny_run: Path):
    from tests.conftest import tiny_config, write_config

    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.is_file()}
    # another config into a finished run: refused
    config = write_config(tmp_path / "again.yaml", tiny_config())
    result = cli("finetune", config, "--run-dir", tiny_run, "--quiet")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --run-dir: {tiny_run} holds a finished run whose ")
    assert "runs are never overwritten" in result.stderr
    # the very same command again: nothing to do
    result = cli("finetune", tiny_run / "config.yaml", "--run-dir", tiny_run)
    assert result.exit_code == 0
    assert "already finished; nothing to do" in result.stderr
    # a folder with other files in it: refused
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    result = cli("finetune", config, "--run-dir", tmp_path / "busy", "--quiet")
    assert result.exit_code == 2
    assert "already exists and is not empty" in result.stderr
    after = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.is_file()}
    assert before == after
