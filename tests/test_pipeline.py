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
