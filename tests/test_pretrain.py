"""`transferctl pretrain`: the reconstruction loss falls, a kill resumes with every epoch once,
finetune takes the encoder bit for bit, a flat folder of images works."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import interrupt_after_commit, tiny_config, write_config
from transferctl.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3
FEW_DIGITS = ["0", "1", "2", "3", "4"]  # fewer validation images, for speed


def _pretrain_config(tmp_path: Path, data: dict[str, Any], **pretrain: Any) -> dict[str, Any]:
    config = tiny_config(
        data={"batch_size": 16, **data},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    config["name"] = "encoder"
    config["pretrain"] = {"epochs": EPOCHS, "learning_rate": 2e-3, **pretrain}
    return config


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A pretrain run on digits, interrupted (Ctrl-C) after its first committed epoch, then
    resumed with the same command: what both invocations returned, and the run directory."""

    work = tmp_path_factory.mktemp("pretrain")
    config = write_config(
        work / "encoder.yaml",
        _pretrain_config(work, {"limit": 160, "classes": FEW_DIGITS, "validation_split": 0.05}),
    )
    run = work / "runs" / "encoder-run"
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        interrupt_after_commit(patch, lambda state: state.epochs_done == 1 and not state.finished)
        killed = runner.invoke(app, ["pretrain", str(config), "--run-dir", str(run), "-q"])
        rows_when_killed = _history(run)
    resumed = runner.invoke(app, ["pretrain", str(config), "--run-dir", str(run)])
    return {
        "config": config,
        "run": run,
        "killed": killed,
        "rows_when_killed": rows_when_killed,
        "resumed": resumed,
        "work": work,
    }


@pytest.mark.slow
def test_a_kill_during_pretraining_resumes_with_every_epoch_once(
    pretrain_run: dict[str, Any],
) -> None:
    killed, resumed, run = pretrain_run["killed"], pretrain_run["resumed"], pretrain_run["run"]
    assert killed.exit_code == 130, killed.output
    assert f"transferctl pretrain --resume {run}" in killed.output
    assert [row["epoch"] for row in pretrain_run["rows_when_killed"]] == ["1"]
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip().splitlines()[-1] == str(run)
    rows = _history(run)
    assert [row["epoch"] for row in rows] == [str(e) for e in range(1, EPOCHS + 1)]
    assert {row["phase"] for row in rows} == {"pretrain"}
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["finished"] is True and state["epochs_done"] == EPOCHS

    again = CliRunner().invoke(app, ["pretrain", "--resume", str(run)])
    assert again.exit_code == 0, again.output
    assert "already finished" in again.output


@pytest.mark.slow
def test_the_reconstruction_loss_falls(pretrain_run: dict[str, Any]) -> None:
    rows = _history(pretrain_run["run"])
    loss = [float(row["loss"]) for row in rows]
    val_loss = [float(row["val_loss"]) for row in rows]
    assert loss[-1] < 0.8 * loss[0], loss
    assert val_loss[-1] < val_loss[0], val_loss
    assert all(row["accuracy"] == "" and row["val_accuracy"] == "" for row in rows)


@pytest.mark.slow
def test_the_run_directory_is_a_pretrain_run(pretrain_run: dict[str, Any]) -> None:
    run = pretrain_run["run"]
    for name in ("config.yaml", "env.json", "history.csv", "metrics.json", "model.keras"):
        assert (run / name).is_file(), name
    assert not (run / "labels.txt").exists()  # no classes: evaluate has nothing to score
    assert json.loads((run / "env.json").read_text())["kind"] == "pretrain"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["kind"] == "pretrain"
    assert 0.0 < metrics["val"]["mse"] < 0.1 and metrics["val"]["num_examples"] > 0
    assert metrics["training"]["phases"][0]["batchnorm_layers_recomputed"] > 0  # from scratch
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["pretrain"] == {
        "objective": "autoencoder",
        "epochs": EPOCHS,
        "learning_rate": 2e-3,
        "sparsity": 0.0,
        "noise": 0.0,
    }
    for picture in ("reconstructions.png", "curves.png"):
        assert (run / picture).read_bytes()[:8] == PNG_MAGIC, picture
        with Image.open(run / picture) as image:
            image.verify()
    with Image.open(run / "reconstructions.png") as image:
        assert image.width > 2 * image.height  # a row of inputs above their reconstructions
    with zipfile.ZipFile(run / "model.keras") as archive:
        saved = archive.read("config.json").decode()
    # built-in layers only: loads with plain Keras, in a process without transferctl
    assert '"module": "transferctl' not in saved and '"registered_name": "transferctl' not in saved
    assert list(run.rglob(".*.tmp*")) == []


