"""`transferctl predict`: run directories and .keras files, every image format, batching,
skipped files and their exit code, and the same top-1 as `evaluate`."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import COLORS, make_image_folder

pytestmark = pytest.mark.slow


def pixels(color: str, seed: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 20, size=(*size, 3))
    return np.clip(np.array(COLORS[color], np.float32) + noise, 0, 255).astype(np.uint8)


def mixed_folder(root: Path) -> dict[str, str | None]:
    """Images in every mode and format predict reads, and files it must skip or leave out.

    Returns file name (relative) -> the colour it shows (None: no single colour).
    """
    (root / "nested" / "deeper").mkdir(parents=True)
    expected: dict[str, str | None] = {}

    def save(name: str, image: Image.Image, color: str | None, **options: Any) -> None:
        image.save(root / name, **options)
        expected[name] = color

    save("red.png", Image.fromarray(pixels("red", 1)), "red")
    save("green.jpg", Image.fromarray(pixels("green", 2)), "green", quality=95)
    save("gray.jpg", Image.fromarray(pixels("blue", 3)).convert("L"), None)
    save("green_rgba.png", Image.fromarray(pixels("green", 4)).convert("RGBA"), "green")
    save("blue_cmyk.jpg", Image.fromarray(pixels("blue", 5)).convert("CMYK"), "blue")
    save("red.webp", Image.fromarray(pixels("red", 6)), "red", quality=95)
    save("blue.bmp", Image.fromarray(pixels("blue", 7)), "blue")
    save("green_palette.gif", Image.fromarray(pixels("green", 8)).convert("P"), "green")
    save("nested/deeper/red.tiff", Image.fromarray(pixels("red", 9)), "red")
    save("nested/BLUE.PNG", Image.fromarray(pixels("blue", 10, (300, 200))), "blue")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / "notes.txt").write_text("not an image, and not named like one")
    (root / ".hidden.png").write_bytes(b"macOS metadata")
    return expected


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_mixed_formats_one_result_per_readable_image(
    tiny_run: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    expected = mixed_folder(folder)
    result = cli("predict", tiny_run, folder, "--top-k", "2", "--json")

    assert result.exit_code == 3, result.output
    lines = json_lines(result.stdout)
    by_name = {str(Path(line["path"]).relative_to(folder)): line for line in lines}
    assert sorted(by_name) == sorted(expected)  # recursive; no hidden file, no .txt
    assert [line["path"] for line in lines] == sorted(line["path"] for line in lines)
    for name, line in by_name.items():
        predictions = line["predictions"]
        assert len(predictions) == 2
        assert {item["label"] for item in predictions} <= {"blue", "green", "red"}
        assert predictions[0]["probability"] >= predictions[1]["probability"] > 0.0
        if expected[name] is not None:  # grayscale shows no colour; every other file does
            assert predictions[0]["label"] == expected[name], (name, predictions)
    corrupt = folder / "corrupt.jpg"
    assert f"skipped {corrupt}: " in result.stderr
    assert "1 of 11 file(s) could not be read and were skipped (exit code 3)" in result.stderr
    assert "notes.txt" not in result.output and ".hidden" not in result.output
    assert "Input file read error" not in result.stderr  # libjpeg's own line is replaced


def test_top1_matches_evaluate_for_the_same_images(tiny_run: Path, cli: Callable[..., Any]) -> None:
    evaluation = cli("evaluate", tiny_run, "--split", "test")
    assert evaluation.exit_code == 0, evaluation.output
    with open(tiny_run / "eval" / "test" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))

    # the .keras file, the images named one by one
    result = cli("predict", tiny_run / "model.keras", *[row["image"] for row in rows], "--json")
    assert result.exit_code == 0, result.output
    lines = json_lines(result.stdout)
    assert [line["path"] for line in lines] == [row["image"] for row in rows]
    for line, row in zip(lines, rows, strict=True):
        top = line["predictions"][0]
        assert top["label"] == row["predicted_label"], row["image"]
        # the same decoding and resizing as training, not merely the same winner
        assert top["probability"] == pytest.approx(float(row["confidence"]), abs=1e-4)
        assert len(line["predictions"]) == 3  # --top-k 5 capped at the 3 classes


def test_table_output(tiny_run: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    Image.fromarray(pixels("green", 20)).save(tmp_path / "leaf.png")
    result = cli("predict", tiny_run, tmp_path / "leaf.png", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    table = result.stdout
    assert "leaf.png" in table
    assert "#1" in table and "#2" in table and "#3" not in table
    (row,) = [line for line in table.splitlines() if "leaf.png" in line]
    assert row.split("│")[2].split()[0] == "green"
    assert "%" in row


def test_images_are_predicted_in_batches(
    tiny_run: Path, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transferctl.predict import KerasClassifier

    batch_sizes: list[int] = []
    original = KerasClassifier.predict_batch

    def counting(self: KerasClassifier, images: np.ndarray) -> np.ndarray:
        batch_sizes.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(KerasClassifier, "predict_batch", counting)
    folder = make_image_folder(tmp_path / "many", per_class=7, seed=4)  # 21 images
    result = cli("predict", tiny_run, folder, "--json")
    assert result.exit_code == 0, result.output
    assert len(json_lines(result.stdout)) == 21
    assert batch_sizes == [16, 5]  # the run's data.batch_size


def test_bad_input(tiny_run: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(pixels("red", 30)).save(image)

    missing_model = cli("predict", tmp_path / "no-run", image)
    assert missing_model.exit_code == 2
    assert missing_model.stderr.startswith(f"error: RUN_DIR|MODEL: {tmp_path / 'no-run'} not found")

    not_a_model = tmp_path / "just-a-folder"
    not_a_model.mkdir()
    result = cli("predict", not_a_model, image)
    assert result.exit_code == 2
    assert "is neither a run directory (no model.keras) nor a SavedModel" in result.stderr

    missing_image = cli("predict", tiny_run, tmp_path / "nope.jpg")
    assert missing_image.exit_code == 2
    assert missing_image.stderr == (
        f"error: IMAGE_OR_FOLDER: {tmp_path / 'nope.jpg'} not found; check the path\n"
    )

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    result = cli("predict", tiny_run, empty)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: IMAGE_OR_FOLDER: {empty} holds no images (")

    result = cli("predict", tiny_run, image, "--top-k", "0")
    assert result.exit_code == 2
    assert "error: --top-k: expected a whole number >= 1; got 0" in result.stderr

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"")
    result = cli("predict", tiny_run, junk)
    assert result.exit_code == 2
    assert f"skipped {junk}: the file is empty" in result.stderr
    assert "error: IMAGE_OR_FOLDER: none of the 1 file(s) is a readable image" in result.stderr
    assert "Traceback" not in result.output
