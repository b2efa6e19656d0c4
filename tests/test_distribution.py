"""runtime.distribution: the decision (pure), TRANSFERCTL_CPU_DEVICES, and mirrored training over
two logical CPU devices through the real CLI, against a single-device run of the same config.

The mirrored runs are subprocesses: the CPU must be split before TensorFlow starts its devices,
which in the test process other tests have long done; the one-device runs train in-process.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_config
from transferctl.cli import app
from transferctl.config.schema import Train
from transferctl.distribute.strategy import (
    CPU_DEVICES_VARIABLE,
    Distribution,
    cpu_devices,
    decide,
    single_device,
)
from transferctl.errors import UserError

# ------------------------------------------------------------------------------------------------
# the decision, branch by branch (no TensorFlow)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "gpus", "cpus", "workers", "expected"),
    [
        ("none", 4, 2, 3, "none"),  # none is none, whatever the machine
        ("mirrored", 0, 1, 0, "mirrored"),  # asked for: one replica on a lone device
        ("mirrored", 2, 1, 3, "mirrored"),  # TF_CONFIG does not override an explicit choice
        ("multi_worker", 0, 1, 1, "multi_worker"),
        ("auto", 0, 1, 0, "none"),  # the common CPU machine: today's path
        ("auto", 1, 1, 0, "none"),  # one GPU: no strategy (no overhead)
        ("auto", 2, 1, 0, "mirrored"),
        ("auto", 0, 2, 0, "mirrored"),  # TRANSFERCTL_CPU_DEVICES=2 asks to try it
        ("auto", 1, 2, 0, "none"),  # a CPU split does not matter where a GPU trains
        ("auto", 2, 1, 2, "multi_worker"),
        ("auto", 0, 1, 1, "none"),  # a TF_CONFIG of one worker is a single machine
    ],
)
def test_decide(setting: str, gpus: int, cpus: int, workers: int, expected: str) -> None:
    assert decide(setting, gpus, cpus, workers).strategy == expected


def test_multi_worker_without_tf_config_names_the_key() -> None:
    with pytest.raises(UserError) as raised:
        decide("multi_worker", 0, 1, 0)
    assert raised.value.where == "runtime.distribution" and "TF_CONFIG" in raised.value.what


@pytest.mark.parametrize(("raw", "count"), [("", 1), ("1", 1), ("2", 2), (" 8 ", 8)])
def test_cpu_devices(raw: str, count: int) -> None:
    assert cpu_devices({CPU_DEVICES_VARIABLE: raw}) == count


@pytest.mark.parametrize("raw", ["0", "-1", "two", "2.5", "65"])
def test_cpu_devices_bad_value_names_the_variable(raw: str) -> None:
    with pytest.raises(UserError) as raised:
        cpu_devices({CPU_DEVICES_VARIABLE: raw})
    assert raised.value.where == CPU_DEVICES_VARIABLE and repr(raw) in raised.value.what


def test_global_batch_and_linear_scaling() -> None:
    train = Train.model_validate(
        {"phases": [{"epochs": 1, "learning_rate": 1e-3}, {"epochs": 1, "learning_rate": 1e-5}]}
    )
    mirrored = Distribution("mirrored", 4, 32, "linear", "auto: 4 GPUs", ("GPU:0",) * 4)
    assert mirrored.global_batch_size == 128 and mirrored.lr_factor == 4.0
    rates = [phase.learning_rate for phase in mirrored.scaled_train(train).phases]
    assert rates == pytest.approx([4e-3, 4e-5])
    assert "global batch 128 (32 per replica)" in mirrored.describe()
    record = mirrored.record()
    assert (record["strategy"], record["replicas"], record["global_batch_size"]) == (
        "mirrored",
        4,
        128,
    )
    kept = Distribution("mirrored", 4, 32, "none", "auto: 4 GPUs")
    assert kept.scaled_train(train) is train and kept.lr_factor == 1.0
    one = single_device(32, "linear")
    assert one.scaled_train(train) is train and one.describe() == "" and not one.distributed


def test_runtime_keys_are_validated_naming_the_field(cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"runtime": {"lr_scaling": "sqrt"}})
    result = cli("validate", config)
    assert result.exit_code == 2
    assert "runtime.lr_scaling" in result.output


# ------------------------------------------------------------------------------------------------
# through the CLI
# ------------------------------------------------------------------------------------------------


def _transferctl(*args: str, cpu_devices: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.pop(CPU_DEVICES_VARIABLE, None)
    if cpu_devices is not None:
        env[CPU_DEVICES_VARIABLE] = cpu_devices
    return subprocess.run(
        [sys.executable, "-m", "transferctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bad_cpu_devices_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"data": {"source": "digits", "limit": 40}, "output": {"runs_dir": str(tmp_path)}},
    )
    done = _transferctl("finetune", str(config), cpu_devices="two")
    assert done.returncode == 2, done.stderr
    assert CPU_DEVICES_VARIABLE in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.glob("*-*")), "no run directory for a bad variable"


def _losses(run: Path) -> list[tuple[str, float]]:
    with open(run / "history.csv", newline="", encoding="utf-8") as handle:
        return [(row["phase"], float(row["loss"])) for row in csv.DictReader(handle)]


@pytest.mark.slow
@pytest.mark.extended  # the uneven-batch test below compares with one device too
def test_mirrored_on_two_cpu_devices_matches_one_device(tiny_run: Path, image_folder: Path) -> None:
    """Same data, seed and global batch; per-replica batch halved: the loss per epoch matches.

    The config leaves nothing that differs per replica: BatchNorm does not train (per-replica
    batches would give it other statistics), no dropout or augmentation, and each epoch is one
    global batch of the whole training split (48 images: 16 per class), so the order the
    shuffle draws cannot matter either (Keras's fit under a strategy iterates the dataset once
    before the first epoch, so each epoch there sees the next shuffle). What remains is float
    rounding: two half-batch gradients summed instead of one; measured ~3e-7 relative. The
    tolerance, 1e-4 relative, is far above that and far below what any of those differences
    made (1e-2). The run also covers, under mirrored, the distillation teacher (its outputs
    cached with the features), the feature cache (phase 1: the head on cached features),
    discriminative rates (layer_decay: the custom optimizer) and gradual unfreezing
    (a recompile mid-phase), and env.json's distribution.
    """
    work = tiny_run.parent.parent / "distribution"
    work.mkdir(exist_ok=True)

    def config(name: str, batch_size: int, distribution: str) -> Path:
        body = {
            "name": name,
            "seed": 3,
            "data": {
                "source": "folder",
                "path": str(image_folder),
                "image_size": [32, 32],
                "validation_split": 0.25,
                "per_class": 16,
                "batch_size": batch_size,
                "augment": {"flip": "none"},
            },
            "model": {
                "backbone": "mobilenet",  # random and frozen: the runs, not the features, matter
                "weights": "none",
                "freeze": "all",
                "train_batchnorm": False,
                "head": {"hidden": [], "dropout": 0.0},
            },
            "train": {
                "phases": [
                    {"name": "head", "epochs": 1, "learning_rate": 1.0e-2},
                    {
                        "name": "tune",
                        "epochs": 2,
                        "learning_rate": 1.0e-3,
                        "freeze": {"last_trainable": 10},
                        "unfreeze": {"every": 1, "layers": 10},
                        "layer_decay": 0.8,
                    },
                ]
            },
            "distill": {"teacher": str(tiny_run), "alpha": 0.5},
            "runtime": {"distribution": distribution},
            "output": {"runs_dir": str(work / "runs")},
        }
        return write_config(work / f"{name}.yaml", body)

    # one device needs no CPU split: in this process
    single = CliRunner().invoke(app, ["finetune", str(config("single", 48, "none")), "--quiet"])
    assert single.exit_code == 0, single.output
    mirrored = _transferctl(
        "finetune", str(config("mirrored", 24, "auto")), "--quiet", cpu_devices="2"
    )
    assert mirrored.returncode == 0, mirrored.stderr
    one, two = (Path(out.strip().splitlines()[-1]) for out in (single.stdout, mirrored.stdout))

    spread = json.loads((two / "env.json").read_text())["distribution"]
    assert spread["strategy"] == "mirrored" and spread["replicas"] == 2
    assert spread["global_batch_size"] == 48 and spread["per_replica_batch_size"] == 24
    assert json.loads((one / "env.json").read_text())["distribution"]["replicas"] == 1
    phases = json.loads((two / "metrics.json").read_text())["training"]["phases"]
    assert phases[0]["feature_cache"]["used"] and phases[0]["distill"]["teacher_outputs"]
    assert "unfreeze" in phases[1] and "learning_rates" in phases[1]

    expected, found = _losses(one), _losses(two)
    assert [phase for phase, _ in found] == ["head", "tune", "tune"]
    assert [phase for phase, _ in expected] == [phase for phase, _ in found]
    for (_, a), (_, b) in zip(expected, found, strict=True):
        assert math.isclose(a, b, rel_tol=1e-4), (expected, found)


@pytest.mark.slow
def test_mirrored_trains_batches_that_split_unevenly(cli, tmp_path: Path) -> None:
    """50 digits, 10% for validation, 2 replicas of 32: every batch splits unevenly (the 45
    training images are one global batch, 23 + 22; the validation split's 5 are 3 + 2), in the
    feature cache's pass, its head's fit, validation, and a phase that trains the backbone's
    top. One batch an epoch keeps the order the shuffle draws out of it (a strategy's fit sees
    the next epoch's shuffle), so the loss per epoch matches one device's; per-replica means of
    unequal halves weigh the images slightly differently: within 1% + 0.01, not exactly."""

    def config(name: str, batch_size: int, distribution: str) -> Path:
        body = {
            "name": name,
            "seed": 5,
            "data": {
                "source": "digits",
                "limit": 50,
                "validation_split": 0.1,
                "image_size": [32, 32],
                "batch_size": batch_size,
                "augment": {"flip": "none"},
            },
            "model": {
                "backbone": "mobilenet",
                "weights": "none",
                "freeze": "all",
                "train_batchnorm": False,
                "head": {"hidden": [], "dropout": 0.0},
            },
            "train": {
                "phases": [
                    {"name": "head", "epochs": 1, "learning_rate": 1.0e-2},
                    {
                        "name": "top",
                        "epochs": 1,
                        "learning_rate": 1.0e-3,
                        "freeze": {"last_trainable": 10},
                    },
                ]
            },
            "runtime": {"distribution": distribution},
            "output": {"runs_dir": str(tmp_path / "runs")},
        }
        return write_config(tmp_path / f"{name}.yaml", body)

    single = cli("finetune", config("one", 64, "none"), "--quiet")
    assert single.exit_code == 0, single.output
    mirrored = _transferctl(
        "finetune", str(config("two", 32, "mirrored")), "--quiet", cpu_devices="2"
    )
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    one = Path(single.stdout.strip().splitlines()[-1])
    two = Path(mirrored.stdout.strip().splitlines()[-1])
    spread = json.loads((two / "env.json").read_text())["distribution"]
    assert (spread["replicas"], spread["global_batch_size"]) == (2, 64)
    phases = json.loads((two / "metrics.json").read_text())["training"]["phases"]
    assert phases[0]["feature_cache"]["used"]
    expected, found = _losses(one), _losses(two)
    assert [phase for phase, _ in found] == ["head", "top"]
    for (_, a), (_, b) in zip(expected, found, strict=True):
        assert abs(a - b) <= 0.01 * abs(a) + 0.01, (expected, found)


def test_multi_worker_without_tf_config_is_exit_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "data": {"source": "digits", "limit": 40},
            "runtime": {"distribution": "multi_worker"},
            "output": {"runs_dir": str(tmp_path)},
        },
    )
    done = _transferctl("finetune", str(config))
    assert done.returncode == 2, done.stderr
    assert "runtime.distribution" in done.stderr and "TF_CONFIG" in done.stderr
    assert "Traceback" not in done.stderr
