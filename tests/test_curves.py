"""curves.png: drawn at the end of every training, legible, and never fatal."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from transferctl.rundir.curves import load_history, write_run_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = ("epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


def assert_curves_png(path: Path) -> None:
    """A real PNG of a sensible size (about 10x4 inches at 100-150 dpi)."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 900 <= width <= 1600 and 350 <= height <= 700, image.size


def _write_history(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow((*COLUMNS, "seconds"))
        writer.writerows(rows)


@pytest.mark.slow
def test_finetune_writes_curves_png(tiny_run: Path) -> None:
    assert_curves_png(tiny_run / "curves.png")
    assert not list(tiny_run.glob(".curves.png.*"))  # the temporary file was renamed


@pytest.mark.parametrize(
    "rows",
    [
        [(1, "phase1", 2.1, 0.3, 2.3, 0.25, 1e-3, 1.5)],  # one epoch: points, not lines
        [(1, "head", 2.1, 0.3, "", "", 1e-3, 1.5), (2, "head", 1.1, 0.6, "", "", 1e-3, 1.2)],
        [
            (e, "a" if e < 3 else "a_long_phase_name", 1 / e, e / 10, 1.2 / e, e / 11, 1e-3, 1)
            for e in range(1, 9)
        ],
    ],
    ids=["one-epoch", "no-validation", "two-phases"],
)
def test_curves_for_short_runs_and_runs_without_validation(tmp_path: Path, rows: list) -> None:
    _write_history(tmp_path / "history.csv", rows)
    assert write_run_curves(tmp_path) == tmp_path / "curves.png"
    assert_curves_png(tmp_path / "curves.png")
    history = load_history(tmp_path / "history.csv")
    assert [row.epoch for row in history] == [row[0] for row in rows]
    assert history[0].val_loss is None or history[0].val_loss == rows[0][4]


def test_a_drawing_failure_only_warns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "history.csv").write_text("epoch,phase\nnot a number,head\n")
    assert write_run_curves(tmp_path) is None
    err = capsys.readouterr().err
    assert err.startswith(f"warning: could not draw {tmp_path / 'curves.png'} (")
    assert "the run is complete" in err
    assert not (tmp_path / "curves.png").exists()