@pytest.mark.slow
def test_finetune_from_the_pretrain_run_takes_the_encoder_bit_for_bit(
    pretrain_run: dict[str, Any], cli: Callable[..., Any]
) -> None:
    import keras

    work, run = pretrain_run["work"], pretrain_run["run"]
    hint = {"run": "encoder", "kind": "pretrain"}  # what pretrain printed
    assert "model.weights: {run: encoder, kind: pretrain}" in pretrain_run["resumed"].stderr
    config = tiny_config(
        data={"limit": 64, "batch_size": 32, "classes": FEW_DIGITS},
        model={"weights": hint, "freeze": "all", "train_batchnorm": False},
        train={"phases": [{"name": "head", "epochs": 1, "learning_rate": 1e-3}]},
        output={"runs_dir": str(work / "runs")},
    )
    config["name"] = "encoder"  # a finetune run of the pretrain run's name, as from one config
    config_path = write_config(work / "target.yaml", config)
    result = cli("finetune", config_path)
    assert result.exit_code == 0, result.output
    assert f"weights: the backbone of the pretrain run {run} " in result.stderr
    target = Path(result.stdout.strip().splitlines()[-1])
    assert yaml.safe_load((target / "config.yaml").read_text())["model"]["weights"] == str(run)
    # now that both kinds carry the name, the hint still finds the encoder, and a bare
    # {run: encoder} is an error naming both instead of a guess
    again: Any = cli("validate", config_path)
    assert again.exit_code == 0 and yaml.safe_load(again.stdout)["model"]["weights"] == str(run)
    bare = write_config(work / "bare.yaml", {**config, "model": {"weights": {"run": "encoder"}}})
    guess: Any = cli("validate", bare)
    assert guess.exit_code == 2 and "finished runs of 2 kinds are named 'encoder'" in guess.stderr

    encoder = keras.saving.load_model(run / "model.keras", compile=False, safe_mode=True)
    classifier = keras.saving.load_model(target / "model.keras", compile=False)
    before = encoder.get_layer("backbone").get_weights()
    after = classifier.get_layer("backbone").get_weights()
    assert len(before) == len(after) > 100
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))

    by_path: Any = cli("validate", config_path, "--set", f"model.weights={run}")
    assert by_path.exit_code == 0, by_path.output


def _flat_folder(root: Path, count: int = 30) -> Path:
    """Images directly in `root` (no class sub-folders), one in a sub-folder, one bad file."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    for index in range(count):
        height, width = rng.integers(24, 48, size=2)
        pixels = np.clip(rng.normal(rng.integers(40, 220), 30, (height, width, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"image_{index:03d}.png")
    (root / "more").mkdir()
    Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(root / "more" / "extra.jpg")
    (root / "broken.png").write_text("not an image")
    return root


@pytest.mark.slow
def test_a_flat_folder_pretrains_denoising_and_sparse(tmp_path: Path, cli: Any) -> None:
    folder = _flat_folder(tmp_path / "photos")
    config = _pretrain_config(
        tmp_path,
        {"source": "folder", "path": str(folder), "validation_split": 0.2},
        epochs=1,
        noise=0.1,
        sparsity=0.01,
    )
    result = cli("pretrain", write_config(tmp_path / "flat.yaml", config), "-q")
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["num_examples"] == 6  # 20% of the 31 good images
    assert metrics["val"]["loss"] > metrics["val"]["mse"]  # the loss holds the L1 penalty
    assert "broken.png" in (run / "bad_files.txt").read_text()
    with Image.open(run / "reconstructions.png") as image:
        assert image.width < 2.5 * image.height  # three rows: input, with noise, reconstruction


def test_finetune_still_needs_class_folders(tmp_path: Path) -> None:
    from transferctl.config.loader import load_config
    from transferctl.data import load_data
    from transferctl.errors import UserError

    folder = _flat_folder(tmp_path / "photos", count=4)
    config = write_config(
        tmp_path / "c.yaml",
        tiny_config(
            folder, data={"validation_split": 0.2}, output={"runs_dir": str(tmp_path / "runs")}
        ),
    )
    resolved = load_config(config)
    with pytest.raises(UserError, match="a classifier needs >= 2"):
        load_data(resolved.data, resolved.seed)
    unlabelled = load_data(resolved.data, resolved.seed, unlabelled=True)
    assert unlabelled.num_classes == 1
    assert unlabelled.count("train") + unlabelled.count("val") == 5
    assert [path for path, _ in unlabelled.bad_files] == [str(folder / "broken.png")]


def test_a_bad_pretrain_section_exits_2(tmp_path: Path, cli: Any) -> None:
    config = write_config(tmp_path / "c.yaml", _pretrain_config(tmp_path, {"limit": 50}))
    result = cli(
        "pretrain", config, "--set", "pretrain.noise=-1", "--set", "pretrain.objective=vae"
    )
    assert result.exit_code == 2
    assert "error: pretrain.noise: expected a number at least 0.0; got -1" in result.stderr
    assert "error: pretrain.objective: expected one of autoencoder; got 'vae'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_pretrain_refuses_to_resume_a_finetune_run(tmp_path: Path, cli: Any) -> None:
    run = tmp_path / "finetune-run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    (run / "env.json").write_text('{"python": "3.11"}\n')
    result = cli("pretrain", "--resume", run)
    assert result.exit_code == 2
    assert "is not a pretrain run (its env.json says finetune)" in result.stderr


def test_pretrain_help_never_imports_tensorflow() -> None:
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from transferctl.cli import app\n"
        "r = CliRunner().invoke(app, ['pretrain', '--help'])\n"
        "assert r.exit_code == 0 and '--run-dir' in r.output, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
