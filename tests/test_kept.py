"""`train.restore_best: run`: model.keras holds the best epoch of the whole run, also after a
kill and a resume; metrics.json's `kept` names it, the console and curves.png say so."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import interrupt_after_commit, tiny_config, write_config

pytestmark = pytest.mark.slow

# phase 1 learns the digits; phase 2's rate wrecks what it learned (finite, but far too high)
PHASES = [
    {"name": "good", "epochs": 2, "learning_rate": 2e-3},
    {"name": "wreck", "epochs": 2, "learning_rate": 0.5},
]


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_wrecking_second_phase_leaves_model_keras_at_the_first_phases_best(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(
        data={"limit": 192, "source": "digits"},
        train={"phases": PHASES},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    path = write_config(tmp_path / "kept.yaml", config)
    run = tmp_path / "run"
    # killed (Ctrl-C) after the wrecking phase's first epoch was committed, then resumed
    interrupt_after_commit(monkeypatch, lambda state: state.epochs_done == 3)
    killed = cli("finetune", path, "--run-dir", run)
    assert killed.exit_code == 130, killed.output
    monkeypatch.undo()
    resumed = cli("finetune", "--resume", run)
    assert resumed.exit_code == 0, resumed.output

    rows = _history(run)
    assert [row["phase"] for row in rows] == ["good"] * 2 + ["wreck"] * 2
    good = [row for row in rows if row["phase"] == "good"]
    best = min(good, key=lambda row: float(row["val_loss"]))
    wrecked = max(float(row["val_accuracy"]) for row in rows if row["phase"] == "wreck")
    assert wrecked < float(best["val_accuracy"]) - 0.2, rows  # the second phase did wreck it

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["kept"]["phase"] == "good" and metrics["kept"]["epoch"] == int(best["epoch"])
    assert metrics["kept"]["monitor"] == "val_loss"
    assert metrics["kept"]["value"] == pytest.approx(float(best["val_loss"]), rel=1e-6)
    # model.keras, scored by the run on val, is that epoch's model (BatchNorm statistics over
    # every training image at the phase's end instead of each epoch's sample: within 0.02)
    assert abs(metrics["val"]["accuracy"] - float(best["val_accuracy"])) <= 0.02, metrics["val"]
    assert f"kept: epoch {best['epoch']} of phase good" in resumed.stderr
    assert "note: phase wreck ended worse than phase good's best" in resumed.stderr

    evaluated = cli("evaluate", run, "--split", "val")
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads((run / "eval" / "val" / "metrics.json").read_text(encoding="utf-8"))
    assert scores["accuracy"] == pytest.approx(metrics["val"]["accuracy"], abs=1e-6)


def test_restore_best_values(cli: Any, tmp_path: Path) -> None:
    from transferctl.config.schema import Train

    assert Train().restore_best == "run"
    assert Train.model_validate({"restore_best": True}).restore_best == "run"  # before 0.3
    assert Train.model_validate({"restore_best": False}).restore_best is False
    assert Train.model_validate({"restore_best": "phase"}).restore_best == "phase"
    config = write_config(tmp_path / "c.yaml", {"train": {"restore_best": "epoch"}})
    result = cli("validate", config)
    assert result.exit_code == 2 and "train.restore_best" in result.output
