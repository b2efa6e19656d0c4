"""In-memory data (digits, CIFAR) and single images are resized the same way."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_in_memory_batches_match_the_single_image_path_used_by_predict() -> None:
    from transferctl import runtime
    from transferctl.config.schema import Data
    from transferctl.data import load_data
    from transferctl.data.pipeline import resize

    tf = runtime.tf()
    bundle = load_data(Data(source="digits", image_size=(40, 24), validation_split=0.2), seed=0)
    images, _ = next(iter(bundle.plain("val")))
    raw = bundle.examples["val"].images[: images.shape[0]]
    one_by_one = np.stack([resize(tf.constant(image), (40, 24)).numpy() for image in raw])
    assert images.shape[1:] == (40, 24, 3)
    np.testing.assert_array_equal(images.numpy(), one_by_one)


def test_every_dataset_a_phase_reads_runs_with_tf_data_autotuning_off(image_folder) -> None:
    """Autotuning on, the iterator of an epoch sometimes waited idle for up to tens of seconds
    when the next epoch replaced it (bench/README.md, "Idle epochs")."""
    from transferctl.config.schema import Data
    from transferctl.data import load_data
    from transferctl.model.batchnorm import statistics_images
    from transferctl.train import feature_cache

    folder = load_data(
        Data(source="folder", path=image_folder, image_size=(16, 16), validation_split=0.25),
        seed=0,
    )
    digits = load_data(Data(source="digits", image_size=(16, 16), validation_split=0.2), seed=0)
    features = feature_cache.Features(
        {"train": np.zeros((6, 4), np.float32)}, {"train": np.eye(3, dtype=np.float32)[[0] * 6]}, 0
    )
    datasets = {
        "folder train": folder.training(),
        "folder validation": folder.validation(),
        "folder statistics": statistics_images(folder, 8, cache=True),
        "digits train": digits.training(),
        "digits validation": digits.validation(),
        "cached features": feature_cache.training_dataset(features, 2, seed=0),
    }
    autotuned = [name for name, data in datasets.items() if data.options().autotune.enabled]
    assert autotuned == []
    images, _ = next(iter(datasets["folder train"]))
    assert images.shape[1:] == (16, 16, 3)
