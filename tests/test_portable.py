"""A run's model.keras loads with plain Keras; runs written by transferctl 0.1 still work.

0.1 runs hold the registered `BackbonePreprocess` layer: they are made here by the old code
path itself (the classifier built with that layer), interrupted mid-run, then resumed, evaluated,
predicted and exported by this version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import interrupt_after_commit, tiny_config, write_config

pytestmark = pytest.mark.slow

PLAIN_KERAS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    model = keras.saving.load_model(sys.argv[1], compile=False, safe_mode=True)
    data = np.load(sys.argv[2])
    probabilities = model.predict(data["images"], verbose=0)
    accuracy = float((probabilities.argmax(axis=1) == data["labels"]).mean())
    leaked = sorted(name for name in sys.modules if name.split(".")[0] == "transferctl")
    print(json.dumps({"accuracy": accuracy, "transferctl_modules": leaked}))
    """
)


def _split_arrays(run: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from transferctl.config.loader import load_config
    from transferctl.data import load_data

    config = load_config(run / "config.yaml")
    data = load_data(config.data, config.seed)
    images, labels = [], []
    for batch, onehot in data.plain(split):
        images.append(batch.numpy())
        labels.append(np.argmax(onehot.numpy(), axis=1))
    return np.concatenate(images), np.concatenate(labels)


def test_model_keras_loads_in_plain_keras_and_reproduces_evaluate(
    tiny_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    result: Any = cli("evaluate", tiny_run, "--split", "val")
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tiny_run / "eval" / "val" / "metrics.json").read_text())

    images, labels = _split_arrays(tiny_run, "val")
    arrays = tmp_path / "val.npz"
    np.savez(arrays, images=images, labels=labels)
    script = tmp_path / "plain_keras.py"
    script.write_text(PLAIN_KERAS_SCRIPT)
    # run from tmp_path with a clean sys.path entry, so `import transferctl` is not even possible
    # by accident through the working directory
    completed = subprocess.run(
        [sys.executable, str(script), str(tiny_run / "model.keras"), str(arrays)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    assert found["transferctl_modules"] == []
    assert found["accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-6)

    with zipfile.ZipFile(tiny_run / "model.keras") as archive:
        config = archive.read("config.json").decode()
    assert "BackbonePreprocess" not in config
    assert '"registered_name": "transferctl' not in config


def test_the_preprocessing_never_trains(tiny_run: Path) -> None:
    import keras

    model = keras.saving.load_model(str(tiny_run / "model.keras"), compile=False)
    layer = model.get_layer("preprocess")
    assert not layer.trainable
    assert layer.__class__.__module__.startswith("keras.")


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "none"])
def test_built_in_preprocessing_computes_what_the_old_layer_did(mode: str) -> None:
    from transferctl.model.preprocess import BackbonePreprocess, preprocess_layer

    pixels = np.random.default_rng(3).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    old = np.asarray(BackbonePreprocess(mode)(pixels))
    new = np.asarray(preprocess_layer(mode)(pixels))
    if mode == "caffe":
        np.testing.assert_array_equal(new, old)  # a permutation kernel: bit-identical
    else:
        np.testing.assert_allclose(new, old, atol=2e-5)


@pytest.fixture
def old_code_path(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Build and save models as transferctl 0.1 did: the registered layer, kept in model.keras."""
    from transferctl.model import classifier, preprocess

    build = classifier.build_classifier

    def legacy_build(*args: Any, **kwargs: Any) -> Any:
        return build(*args, **{**kwargs, "legacy": True})

    monkeypatch.setattr(classifier, "build_classifier", legacy_build)
    monkeypatch.setattr(preprocess, "without_legacy_layer", lambda model: model)
    return monkeypatch


def _old_run(tmp_path: Path, cli: Callable[..., Any], patch: pytest.MonkeyPatch) -> Path:
    """A 0.1 run interrupted by Ctrl-C after its first epoch was committed."""

    interrupt_after_commit(patch, lambda state: state.epochs_done == 1 and not state.finished)
    config = tiny_config(
        data={"limit": 200, "validation_split": 0.2, "test_split": 0.2},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    run = tmp_path / "old-run"
    result = cli("finetune", write_config(tmp_path / "old.yaml", config), "--run-dir", run, "-q")
    assert result.exit_code == 130, result.output
    patch.undo()
    weights = json.loads((run / "checkpoints" / "state.json").read_text())["weights"]
    from transferctl.model.preprocess import is_legacy_checkpoint

    assert is_legacy_checkpoint(run / "checkpoints" / weights)
    return run


def test_a_run_of_the_old_version_resumes_evaluates_predicts_and_exports(
    tmp_path: Path, cli: Callable[..., Any], old_code_path: pytest.MonkeyPatch
) -> None:
    run = _old_run(tmp_path, cli, old_code_path)

    resumed: Any = cli("finetune", "--resume", run, "-q")
    assert resumed.exit_code == 0, resumed.output
    with zipfile.ZipFile(run / "model.keras") as archive:
        assert "BackbonePreprocess" not in archive.read("config.json").decode()
    rows = (run / "history.csv").read_text().strip().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2"]

    evaluated: Any = cli("evaluate", run)
    assert evaluated.exit_code == 0, evaluated.output
    exported: Any = cli("export", run, "--format", "keras", "--format", "saved_model")
    assert exported.exit_code == 0, exported.output


@pytest.mark.extended  # the old version's run above resumes, evaluates, predicts, exports
def test_a_finished_run_of_the_old_version_still_loads_everywhere(
    tmp_path: Path, cli: Callable[..., Any], old_code_path: pytest.MonkeyPatch, image_folder: Path
) -> None:
    config = tiny_config(
        image_folder,
        data={"validation_split": 0.25, "test_split": 0.15},
        train={"phases": [{"epochs": 1, "learning_rate": 2e-3}]},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    run = tmp_path / "old-finished"
    result: Any = cli("finetune", write_config(tmp_path / "f.yaml", config), "--run-dir", run, "-q")
    assert result.exit_code == 0, result.output
    old_code_path.undo()
    assert "name: phase1" in (run / "config.yaml").read_text()  # an unnamed phase trains
    with zipfile.ZipFile(run / "model.keras") as archive:
        assert "BackbonePreprocess" in archive.read("config.json").decode()

    evaluated: Any = cli("evaluate", run, "--split", "val")
    assert evaluated.exit_code == 0, evaluated.output
    predicted: Any = cli("predict", run, image_folder / "red", "--json", "--top-k", "1")
    assert predicted.exit_code == 0, predicted.output
    exported: Any = cli("export", run, "--format", "keras")  # saved_model: the test above
    assert exported.exit_code == 0, exported.output
    with zipfile.ZipFile(run / "export" / "model.keras") as archive:
        assert "BackbonePreprocess" not in archive.read("config.json").decode()
