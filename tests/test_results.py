"""`make results` stays runnable: its plan lists every run, and every command's config validates.

No training and no TensorFlow: the runs that others start from (`{run: NAME}`) are stood in for
by fake finished run directories, as far as `validate` reads them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from results import run as results_run
from transferctl.cli import app
from transferctl.config.loader import load_config

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "results").glob("*.yaml"))


def _fake_finished_run(runs_dir: Path, name: str) -> None:
    """What `{run: NAME}` (weights or teacher) needs to find: a finished run of that name."""
    folder = runs_dir / f"{name}-20250101-000000"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(
        yaml.safe_dump({"name": name, "model": {"backbone": "mobilenet_v3_small"}})
    )
    (folder / "checkpoints" / "state.json").write_text(json.dumps({"finished": True}))
    (folder / "model.keras").write_bytes(b"not read by validate")
    (folder / "labels.txt").write_text("".join(f"{digit}\n" for digit in range(5, 10)))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """A runs folder holding a stand-in for every run that another run of the plan starts from."""
    folder = tmp_path / "runs"
    for name in {need for run in results_run.plan() for need in run.needs}:
        _fake_finished_run(folder, name)
    return folder


def test_the_plan_covers_every_config_and_several_seeds() -> None:
    runs = results_run.plan()
    assert {REPO / run.config for run in runs} == set(CONFIGS)
    assert len({run.seed for run in runs}) >= 3
    assert len({run.name for run in runs}) == len(runs)  # a name finds one run: unique
    names = {run.name for run in runs}
    for run in runs:
        assert set(run.needs) <= names, run.name  # what it starts from is in the plan too
    assert {run.verb for run in runs} == {"finetune", "pretrain"}


def test_dry_run_lists_the_planned_runs_and_trains_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "results/run.py", "--dry-run", "--runs-dir", str(tmp_path / "runs")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    runs = results_run.plan()
    assert lines[-1].startswith(f"{len(runs)} runs; seeds 1 2 3")
    for run, line in zip(runs, lines, strict=False):
        state, name, command = line.split(maxsplit=2)
        assert name == run.name
        assert state == ("waiting" if run.needs else "new")
        assert command.startswith(f"transferctl {run.verb} {run.config} --set seed={run.seed}")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_each_results_config_validates_through_the_cli(config: Path, runs_dir: Path) -> None:
    run = next(run for run in results_run.plan() if REPO / run.config == config)
    arguments = run.arguments(runs_dir)
    result = CliRunner().invoke(app, ["validate", str(REPO / run.config), *arguments[2:]])
    assert result.exit_code == 0, result.output
    assert f"name: {run.name}" in result.output


def test_every_planned_command_validates(runs_dir: Path) -> None:
    for run in results_run.plan():
        config = load_config(REPO / run.config, run.arguments(runs_dir)[3::2])
        assert config.name == run.name
        assert config.seed == run.seed
        assert config.output.runs_dir == runs_dir
        assert config.data.source == "digits"
        if run.needs:  # `{run: NAME}` found the stand-in of the seed's own run
            found = config.distill.teacher if config.distill else config.model.weights
            assert Path(found).name.startswith(f"{run.needs[0]}-")
