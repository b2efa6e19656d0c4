"""The recipe (issue 27, item 3): RandAugment, random erasing, MixUp and CutMix in training, the
weights' moving average (`train.ema`) through a kill and a resume, and test-time augmentation in
`evaluate --tta` and `predict --tta`. One tiny real run on digits, trained once for the module."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import interrupt_after_commit, tiny_config, write_config
from transferctl.cli import app

RECIPE = {
    "flip": "none",
    "randaugment": {"ops": 2, "magnitude": 0.5},
    "erasing": 0.25,
    "mixup": 0.2,
    "cutmix": 1.0,
}
EMA = 0.9  # about 10 steps: the run has 12 a epoch


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A frozen-backbone run with every augmentation of the recipe and an average of the
    weights, killed (Ctrl-C) after its first epoch's checkpoint and resumed."""
    work = tmp_path_factory.mktemp("recipe")
    config = tiny_config(
        data={"limit": 192, "augment": RECIPE},
        model={"freeze": "all", "train_batchnorm": False},
        train={
            "ema": EMA,
            "restore_best": False,
            "phases": [{"name": "head", "epochs": 2, "learning_rate": 5.0e-3}],
        },
        output={"runs_dir": str(work / "runs")},
    )
    path = write_config(work / "recipe.yaml", config)
    run = work / "run"
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        interrupt_after_commit(patch, lambda state: state.epochs_done == 1)
        killed = runner.invoke(app, ["finetune", str(path), "--run-dir", str(run)])
    resumed = runner.invoke(app, ["finetune", "--resume", str(run)])
    yield {"run": run, "killed": killed, "resumed": resumed, "work": work}


def test_the_recipe_trains_and_resumes_on_digits(recipe_run: dict[str, Any]) -> None:
    killed, resumed, run = recipe_run["killed"], recipe_run["resumed"], recipe_run["run"]
    assert killed.exit_code == 130, killed.output
    assert resumed.exit_code == 0, resumed.output
    # any of the recipe's augmentations changes the images every epoch: no feature cache
    assert "feature cache: off (augmentation is on (data.augment))" in killed.stderr
    with open(run / "history.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:  # accuracy against each soft label's larger share: a fraction
        assert 0.0 <= float(row["accuracy"]) <= 1.0 and np.isfinite(float(row["loss"]))
    # model.keras (the last epoch: restore_best false) is the model validation scored: the average
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["val"]["loss"] == pytest.approx(float(rows[-1]["val_loss"]), abs=1e-4)


def test_mixup_and_cutmix_make_soft_labels_that_sum_to_one() -> None:
    from transferctl.config.schema import Data
    from transferctl.data import load_data

    data = Data.model_validate(
        {"source": "digits", "limit": 64, "image_size": [16, 16], "augment": RECIPE}
    )
    bundle = load_data(data, seed=3)
    images, labels = next(iter(bundle.training()))
    labels = np.asarray(labels)
    assert np.allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert (labels.max(axis=1) < 0.999).any()  # some images are mixed
    pixels = np.asarray(images)
    assert pixels.shape == (32, 16, 16, 3) and np.isfinite(pixels).all()


def test_ema_is_the_average_and_a_checkpoint_resumes_it_exactly(tmp_path: Path) -> None:
    """A tiny real model: the model holds the average of the raw weights after every step
    (computed here by hand), and a fit resumed from transferctl's checkpoint continues with the
    same average and raw weights, bit for bit."""
    from transferctl import runtime
    from transferctl.train import checkpoint, driver, ema
    from transferctl.train.checkpoint import TrainState

    keras = runtime.keras()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 64), 3)

    def make() -> Any:
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        optimizer = keras.optimizers.Adam(1e-2, **ema.optimizer_options(0.8))
        model.compile(optimizer=optimizer, loss="categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)
        return model

    by_hand: list[Any] = []

    callback: Any = keras.callbacks.Callback

    class Raw(callback):  # the raw weights, as each step leaves them
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            raw = [np.array(v) for v in self.model.trainable_variables]
            pairs = zip(by_hand or raw, raw, strict=True)
            by_hand[:] = [0.8 * a + 0.2 * r for a, r in pairs] if by_hand else raw

    def fit(model: Any, first: int, last: int, *extra: Any) -> None:
        callbacks = [*extra, *ema.callbacks(model)]
        model.fit(x, y, batch_size=16, epochs=last, initial_epoch=first, shuffle=False,
                  callbacks=callbacks, verbose=0)  # fmt: skip

    model, raw = make(), Raw()
    fit(model, 0, 1, raw)
    state = TrainState(epochs_done=1)
    checkpoint.save(model, tmp_path, state)
    checkpoint.wait()
    fit(model, 1, 2, raw)
    for variable, average in zip(model.trainable_variables, by_hand, strict=True):
        np.testing.assert_allclose(np.array(variable), average, atol=1e-6)

    resumed = make()
    driver.restore(resumed, tmp_path, state)
    fit(resumed, 1, 2)
    for left, right in zip(model.variables, resumed.variables, strict=True):
        assert np.array_equal(np.array(left), np.array(right))
    optimizer_state = zip(model.optimizer.variables, resumed.optimizer.variables, strict=True)
    assert all(np.array_equal(np.array(a), np.array(b)) for a, b in optimizer_state)


def _digit_png(path: Path, index: int, mirrored: bool = False) -> Path:
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[index] * 15).astype(np.uint8)
    Image.fromarray(pixels[:, ::-1] if mirrored else pixels).convert("RGB").save(path)
    return path


def test_evaluate_and_predict_with_tta(recipe_run: dict[str, Any], cli: Any) -> None:
    run, work = recipe_run["run"], recipe_run["work"]
    assert recipe_run["resumed"].exit_code == 0

    plain = cli("evaluate", run, "--split", "val")
    assert plain.exit_code == 0, plain.output
    assert json.loads((run / "eval/val/metrics.json").read_text(encoding="utf-8"))["tta"] is None
    evaluated = cli("evaluate", run, "--split", "val", "--tta")
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / "eval/val/metrics.json").read_text(encoding="utf-8"))
    assert metrics["tta"]["views"] == ["original", "horizontal_flip"]
    assert "data.augment.flip: none" in evaluated.stderr  # mirror images are new to this model

    image = _digit_png(work / "three.png", 3)
    mirror = _digit_png(work / "three-mirrored.png", 3, mirrored=True)

    def probabilities(*args: Any) -> list[dict[str, float]]:
        result = cli("predict", run, *args, "--top-k", "10", "--json")
        assert result.exit_code == 0, result.output
        assert ("data.augment.flip: none" in result.stderr) == ("--tta" in args)
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        return [{p["label"]: p["probability"] for p in line["predictions"]} for line in lines]

    original, mirrored = probabilities(image, mirror)
    (averaged,) = probabilities(image, "--tta")
    for label, value in averaged.items():
        assert value == pytest.approx((original[label] + mirrored[label]) / 2, abs=2e-6)


def test_recipe_values_are_checked(cli: Any, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", tiny_config())
    result = cli(
        "validate", path, "--set", "data.augment.cutmix=1.5", "--set", "train.ema=1",
        "--set", "data.augment.randaugment.ops=0",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "error: data.augment.cutmix: expected a number at most 1.0; got 1.5" in result.stderr
    assert "error: train.ema: expected a number less than 1.0; got 1" in result.stderr
    assert "error: data.augment.randaugment.ops:" in result.stderr
    switched = cli("validate", path, "--set", "data.augment.randaugment=true")
    assert switched.exit_code == 0 and "randaugment: {ops: 2, magnitude: 0.5}" in switched.stdout
