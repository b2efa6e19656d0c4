"""Discriminative learning rates: the backbone's steps really shrink, with every optimizer."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import tiny_config, write_config

pytestmark = pytest.mark.slow

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


def _tiny_model() -> tuple[Any, Any]:
    """A functional model whose nested `backbone` holds three Dense layers, and that backbone."""
    import keras

    inputs = keras.Input((8,))
    backbone = keras.Sequential(
        [
            keras.layers.Dense(16, activation="relu", name="low"),
            keras.layers.Dense(16, activation="relu", name="mid"),
            keras.layers.Dense(16, name="top"),
        ],
        name="backbone",
    )
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(backbone(inputs))
    return keras.Model(inputs, outputs), backbone


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype("float32")
    return x, np.eye(3, dtype="float32")[rng.integers(0, 3, 128)]


def _moves(optimizer: str, factors: dict[str, float]) -> dict[str, float]:
    """Mean |weight change| per layer after one epoch from the same start, data and order."""
    import keras

    from transferctl.config.schema import Train
    from transferctl.train.optimizers import make_optimizer

    keras.utils.set_random_seed(1)
    model, _ = _tiny_model()
    start = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in _layers(model)}
    train = Train(optimizer=optimizer, lr_schedule="cosine")
    model.compile(
        optimizer=make_optimizer(train, 1e-3, 8, rate_factors=factors),
        loss="categorical_crossentropy",
    )
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return {
        layer.name: float(
            np.mean(
                np.concatenate(
                    [
                        np.abs(w.numpy() - s).ravel()
                        for w, s in zip(layer.weights, start[layer.name], strict=True)
                    ]
                )
            )
        )
        for layer in _layers(model)
    }


def _layers(model: Any) -> list[Any]:
    return [*model.get_layer("backbone").layers, model.get_layer("head")]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_backbone_scale_scales_the_step_with_every_optimizer(optimizer: str) -> None:
    from transferctl.config.schema import Phase
    from transferctl.train.layer_rates import rate_factors

    _, backbone = _tiny_model()
    phase = Phase(epochs=1, learning_rate=1e-3, backbone_lr_scale=0.01)
    factors = rate_factors(backbone, phase)
    assert set(factors.values()) == {0.01} and len(factors) == 6  # 3 kernels, 3 biases

    plain, scaled = _moves(optimizer, {}), _moves(optimizer, factors)
    for name in ("low", "mid", "top"):
        assert plain[name] / scaled[name] == pytest.approx(100, rel=0.5), (name, plain, scaled)
    assert scaled["head"] / plain["head"] == pytest.approx(1, rel=0.3)


def test_layer_decay_gives_each_layer_its_depth_rate() -> None:
    from transferctl.config.schema import Phase
    from transferctl.train.layer_rates import layer_depths, rate_factors

    _, backbone = _tiny_model()
    assert layer_depths(backbone) == [3, 2, 1]
    factors = rate_factors(backbone, Phase(epochs=1, learning_rate=1e-3, layer_decay=0.1))
    assert factors["backbone/low/kernel"] == pytest.approx(1e-3)
    assert factors["backbone/top/bias"] == pytest.approx(0.1)
    moves = _moves("adam", factors)
    assert moves["head"] / moves["top"] == pytest.approx(10, rel=0.5)
    assert moves["top"] / moves["mid"] == pytest.approx(10, rel=0.5)
    assert moves["mid"] / moves["low"] == pytest.approx(10, rel=0.5)


def test_depth_counts_layers_with_weights_and_batchnorm_shares_its_layers_depth() -> None:
    import keras

    from transferctl.train.layer_rates import layer_depths

    backbone = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Conv2D(4, 3, name="conv2"),
            keras.layers.BatchNormalization(name="bn2"),
        ]
    )
    assert layer_depths(backbone) == [2, 2, None, 1, 1]


def test_a_checkpointed_scaled_optimizer_resumes_exactly(tmp_path: Path) -> None:
    """save_weights/load_weights carry the state; the factors and the schedule's offset come
    from the config again, so the next steps are bit-identical to uninterrupted ones."""
    import keras

    from transferctl.config.schema import Train
    from transferctl.train.optimizers import make_optimizer

    x, y = _data()
    train = Train(optimizer="adamw", lr_schedule="cosine")

    def compiled() -> Any:
        keras.utils.set_random_seed(3)
        model, _ = _tiny_model()
        factors = {"backbone/low/kernel": 0.01, "backbone/top/kernel": 0.1}
        model.compile(
            optimizer=make_optimizer(train, 1e-2, 24, rate_factors=factors, step_offset=8),
            loss="categorical_crossentropy",
        )
        model.optimizer.build(model.trainable_variables)
        return model

    first = compiled()
    assert type(first.optimizer).__name__ == "RateScaledAdamW"
    first.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "rates-resume.weights.h5"
    first.save_weights(str(path))
    rate = float(first.optimizer.learning_rate)
    first.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)

    second = compiled()
    second.load_weights(str(path))
    assert float(second.optimizer.learning_rate) == rate
    second.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first.optimizer.variables, second.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_schedule_continues_from_its_offset_and_adam_restarts_its_moments() -> None:
    import keras

    from transferctl.config.schema import Train
    from transferctl.train.optimizers import make_optimizer

    train = Train(optimizer="adam", lr_schedule="cosine")
    fresh = make_optimizer(train, 1e-3, 100, step_offset=50)
    assert type(fresh).__name__ == "RateScaledAdam"
    assert int(fresh.iterations) == 0  # bias correction suits the fresh moments
    assert float(fresh.learning_rate) == pytest.approx(0.5e-3)  # half-way down the cosine
    assert type(make_optimizer(train, 1e-3, 100)) is keras.optimizers.Adam
    constant = make_optimizer(Train(optimizer="adam"), 1e-3, 100, step_offset=50)
    assert type(constant) is keras.optimizers.Adam  # nothing to offset


# ----------------------------------------------------------------------------------------------
# through the CLI: the acceptance test on a real backbone
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run: the trained backbone both runs start from. (A random MobileNetV3
    with frozen BatchNorm would not do: its gradients are so small that Adam's epsilon, not
    its normalisation, sets the step.)"""
    from typer.testing import CliRunner

    from transferctl.cli import app

    work = tmp_path_factory.mktemp("rates-source")
    config = tiny_config(
        data={"limit": 64},
        train={"phases": [{"name": "source", "epochs": 1, "learning_rate": 2e-3}]},
        output={"runs_dir": str(work / "runs")},
    )
    result = CliRunner().invoke(app, ["finetune", str(write_config(work / "s.yaml", config)), "-q"])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def _one_epoch(
    cli: Callable[..., Any],
    tmp_path: Path,
    source: Path,
    optimizer: str,
    scale: float,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, float, float]:
    """Train one epoch from `source`'s backbone and the same seeded head; the run, and the mean
    |change| of the backbone's weights (BatchNorm aside: frozen) and of the head's."""
    import keras

    from transferctl.train import checkpoint

    saved: list[tuple[np.ndarray, np.ndarray]] = []
    save = checkpoint.save

    def record(model: Any, *args: Any, **kwargs: Any) -> None:
        save(model, *args, **kwargs)  # the phase's start, then the end of its epoch
        backbone = [
            weight.numpy().ravel()
            for layer in model.get_layer("backbone").layers
            if not isinstance(layer, keras.layers.BatchNormalization)
            for weight in layer.weights
        ]
        head = [weight.numpy().ravel() for weight in model.get_layer("predictions").weights]
        saved.append((np.concatenate(backbone), np.concatenate(head)))

    monkeypatch.setattr(checkpoint, "save", record)
    config = tiny_config(
        data={"limit": 64},
        model={"weights": str(source), "freeze": "none", "train_batchnorm": False},
        train={
            "optimizer": optimizer,
            "phases": [
                {"name": "tune", "epochs": 1, "learning_rate": 1e-3, "backbone_lr_scale": scale}
            ],
        },
        output={"runs_dir": str(tmp_path / "runs")},
    )
    path = write_config(tmp_path / f"{optimizer}-{scale}.yaml", config)
    result = cli("finetune", path, "-q")
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    (backbone_start, head_start), (backbone_end, head_end) = saved[0], saved[-1]
    return (
        Path(result.stdout.strip().splitlines()[-1]),
        float(np.mean(np.abs(backbone_end - backbone_start))),
        float(np.mean(np.abs(head_end - head_start))),
    )


def test_backbone_lr_scale_moves_the_backbone_100x_less_with_adam(
    cli: Callable[..., Any], tmp_path: Path, source_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance test, through the CLI (every optimizer: the tests above, in-process)."""
    optimizer = "adam"
    _, full_backbone, full_head = _one_epoch(cli, tmp_path, source_run, optimizer, 1.0, monkeypatch)
    run, small_backbone, small_head = _one_epoch(
        cli, tmp_path, source_run, optimizer, 0.01, monkeypatch
    )
    ratio = full_backbone / small_backbone
    print(f"{optimizer}: backbone {ratio:.1f}x less, head x{small_head / full_head:.2f}")
    assert 50 < ratio < 200, (full_backbone, small_backbone)
    assert small_head / full_head == pytest.approx(1, rel=0.3)

    import keras

    # model.keras stays plain Keras: it even compiles from its own config
    keras.saving.load_model(str(run / "model.keras"))
    with zipfile.ZipFile(run / "model.keras") as archive:
        assert "RateScaled" not in archive.read("config.json").decode()
