"""The run lifecycle shared by finetune and pretrain: every run records its kind, and a run of
the other kind is refused in one line, through the real CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tiny_config, write_config


def _pretrain_run(folder: Path) -> Path:
    """An unfinished pretrain run, as far as the refusal reads it: config.yaml and env.json."""
    folder.mkdir()
    (folder / "config.yaml").write_text("name: encoder\n")
    (folder / "env.json").write_text('{"kind": "pretrain", "python": "3.11"}\n')
    return folder


def test_a_finetune_run_records_its_kind(tiny_run: Path) -> None:
    assert json.loads((tiny_run / "env.json").read_text())["kind"] == "finetune"


@pytest.mark.parametrize("option", ["--resume", "--run-dir"])
def test_finetune_refuses_a_pretrain_run_in_one_line(
    tmp_path: Path, cli: Callable[..., Any], option: str
) -> None:
    run = _pretrain_run(tmp_path / "encoder")
    config = write_config(tmp_path / "c.yaml", tiny_config())
    arguments = [config, option, run] if option == "--run-dir" else [option, run]
    result = cli("finetune", *arguments)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {option}: {run} is a pretrain run, not a finetune run; ")
    assert "transferctl pretrain --resume" in lines[0]
    assert sorted(path.name for path in run.iterdir()) == ["config.yaml", "env.json"]


def test_pretrain_refuses_a_finetune_run_in_one_line(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    run = tmp_path / "classifier"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    (run / "env.json").write_text('{"kind": "finetune"}\n')
    result = cli("pretrain", "--resume", run)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --resume: {run} is not a pretrain run (its env.json says finetune); resume a "
        "finetune run with `transferctl finetune --resume`, or pass a new folder"
    ]
