"""Offline: ImageNet/CIFAR requests fail fast and name the file; a seeded cache file works."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_config, write_config

pytestmark = pytest.mark.slow

MOBILENET_V2_96 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"


def _offline_env(keras_home: Path) -> dict[str, str]:
    env = dict(os.environ, KERAS_HOME=str(keras_home))
    # a proxy that cannot exist makes the network unreachable even where there is one
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    return env


def _finetune(config: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "transferctl", "finetune", str(config), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return result, time.perf_counter() - started


def test_imagenet_weights_offline_fail_fast_with_the_file_to_place(tmp_path: Path) -> None:
    config = tiny_config(
        model={"backbone": "mobilenet_v2", "weights": "imagenet"},
        data={"image_size": [96, 96], "limit": 40, "source": "digits"},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    result, seconds = _finetune(write_config(tmp_path / "c.yaml", config), _offline_env(tmp_path))
    assert result.returncode == 2, result.stderr
    expected = tmp_path / "models" / MOBILENET_V2_96
    error = result.stderr.strip().splitlines()[-1]  # Keras announces the download first
    assert error.startswith("error: model.weights: cannot download " + MOBILENET_V2_96)
    assert f"put the file at {expected}" in error
    assert "Traceback" not in result.stderr
    assert seconds < 60  # bounded (measured ~6-9s including TensorFlow's import)
    assert not (tmp_path / "runs").exists()


def test_cifar_offline_fails_fast_with_the_archive_to_place(tmp_path: Path) -> None:
    config = tiny_config(data={"source": "cifar10", "limit": None}, output={"runs_dir": "runs"})
    config["data"].pop("limit")
    result, seconds = _finetune(write_config(tmp_path / "c.yaml", config), _offline_env(tmp_path))
    assert result.returncode == 2, result.stderr
    expected = tmp_path / "datasets" / "cifar-10-batches-py-target_archive"
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: data.source: cannot download ")
    assert f"put the file at {expected}" in error
    assert seconds < 60


def test_seeded_imagenet_cache_works_offline(tmp_path: Path) -> None:
    """Keras does not hash-check MobileNetV2's file, so a test can seed the cache with it."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    seeded = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(96, 96, 3)
    )
    cache = tmp_path / "models"
    cache.mkdir()
    with h5py.File(cache / MOBILENET_V2_96, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, seeded)

    config = tiny_config(
        model={"backbone": "mobilenet_v2", "weights": "imagenet", "freeze": "all"},
        data={"image_size": [96, 96], "limit": 40, "source": "digits"},
        train={"phases": [{"name": "head", "epochs": 1, "learning_rate": 1e-3}]},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    result, _ = _finetune(write_config(tmp_path / "c.yaml", config), _offline_env(tmp_path))
    assert result.returncode == 0, result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])

    import transferctl.model.preprocess  # noqa: F401

    trained = keras.saving.load_model(str(run / "model.keras"), compile=False)
    loaded = trained.get_layer("backbone").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(seeded.get_weights(), loaded, strict=True))
