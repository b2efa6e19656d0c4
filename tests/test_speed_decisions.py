"""Speed decisions that must not change results: the decoded-image cache of the training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image_folder
from transferctl.data import pipeline, sources


@pytest.mark.parametrize(
    ("count", "size", "budget", "fits"),
    [
        (1000, (64, 64), "256", True),  # 47 MiB
        (20000, (96, 96), "256", False),  # 2.1 GiB
        (1000, (64, 64), "0", False),  # turned off
        (1000, (64, 64), "10", False),
        (0, (64, 64), "256", False),
    ],
)
def test_decode_cache_fits_the_budget(
    count: int, size: tuple[int, int], budget: str, fits: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pipeline.DECODE_CACHE_ENV, budget)
    assert pipeline.decode_cache_fits(count, size) is fits


def test_decode_cache_default_and_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pipeline.DECODE_CACHE_ENV, raising=False)
    assert pipeline.decode_cache_budget() == pipeline.DECODE_CACHE_MIB * 2**20
    monkeypatch.setenv(pipeline.DECODE_CACHE_ENV, "lots")
    assert pipeline.decode_cache_budget() == pipeline.DECODE_CACHE_MIB * 2**20


def _epochs(tmp_path: Path, budget: str, monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    monkeypatch.setenv(pipeline.DECODE_CACHE_ENV, budget)
    root = tmp_path / "images"
    if not root.exists():
        make_image_folder(root, per_class=7)
    examples = sources.load_folder(root)[0]["train"]
    dataset = pipeline.make_dataset(examples, (24, 24), 5, 3, shuffle_seed=3)
    return [np.concatenate([images.numpy() for images, _ in dataset]) for _ in range(2)]


def test_cached_training_images_are_the_same_in_the_same_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    streamed = _epochs(tmp_path, "0", monkeypatch)
    cached = _epochs(tmp_path, "256", monkeypatch)
    assert not np.array_equal(streamed[0], streamed[1])  # reshuffled every epoch
    for left, right in zip(streamed, cached, strict=True):
        np.testing.assert_array_equal(left, right)
