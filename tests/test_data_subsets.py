"""`data.classes` (a subset of the classes, in order) and `data.per_class` (few labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import make_image_folder, tiny_config, write_config
from transferctl.config.loader import load_config
from transferctl.data import load_data


def _bundle(tmp_path: Path, **data: object):
    config = tiny_config(data={"limit": None, **data})
    return load_data(load_config(write_config(tmp_path / "c.yaml", config)).data, 7)


def test_classes_keep_those_digits_relabelled_in_order(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    bundle = _bundle(tmp_path, classes=[7, 3], test_split=0.2)
    assert bundle.class_names == ["7", "3"]
    digits = load_digits()
    scans = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for split in ("train", "val", "test"):
        examples = bundle.examples[split]
        assert set(np.unique(examples.labels)) == {0, 1}
        for label, digit in ((0, 7), (1, 3)):
            images = examples.images[examples.labels == label][..., 0]
            wanted = {scan.tobytes() for scan in scans[digits.target == digit]}
            assert all(image.tobytes() in wanted for image in images), (split, digit)
    total = sum(len(bundle.examples[split]) for split in ("train", "val", "test"))
    assert total == int(np.sum((digits.target == 7) | (digits.target == 3)))


def test_per_class_thins_training_only_by_seed(tmp_path: Path) -> None:
    whole = _bundle(tmp_path, test_split=0.2)
    few = _bundle(tmp_path, test_split=0.2, per_class=5)
    assert np.bincount(few.examples["train"].labels).tolist() == [5] * 10
    for split in ("val", "test"):  # held-out splits stay whole
        assert np.array_equal(few.examples[split].images, whole.examples[split].images)
    # the kept images come from the training split, and the same config keeps the same ones
    kept = {image.tobytes() for image in few.examples["train"].images}
    assert kept <= {image.tobytes() for image in whole.examples["train"].images}
    again = _bundle(tmp_path, test_split=0.2, per_class=5)
    assert np.array_equal(again.examples["train"].images, few.examples["train"].images)
    config = tiny_config(seed=8, data={"limit": None, "test_split": 0.2, "per_class": 5})
    other_seed = load_data(load_config(write_config(tmp_path / "s.yaml", config)).data, 8)
    assert not np.array_equal(other_seed.examples["train"].images, few.examples["train"].images)


def test_folder_classes_in_order_and_other_classes_ignored(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "colors", per_class=10)
    (root / "green" / "broken.png").write_bytes(b"")  # a bad file in a class left out
    config = tiny_config(root, data={"classes": ["blue", "red"], "on_bad_file": "fail"})
    bundle = load_data(load_config(write_config(tmp_path / "c.yaml", config)).data, 7)
    assert bundle.class_names == ["blue", "red"]
    assert bundle.bad_files == []
    paths = np.concatenate([bundle.examples[s].paths for s in bundle.examples])
    labels = np.concatenate([bundle.examples[s].labels for s in bundle.examples])
    assert len(paths) == 20
    for path, label in zip(paths, labels, strict=True):
        assert Path(path).parent.name == ["blue", "red"][label]


def test_classes_and_per_class_are_in_the_resolved_config(cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tiny_config(data={"classes": [5, 6]}))
    result = cli("validate", config, "--set", "data.per_class=3")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)["data"]
    assert data["classes"] == ["5", "6"] and data["per_class"] == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"classes": [3, "x"]},
            "error: data.classes: unknown class(es) 'x'; the source has 0, 1, 2, 3, 4, 5, 6, 7, 8, "
            "9\n",
        ),
        (
            {"source": "cifar10", "limit": None, "classes": ["cat", "plane"]},
            "error: data.classes: unknown class(es) 'plane' (did you mean 'airplane'?); the "
            "source has airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck\n",
        ),
        (
            {"source": "cifar100", "limit": None, "classes": ["apple", "mapel_tree"]},
            "error: data.classes: unknown class(es) 'mapel_tree' (did you mean 'maple_tree'?); "
            "the source has apple, aquarium_fish, baby, bear, beaver, bed, bee, beetle, bicycle, "
            "bottle, ... (100 classes)\n",
        ),
    ],
)
def test_unknown_classes_fail_validate(cli, tmp_path: Path, data: dict, message: str) -> None:
    result = cli("validate", write_config(tmp_path / "c.yaml", tiny_config(data=data)))
    assert result.exit_code == 2
    assert result.stderr == message


def test_unknown_folder_class_fails_validate(cli, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "colors", per_class=2)
    config = write_config(tmp_path / "c.yaml", tiny_config(root, data={"classes": ["red", "pink"]}))
    result = cli("validate", config)
    assert result.exit_code == 2
    assert result.stderr == (
        "error: data.classes: unknown class(es) 'pink'; the source has blue, green, red\n"
    )


def test_a_listed_class_without_usable_images_is_an_error_at_load(tmp_path: Path) -> None:
    from transferctl.errors import UserError

    root = make_image_folder(tmp_path / "colors", per_class=4)
    for image in (root / "green").iterdir():
        image.write_bytes(b"")
    config = tiny_config(root, data={"classes": ["red", "green", "blue"]})
    with pytest.raises(UserError, match=r"^data\.classes: class\(es\) 'green' have no usable"):
        load_data(load_config(write_config(tmp_path / "c.yaml", config)).data, 7)
