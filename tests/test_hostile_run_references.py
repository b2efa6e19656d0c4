"""Hostile input, round 2 (run references and what they read): a FIFO or an alias bomb where
`{run: NAME}` and `compare` read a run's config.yaml, a path where a run's name belongs, and an
oversized labels.txt. Each ends in a clear exit 2, or is skipped, within seconds; none hangs."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tests.conftest import tiny_config, write_config
from tests.hostile_inputs import ALIAS_BOMB, make_fifo, run_measured

HANG_LIMIT = 45  # seconds: a command that hangs is killed


def _finished_run(runs: Path, folder: str, config_text: str | None = None) -> Path:
    """A run folder as far as `{run: NAME}` reads it: config.yaml, a finished state, a model."""
    run = runs / folder
    (run / "checkpoints").mkdir(parents=True)
    if config_text is not None:
        (run / "config.yaml").write_text(config_text)
    (run / "checkpoints" / "state.json").write_text(json.dumps({"finished": True}))
    (run / "model.keras").write_bytes(b"not read by validate")
    return run


def _target(tmp_path: Path, runs: Path, weights: Any) -> Path:
    config = tiny_config(model={"weights": weights}, output={"runs_dir": str(runs)})
    return write_config(tmp_path / "target.yaml", config)


def test_a_fifo_or_an_alias_bomb_among_the_runs_of_a_name_is_skipped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    good = _finished_run(runs, "source-20260101-120000", "name: source\n")
    fifo_run = _finished_run(runs, "source-20260102-120000")
    make_fifo(fifo_run / "config.yaml")
    _finished_run(runs, "source-20260103-120000", ALIAS_BOMB.replace("name: &i", "other: &i"))
    started = time.monotonic()
    code, out, err, _ = run_measured(
        ["validate", str(_target(tmp_path, runs, {"run": "source"}))], timeout=HANG_LIMIT
    )
    assert code == 0, err
    assert f"weights: {good}" in out
    assert time.monotonic() - started < HANG_LIMIT / 2


def test_a_path_where_a_runs_name_belongs_is_exit_2_in_one_line(tmp_path: Path, cli: Any) -> None:
    for name in (str(tmp_path), "../escape", "a/b", ""):
        result = cli("validate", _target(tmp_path, tmp_path / "runs", {"run": name}))
        assert result.exit_code == 2, (name, result.output)
        assert result.stderr.startswith("error: model.weights: "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_compare_refuses_an_alias_bomb_config_within_seconds(
    tiny_run: Path, tmp_path: Path
) -> None:
    bombed = tmp_path / "bombed"
    shutil.copytree(tiny_run, bombed, ignore=shutil.ignore_patterns("export", "eval"))
    (bombed / "config.yaml").write_text(ALIAS_BOMB)
    code, _, err, peak = run_measured(["compare", str(tiny_run), str(bombed)], timeout=HANG_LIMIT)
    assert code == 2, err
    assert err.startswith(f"error: {bombed / 'config.yaml'}: damaged config (")
    assert peak < 500, peak  # MiB: the bomb is refused, not expanded


def test_an_oversized_labels_txt_is_refused_not_read(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "eval"))
    with open(run / "labels.txt", "ab") as labels:
        labels.truncate(64 * 2**20)  # sparse: 64 MiB on paper, nothing on disk
    code, _, err, peak = run_measured(["evaluate", str(run), "--split", "val"], timeout=HANG_LIMIT)
    assert code == 2, err
    assert f"error: {run / 'labels.txt'}: cannot read the labels (file too large" in err
    assert peak < 1500, peak
    assert os.path.getsize(run / "labels.txt") == 64 * 2**20


def test_values_whose_products_leave_float32_are_refused_by_validate(
    tiny_run: Path, tmp_path: Path, cli: Any
) -> None:
    """Accepted before, then blamed on the learning rate with a numpy overflow warning."""
    cases = {
        "train.phases.0.backbone_lr_scale": {
            "train": {"phases": [{"epochs": 1, "learning_rate": 1e-3, "backbone_lr_scale": 1e308}]}
        },
        "train.phases.0.learning_rate": {
            "train": {"phases": [{"epochs": 1, "learning_rate": 1e35}]}
        },
        "distill.temperature": {"distill": {"teacher": str(tiny_run), "temperature": 1e200}},
        "pretrain.sparsity": {"pretrain": {"sparsity": 1e38}},
    }
    for where, sections in cases.items():
        config = write_config(tmp_path / "c.yaml", tiny_config(**sections))
        result = cli("validate", config)
        assert result.exit_code == 2, (where, result.output)
        assert f"error: {where}: " in result.stderr, (where, result.stderr)
        assert "Traceback" not in result.output
