"""`evaluate`, `predict RUN_DIR` and `export` refuse a pretrain run (its model.keras is an encoder,
not a classifier) in one line naming the kind, exit 2, through the real CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import tiny_config, write_config
from transferctl.cli import app


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished pretrain run, as small as one can be: 1 epoch on 64 digits at 32 px."""
    work = tmp_path_factory.mktemp("kinds")
    config = tiny_config(
        data={"limit": 64, "validation_split": 0.25},
        output={"runs_dir": str(work / "runs")},
    )
    config["name"] = "encoder"
    config["pretrain"] = {"epochs": 1}
    path = write_config(work / "encoder.yaml", config)
    run = work / "runs" / "encoder-run"
    result = CliRunner().invoke(app, ["pretrain", str(path), "--run-dir", str(run), "-q"])
    assert result.exit_code == 0, result.output
    return run


def _refused(arguments: list[str]) -> str:
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.stderr


@pytest.mark.slow
def test_evaluate_refuses_a_pretrain_run(pretrain_run: Path) -> None:
    stderr = _refused(["evaluate", str(pretrain_run)])
    assert stderr == (
        f"error: RUN_DIR: {pretrain_run} is a pretrain run, not a finetune run; a pretrain run's "
        f"model.keras is its encoder: finetune from it (model.weights: {pretrain_run}), then "
        "evaluate that run\n"
    )


@pytest.mark.slow
def test_predict_refuses_a_pretrain_run(pretrain_run: Path, tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    stderr = _refused(["predict", str(pretrain_run), str(image)])
    assert stderr.count("\n") == 1
    assert stderr.startswith(
        f"error: RUN_DIR|MODEL: {pretrain_run} is a pretrain run, not a finetune run; "
    )
    assert stderr.rstrip().endswith("then predict with that run")


@pytest.mark.slow
def test_export_refuses_a_pretrain_run(pretrain_run: Path) -> None:
    stderr = _refused(["export", str(pretrain_run), "--format", "keras"])
    assert stderr.count("\n") == 1
    assert stderr.startswith(
        f"error: RUN_DIR: {pretrain_run} is a pretrain run, not a finetune run; "
    )
    assert stderr.rstrip().endswith("then export that run")
    assert not (pretrain_run / "export").exists()


@pytest.mark.slow
def test_a_pretrain_run_is_refused_as_a_distillation_teacher(
    pretrain_run: Path, tmp_path: Path
) -> None:
    config = tiny_config(output={"runs_dir": str(tmp_path / "runs")})
    config["distill"] = {"teacher": str(pretrain_run)}
    path = write_config(tmp_path / "student.yaml", config)
    stderr = _refused(["validate", str(path)])
    assert stderr.count("\n") == 1
    assert stderr.startswith(
        f"error: distill.teacher: {pretrain_run} is a pretrain run, not a finetune run"
    )
    assert not (tmp_path / "runs").exists()
