"""`transferctl doctor DATA_PATH`: the folder audit, printed, without training or TensorFlow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import make_image_folder


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """train/ val/ test/; blue has 5 training images to red's and green's 20; one image of
    train/ is copied into test/ (leakage), one duplicated within train/, one is tiny."""
    root = tmp_path / "photos"
    make_image_folder(root / "train", per_class=20, seed=1)
    make_image_folder(root / "val", per_class=4, seed=2)
    make_image_folder(root / "test", per_class=4, seed=3)
    for extra in sorted((root / "train" / "blue").iterdir())[5:]:
        extra.unlink()
    shutil.copy(root / "train" / "red" / "red_000.png", root / "test" / "red" / "copied.png")
    shutil.copy(root / "train" / "green" / "green_000.jpg", root / "train" / "green" / "again.jpg")
    Image.new("RGB", (12, 9), (200, 40, 40)).save(root / "val" / "red" / "thumbnail.png")
    (root / "train" / "red" / "broken.jpg").write_bytes(b"")
    return root


def test_doctor_reports_counts_imbalance_duplicates_and_suggests_class_weights(
    cli: Callable[..., Any], split_folder: Path
) -> None:
    result = cli("doctor", split_folder)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "layout: train/ val/ test/" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:2] == "  "}
    assert rows["blue"] == ["5", "4", "4"]
    assert rows["green"] == ["21", "4", "4"]  # 20 and the copy
    assert rows["red"] == ["20", "5", "5"]  # not broken.jpg; the thumbnail (val), the copy (test)
    assert "imbalance (train, largest/smallest class): 4.20" in out
    assert "set train.class_weight: balanced" in out
    # scikit-learn's balanced weights: 46 / (3 * count)
    assert "weights it applies: blue 3.07, green 0.73, red 0.77" in out
    assert "across splits (leakage" in out
    assert "train/red/red_000.png = test/red/copied.png" in out
    assert "train/green/again.jpg = train/green/green_000.jpg" in out
    assert "val/red/thumbnail.png: 12x9" in out
    assert "train/red/broken.jpg: empty file" in out


def test_doctor_on_a_clean_balanced_folder_suggests_nothing(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    root = make_image_folder(tmp_path / "clean", per_class=6, formats=("png",))
    result = cli("doctor", root, "--test-split", "0.2")
    assert result.exit_code == 0, result.output
    assert "bad files: none" in result.stdout
    assert "exact duplicates: none" in result.stdout
    assert "class_weight" not in result.stdout
    assert "usable: 18 images in 3 classes; left out: 0" in result.stdout


def test_doctor_names_what_would_stop_finetune(cli: Callable[..., Any], tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "few", classes=("red", "green"), per_class=2)
    (root / "empty").mkdir()
    result = cli("doctor", root, "--validation-split", "0.2", "--test-split", "0.2")
    assert result.exit_code == 0, result.output  # readable: findings are not failures
    assert "empty class folders: 1" in result.stdout
    assert "class 'green' has 2 image(s); validation_split 0.2 and test_split 0.2" in (
        result.stdout
    )


def test_doctor_on_a_missing_path_or_no_class_folders_exits_2(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    result = cli("doctor", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: DATA_PATH: folder not found: {tmp_path / 'nowhere'}")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "flat" / "a.png")
    result = cli("doctor", tmp_path / "flat")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: DATA_PATH: ")
    assert "has no class sub-folders" in result.stderr


def test_doctor_never_imports_tensorflow(split_folder: Path) -> None:
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from transferctl.cli import app\n"
        f"r = CliRunner().invoke(app, ['doctor', {str(split_folder)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['doctor', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
