"""`transferctl report` and `report: true`: the page, its numbers, the label errors it finds, the
temperature predict and the exports apply, and the page as headless Chromium draws it."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import make_image_folder, tiny_config, write_config
from transferctl.cli import app

pytestmark = pytest.mark.slow

# training images filed under another colour: (class folder, image index, filed under)
MISFILED = [("red", 0, "blue"), ("red", 1, "green"), ("green", 2, "red"), ("blue", 3, "red")]


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A colour folder (train/ val/ test/) with four training images in the wrong class folder,
    trained with `report: true`: finetune writes the report at its end."""
    root = tmp_path_factory.mktemp("report")
    data = root / "colors"
    for split, count, seed in (("train", 24, 0), ("val", 10, 1), ("test", 10, 2)):
        make_image_folder(data / split, per_class=count, seed=seed)
    for folder, index, under in MISFILED:
        (image,) = (data / "train" / folder).glob(f"{folder}_{index:03d}.*")
        image.rename(data / "train" / under / image.name)
    config = tiny_config(
        data,
        backbone="mobilenet_v3_small",
        report=True,
        output={"runs_dir": str(root / "runs")},
    )
    result = CliRunner().invoke(app, ["finetune", str(write_config(root / "c.yaml", config))])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert f"report: {run / 'report' / 'index.html'}" in result.stderr
    return run


def test_the_page_and_its_numbers(reported: Path) -> None:
    folder = reported / "report"
    numbers = json.loads((folder / "report.json").read_text())
    assert numbers["split"]["name"] == "test"
    assert numbers["metrics"]["num_examples"] == 30
    assert set(numbers["metrics"]["per_class"]) == {"blue", "green", "red"}
    assert {"macro", "weighted"} <= set(numbers["metrics"])
    calibration = numbers["calibration"]
    assert calibration["fitted_on"] == "val (30 images)"
    assert {"temperature", "ece_before", "ece_after"} <= set(calibration)
    assert (
        json.loads((reported / "calibration.json").read_text())["temperature"]
        == (calibration["temperature"])
    )

    page = (folder / "index.html").read_text()
    for section in ("glance", "classes", "confusion", "mistakes", "calibration", "label-issues"):
        assert f'<section id="{section}">' in page
    # self-contained: every picture inline, nothing fetched, no script
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(href|src)="(https?:)?//', page)
    assert "<script" not in page


def test_the_misfiled_training_images_lead_label_issues_csv(reported: Path) -> None:
    with open(reported / "report" / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["rank", "path", "given_label", "suggested_label", "score", "flagged"]
    misfiled = {f"{under}/{folder}_{index:03d}" for folder, index, under in MISFILED}
    top = [Path(row["path"]) for row in rows[:8]]
    found = {f"{path.parent.name}/{path.stem}" for path in top} & misfiled
    assert len(found) >= 3, rows[:8]
    first = next(row for row in rows if Path(row["path"]).stem == "red_000")
    assert (first["given_label"], first["suggested_label"]) == ("blue", "red")


def test_predict_gives_the_calibrated_probabilities(
    reported: Path, cli: Callable[..., Any]
) -> None:
    from transferctl.model import temperature

    fitted = json.loads((reported / "calibration.json").read_text())["temperature"]
    assert fitted != 1.0  # else calibrated and raw probabilities could not be told apart
    images = sorted((reported.parent.parent / "colors" / "test" / "red").iterdir())[:3]

    def probabilities(target: Path) -> np.ndarray:
        answer = cli("predict", target, *images, "--json", "--top-k", "3")
        assert answer.exit_code == 0, answer.output
        rows = [json.loads(line)["predictions"] for line in answer.stdout.splitlines()]
        return np.array(
            [
                [
                    dict((p["label"], p["probability"]) for p in row)[name]
                    for name in ("blue", "green", "red")
                ]
                for row in rows
            ]
        )

    calibrated = probabilities(reported)  # the run: its temperature applied
    raw = probabilities(reported / "model.keras")  # the file as trained
    assert not np.allclose(calibrated, raw, atol=1e-3)
    assert calibrated == pytest.approx(temperature.apply(raw, fitted), abs=1e-4)


def test_a_damaged_calibration_file_is_one_line(
    reported: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(reported, run)
    (run / "calibration.json").write_text('{"temperature": -3}')
    answer = cli("predict", run, next((reported.parent.parent / "colors" / "test").rglob("*.*")))
    assert answer.exit_code == 2
    assert "calibration.json: temperature must be a number" in answer.stderr
    assert "Traceback" not in answer.output


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_headless_chromium_draws_the_page(reported: Path, tmp_path: Path) -> None:
    from PIL import Image

    page = (reported / "report" / "index.html").as_uri()
    common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    # no network: any fetch would fail, and the page must not need one
    common.append("--host-resolver-rules=MAP * ~NOTFOUND")
    dom = subprocess.run(
        [*common, "--dump-dom", page], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for title in ("The run at a glance", "Per class", "Worst mistakes", "Calibration"):
        assert title in dom
    shot = tmp_path / "page.png"
    subprocess.run(
        [*common, "--window-size=1200,2400", f"--screenshot={shot}", page],
        capture_output=True,
        timeout=60,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 100).mean() > 0.01  # text and pictures drawn in dark ink


def test_bad_arguments_are_one_line(
    reported: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    for args, message in (
        ((reported, "--split", "train"), "--split: expected one of test, val; got 'train'"),
        ((tmp_path,), "RUN_DIR:"),
    ):
        answer = cli("report", *args)
        assert answer.exit_code == 2, answer.output
        assert message in answer.stderr
        assert "Traceback" not in answer.output
