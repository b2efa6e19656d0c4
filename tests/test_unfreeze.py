"""Gradual unfreezing: the schedule, what trains per epoch (across resumes), and bad keys."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import interrupt_after_commit, write_config
from tests.conftest import tiny_config as any_tiny_config
from transferctl.config.schema import Unfreeze
from transferctl.train.unfreeze import Step, checkpoint_step, schedule, step_of

LAYERS = 40  # unfrozen per step: MobileNetV3Small's top 40 layers hold weights

# the expected layer counts below are MobileNetV3Small's
tiny_config = partial(any_tiny_config, backbone="mobilenet_v3_small")


def test_the_schedule_releases_n_more_layers_every_k_epochs() -> None:
    steps = schedule(5, Unfreeze(every=2, layers=10), frozen_layers=157)
    assert steps == [Step(0, 2, 0), Step(2, 4, 10), Step(4, 5, 20)]
    assert schedule(3, None, 157) == [Step(0, 3, 0)]


def test_steps_that_release_nothing_new_merge() -> None:
    steps = schedule(6, Unfreeze(every=1, layers=4), frozen_layers=6)
    assert steps == [Step(0, 1, 0), Step(1, 2, 4), Step(2, 6, 6)]


def test_a_checkpoint_belongs_to_the_step_that_wrote_it() -> None:
    steps = schedule(4, Unfreeze(every=2, layers=10), frozen_layers=157)
    assert step_of(steps, 1) == steps[0] and step_of(steps, 2) == steps[1]
    assert checkpoint_step(steps, 0, 0) == steps[0]  # the phase's start
    assert checkpoint_step(steps, 2, 0) == steps[0]  # end of epoch 2: step 0's optimizer
    assert checkpoint_step(steps, 2, 3) == steps[1]  # 3 batches into epoch 3
    assert checkpoint_step(steps, 4, 0) == steps[1]  # the phase's end


BAD_KEYS = [
    ("unfreeze: {every: 0, layers: 5}", "train.phases.0.unfreeze.every", "greater than 0"),
    ("unfreeze: {every: 1}", "train.phases.0.unfreeze.layers", "required"),
    ("unfreeze: {every: 1, layers: 5, step: 2}", "train.phases.0.unfreeze.step", "unknown key"),
    ("unfreeze: {every: 3, layers: 5}", "train.phases.0.unfreeze.every", "no layer would ever"),
    ("freeze: none, unfreeze: {every: 1, layers: 5}", "train.phases.0.unfreeze", "nothing to"),
    ("layer_decay: 1.5", "train.phases.0.layer_decay", "at most 1.0; got 1.5"),
    ("layer_decay: 0", "train.phases.0.layer_decay", "greater than 0"),
    ("backbone_lr_scale: -1", "train.phases.0.backbone_lr_scale", "greater than 0"),
    ("layer_decay: 0.9, backbone_lr_scale: 0.1", "train.phases.0.layer_decay", "not both"),
]


@pytest.mark.parametrize(("keys", "field", "words"), BAD_KEYS, ids=[c[0] for c in BAD_KEYS])
def test_bad_phase_keys_exit_2_naming_the_field(
    cli: Callable[..., Any], tmp_path: Path, keys: str, field: str, words: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "data: {source: digits}\n"
        f"train: {{phases: [{{name: tune, epochs: 3, learning_rate: 0.001, {keys}}}]}}\n"
    )
    result = cli("validate", config)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith(f"error: {field}: "), line
    assert words in line, line


def _top_params(count: int) -> int:
    """Trainable parameters of a fresh MobileNetV3Small's top `count` layers, BatchNorm aside
    (frozen: train_batchnorm is false)."""
    import keras

    backbone = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    return sum(
        int(np.prod(weight.shape))
        for layer in backbone.layers[len(backbone.layers) - count :]
        if not isinstance(layer, keras.layers.BatchNormalization)
        for weight in layer.trainable_weights
    )


@pytest.mark.slow
def test_trainable_count_per_epoch_follows_the_schedule_across_resumes(
    cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transferctl.config.loader import load_config
    from transferctl.plan import make_plan

    config = tiny_config(
        data={"limit": 48},
        model={
            "freeze": "all",
            "train_batchnorm": False,
            "head": {"hidden": [], "dropout": 0.0, "init": "random"},
        },
        train={
            "lr_schedule": "cosine",
            "phases": [
                {
                    "name": "gradual",
                    "epochs": 4,
                    "learning_rate": 1e-3,
                    "unfreeze": {"every": 2, "layers": LAYERS},
                    "layer_decay": 0.8,
                }
            ],
        },
        output={"runs_dir": str(tmp_path / "runs")},
    )
    path = write_config(tmp_path / "gradual.yaml", config)
    run = tmp_path / "run"
    kill_after = [2, 3]  # at the step boundary (a new step's optimizer), then inside a step

    def interrupt(state: Any) -> bool:
        if kill_after and state.epochs_done == kill_after[0] and not state.finished:
            kill_after.pop(0)
            return True
        return False

    interrupt_after_commit(monkeypatch, interrupt)
    assert cli("finetune", path, "--run-dir", run, "-q").exit_code == 130
    resumed = cli("finetune", "--resume", run)
    assert resumed.exit_code == 130, resumed.output
    assert "unfreezing: from epoch 3, 40 more backbone layers train" in resumed.output
    assert cli("finetune", "--resume", run, "-q").exit_code == 0

    with open(run / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    head = (576 + 1) * 10
    counts = [int(row["trainable_params"]) for row in rows]
    assert counts == [head, head, head + _top_params(LAYERS), head + _top_params(LAYERS)]
    planned = make_plan(load_config(path)).phases[0].unfreeze
    assert [(s.first_epoch, s.trainable_params) for s in planned] == [(1, head), (3, counts[2])]
    # the cosine runs over the whole phase, across the steps' fresh optimizers and the resumes
    rates = [float(row["learning_rate"]) for row in rows]
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * epoch / 4)) for epoch in (1, 2, 3, 4)]
    assert rates == pytest.approx(expected, abs=1e-9)
    phase = json.loads((run / "metrics.json").read_text())["training"]["phases"][0]
    assert phase["unfreeze"] == [
        {"from_epoch": 1, "layers_released": 0},
        {"from_epoch": 3, "layers_released": LAYERS},
    ]
    assert phase["feature_cache"]["reason"] == "gradual unfreezing"
    assert phase["learning_rates"].startswith("head 0.001, backbone 0.0008 (depth 1) to ")
