"""The checkpoint weights writer: files `load_weights` reads as Keras's own, never stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from transferctl import runtime
from transferctl.train import weights_file

keras = runtime.keras()


def small_model(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    return model


def train(model: Any, steps: int = 2) -> None:
    rng = np.random.default_rng(steps)
    images = rng.random((8 * steps, 8, 8, 3)).astype("float32")
    model.fit(images, rng.integers(0, 3, 8 * steps), batch_size=8, epochs=1, verbose=0)


def tree(path: Path) -> dict[str, Any]:
    return weights_file._tree(h5py.File(path, "r"))


def values(model: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in model.weights] + [
        np.asarray(v) for v in model.optimizer.variables
    ]


def test_later_saves_write_what_keras_writes_with_current_values(tmp_path: Path) -> None:
    model = small_model()
    train(model)
    weights_file.save(model, tmp_path / "first.weights.h5")  # Keras's writer, layout checked
    assert weights_file._LAYOUTS[model] is not None
    assert weights_file._LAYOUTS[model].verified
    train(model, 3)  # new values in the same variables
    weights_file.save(model, tmp_path / "fast.weights.h5")
    model.save_weights(str(tmp_path / "keras.weights.h5"))
    assert tree(tmp_path / "fast.weights.h5") == tree(tmp_path / "keras.weights.h5")
    assert tree(tmp_path / "fast.weights.h5") != tree(tmp_path / "first.weights.h5")

    fresh = small_model(seed=1)
    train(fresh, 1)  # builds the optimizer, so load_weights restores its state too
    fresh.load_weights(str(tmp_path / "fast.weights.h5"))
    for ours, theirs in zip(values(fresh), values(model), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_new_optimizer_is_recorded_anew(tmp_path: Path) -> None:
    model = small_model()
    train(model)
    weights_file.save(model, tmp_path / "a.weights.h5")
    first = weights_file._LAYOUTS[model]
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    train(model)
    weights_file.save(model, tmp_path / "b.weights.h5")
    weights_file.save(model, tmp_path / "c.weights.h5")
    assert weights_file._LAYOUTS[model] is not first
    model.save_weights(str(tmp_path / "keras.weights.h5"))
    assert tree(tmp_path / "c.weights.h5") == tree(tmp_path / "keras.weights.h5")


@pytest.mark.parametrize("stored", ["array", "extra"])
def test_a_layer_storing_arrays_keeps_keras_writer(tmp_path: Path, stored: str) -> None:
    class Counted(keras.layers.Layer):
        """Stores a value computed at save time: a recorded layout would write it stale."""

        def build(self, shape: Any) -> None:
            self.total = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x: Any) -> Any:
            return x

        def save_own_variables(self, store: Any) -> None:
            if stored == "array":
                store["0"] = np.asarray(self.total) + 1.0
            else:
                store["0"] = self.total
                store["1"] = np.asarray(self.total) * 2.0

        def load_own_variables(self, store: Any) -> None:
            self.total.assign(store["0"][()] - (1.0 if stored == "array" else 0.0))

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Counted()(inputs)))
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    weights_file.save(model, tmp_path / "a.weights.h5")
    assert weights_file._LAYOUTS[model] is None
    model.layers[1].total.assign(5.0)
    weights_file.save(model, tmp_path / "b.weights.h5")
    model.save_weights(str(tmp_path / "keras.weights.h5"))
    assert tree(tmp_path / "b.weights.h5") == tree(tmp_path / "keras.weights.h5")


@pytest.mark.slow
def test_a_failed_background_write_stops_the_run_and_keeps_the_last_commit(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epoch checkpoints are written in a background thread: a failure there (a full disk)
    still ends the run, and what was committed before it still resumes."""
    from tests.conftest import tiny_config, write_config
    from transferctl.train import checkpoint

    config = tiny_config(
        train={"phases": [{"name": "only", "epochs": 3, "learning_rate": 2e-3}]},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    path = write_config(tmp_path / "c.yaml", config)
    real_write, calls = weights_file.write, []

    def full_disk_on_second(entries: Any, target: Path) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(entries, target)

    monkeypatch.setattr(weights_file, "write", full_disk_on_second)
    result: Any = cli("finetune", path, "--quiet")
    assert result.exit_code == 1
    assert "No space left on device" in result.output
    run = next((tmp_path / "runs").iterdir())
    state = checkpoint.load_state(run / "checkpoints")
    assert state is not None and state.epochs_done == 1  # epoch 2's commit failed
    checkpoint.verify_run_files(run, state)

    monkeypatch.setattr(weights_file, "write", real_write)
    resumed: Any = cli("finetune", "--resume", run, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load_state(run / "checkpoints").finished  # type: ignore[union-attr]


def test_a_large_model_is_written_from_its_variables_not_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = small_model()
    train(model)
    weights_file.save(model, tmp_path / "first.weights.h5")
    assert weights_file.snapshot(model) is not None
    monkeypatch.setattr(weights_file, "SNAPSHOT_MAX_BYTES", 100)
    assert weights_file.snapshot(model) is None  # checkpoint.save then writes synchronously
    train(model, 3)
    weights_file.save(model, tmp_path / "large.weights.h5")
    model.save_weights(str(tmp_path / "keras.weights.h5"))
    assert tree(tmp_path / "large.weights.h5") == tree(tmp_path / "keras.weights.h5")
