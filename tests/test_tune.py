"""`transferctl tune`: the search space checked before any training, trials that are runs, a
study killed with SIGKILL and resumed without repeating or double-counting a trial."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tiny_config, write_config

DROPOUT = "search.space.model.head.dropout"
SPACE = {"train.phases.0.learning_rate": {"choice": [1.0e-7, 5.0e-3]}}


def _tune_config(tmp_path: Path, search: dict[str, Any], **sections: Any) -> Path:
    one_phase = {"phases": [{"name": "all", "epochs": 1, "learning_rate": 2e-3}]}
    config = tiny_config(
        data={"limit": 48}, train=one_phase, output={"runs_dir": str(tmp_path / "runs")}
    )
    config["search"] = search
    config.update(sections)
    return write_config(tmp_path / "tune.yaml", config)


def _one_line(result: Any, starts: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("space", "sampler", "named"),
    [
        (
            {"train.phases.0.learnin_rate": {"log_uniform": [1e-4, 1e-2]}},
            "tpe",
            "search.space.train.phases.0.learnin_rate: ",
        ),
        ({"model.head.dropout": {"uniform": [0.0, 1.5]}}, "tpe", DROPOUT),
        ({"model.head.dropout": {"uniform": [0.0, 0.5]}}, "grid", DROPOUT),
        ({"model.head.dropout": {"uniform": [0.5, 0.1]}}, "tpe", DROPOUT),
    ],
)
def test_a_bad_search_space_exits_2_naming_the_key_before_training(
    tmp_path: Path, cli: Any, space: dict[str, Any], sampler: str, named: str | None
) -> None:
    config = _tune_config(tmp_path, {"space": space, "sampler": sampler})
    _one_line(cli("tune", config), named)
    assert not (tmp_path / "runs").exists()  # nothing written


def test_tune_needs_a_search_section_and_a_tune_directory(tmp_path: Path, cli: Any) -> None:
    plain = write_config(tmp_path / "plain.yaml", tiny_config())
    _one_line(cli("tune", plain), f"{plain}: has no search: section")
    _one_line(cli("tune", "--resume", tmp_path), f"--resume: {tmp_path} is not a tune directory")
    config = _tune_config(tmp_path, {"space": SPACE})
    _one_line(cli("tune", config, "--trials", "0"), "--trials: expected a whole number >= 1")


def _rows(directory: Path) -> list[dict[str, str]]:
    with open(directory / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_trial_left_running_is_rerun_once_on_resume(tmp_path: Path, cli: Any) -> None:
    """What a SIGKILL leaves (the test below kills a real process): a trial RUNNING in the
    study, with its values drawn and its run directory named."""
    from transferctl.config.loader import load_config
    from transferctl.tune.space import suggest
    from transferctl.tune.study import open_study
    from transferctl.tune.trial import RUN_DIR_ATTR

    config = _tune_config(tmp_path, {"space": SPACE, "sampler": "grid", "trials": 1})
    directory = tmp_path / "study"
    assert cli("tune", config, "--dir", directory).exit_code == 0
    study = open_study(directory, load_config(directory / "base.yaml"))
    left = study.ask()
    suggest(left, load_config(directory / "base.yaml").search.space)
    left.set_user_attr(RUN_DIR_ATTR, str(directory / "trials" / str(left.number)))

    result = cli("tune", "--resume", directory, "--trials", "2")
    assert result.exit_code == 0, result.output
    assert f"trial {left.number} was interrupted: it runs again" in result.stderr
    rows = _rows(directory)
    assert [row["state"] for row in rows] == ["complete", "fail", "complete"], rows
    assert rows[2]["note"] == f"rerun of trial {left.number} (interrupted)"
    assert rows[2]["params"] == rows[1]["params"] != rows[0]["params"]  # each grid point once
    assert cli("validate", directory / "best.yaml").exit_code == 0


@pytest.mark.slow
@pytest.mark.extended  # a real SIGKILL; the test above covers the same resume in-process
def test_a_killed_study_resumes_without_repeating_or_double_counting(
    tmp_path: Path, cli: Any
) -> None:
    config = _tune_config(tmp_path, {"space": SPACE, "sampler": "grid", "trials": 2})
    directory = tmp_path / "study"
    command = [sys.executable, "-c", "from transferctl.cli import main; main()"]
    started = subprocess.Popen(
        [*command, "tune", str(config), "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and started.poll() is None:
        if (directory / "trials.csv").is_file() and any(
            row["state"] in ("complete", "pruned") for row in _rows(directory)
        ):
            break
        time.sleep(0.5)
    started.send_signal(signal.SIGKILL)  # in the second trial, or between the two
    started.wait()

    result = cli("tune", "--resume", directory)
    assert result.exit_code == 0, result.output
    rows = _rows(directory)
    finished = [row for row in rows if row["state"] in ("complete", "pruned")]
    assert len(finished) == 2, rows
    assert len({row["params"] for row in finished}) == 2  # every grid point once
    interrupted = [row for row in rows if row["state"] == "fail"]
    reruns = [row for row in rows if row["note"].startswith("rerun of trial")]
    assert len(reruns) == len(interrupted) <= 1, rows
    for row in finished:
        assert (Path(row["run_dir"]) / "config.yaml").is_file()
    best = max(finished, key=lambda row: float(row["value"] or 0))
    saved = (Path(best["run_dir"]) / "config.yaml").read_text()
    assert (directory / "best.yaml").read_text() == saved  # the best trial's config
    assert cli("validate", directory / "best.yaml").exit_code == 0
    assert (directory / "tune.png").is_file() and os.path.getsize(directory / "tune.png") > 0


def test_trials_that_fail_are_recorded_and_three_in_a_row_stop_the_study(
    tmp_path: Path, cli: Any
) -> None:
    # a layer name is checked when the model is built: each trial fails, the study goes on
    space = {"model.freeze": {"choice": [{"until": "nope"}, {"until": "nada"}]}}
    config = _tune_config(tmp_path, {"space": space, "sampler": "random", "trials": 5})
    result = cli("tune", config, "--dir", tmp_path / "study")
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]  # after a line per trial
    assert last.startswith("error: search: 3 trials failed in a row; the last: model.freeze.")
    rows = _rows(tmp_path / "study")
    assert [row["state"] for row in rows] == ["fail"] * 3
    assert all("the backbone has no layer named" in row["note"] for row in rows)
