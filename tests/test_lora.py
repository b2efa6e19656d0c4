"""LoRA (`model.lora`, issue 27) on a tiny KerasHub ViT through the CLI, trained once for the
module: only the adapters and the head train, model.keras holds them merged into plain layers
(the parameter count of the model without LoRA) and scores what the adapted model scored."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import tiny_config, write_config
from transferctl.cli import app

pytestmark = pytest.mark.slow
pytest.importorskip("keras_hub")

from tests.test_hub import _save_tiny_vit  # noqa: E402 - after the skip without KerasHub

ADAPTERS = 1_984  # rank 2 on the ViT's 12 Dense/EinsumDense layers (query, key, value, ...)
HEAD = 330  # Dense(10) on 32 features
WITHOUT_LORA = 24_298  # the ViT, feature_norm and the head


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("lora")
    _save_tiny_vit(work / "tiny_vit")
    config = tiny_config(
        model={"backbone": "hub:tiny_vit", "freeze": "all", "lora": {"rank": 2, "alpha": 4}},
        train={
            "restore_best": False,  # the adapted last epoch is what model.keras holds
            "phases": [
                {"name": "head", "epochs": 1, "learning_rate": 2.0e-3},
                {"name": "lora", "epochs": 2, "learning_rate": 2.0e-3, "freeze": "none"},
            ],
        },
        output={"runs_dir": str(work / "runs")},
    )
    config["model"].pop("weights")
    path = write_config(work / "lora.yaml", config)
    runner = CliRunner()
    run = work / "run"
    results = {
        "plan": runner.invoke(app, ["plan", str(path)]),
        "finetune": runner.invoke(app, ["finetune", str(path), "--run-dir", str(run)]),
    }
    results["evaluate"] = runner.invoke(app, ["evaluate", str(run), "--split", "val"])
    yield {"run": run, "work": work, **results}


def test_only_the_adapters_and_the_head_train(lora_run: dict[str, Any]) -> None:
    plan = lora_run["plan"]
    assert plan.exit_code == 0, plan.output
    total = WITHOUT_LORA + ADAPTERS
    assert f"rank 2, alpha 4 on 12 Dense/EinsumDense layers ({ADAPTERS:,} adapter" in plan.output
    assert f"{ADAPTERS + HEAD:,} of {total:,}" in plan.output  # the lora phase, in the plan
    assert (ADAPTERS + HEAD) / total <= 0.10
    done = lora_run["finetune"]
    assert done.exit_code == 0, done.output
    assert f"trainable 9; trainable parameters {ADAPTERS + HEAD:,}" in done.output
    rows = list(csv.DictReader((lora_run["run"] / "history.csv").open()))
    assert rows[1]["val_loss"] != rows[2]["val_loss"]  # the adapters learned


def test_model_keras_holds_the_adapters_merged(lora_run: dict[str, Any]) -> None:
    run = lora_run["run"]
    assert lora_run["evaluate"].exit_code == 0, lora_run["evaluate"].output
    with zipfile.ZipFile(run / "model.keras") as archive:
        assert "lora" not in archive.read("config.json").decode()
    # metrics.json scored the adapted model; evaluate scores model.keras, merged
    trained = json.loads((run / "metrics.json").read_text())["val"]
    merged = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert merged["loss"] == pytest.approx(trained["loss"], abs=1e-5)
    assert merged["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)
    script = (
        "import sys; sys.modules['transferctl'] = None\n"
        "import keras, keras_hub\n"
        f"model = keras.saving.load_model({str(run / 'model.keras')!r}, compile=False)\n"
        "print(model.count_params())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip().splitlines()[-1]) == WITHOUT_LORA


def test_lora_on_a_cnn_adapts_its_convolutions_and_merges(tmp_path: Path, cli: Any) -> None:
    """MobileNet (v1) has no Dense layer: `auto` adapts its 14 Conv2D layers (not the depthwise
    ones, which Keras cannot adapt); model.keras is the plain CNN and scores what training did."""
    config = tiny_config(
        model={"freeze": "all", "lora": {"rank": 2}},
        train={
            "restore_best": False,
            "phases": [
                {"name": "head", "epochs": 1, "learning_rate": 2.0e-3},
                {"name": "lora", "epochs": 1, "learning_rate": 1.0e-4, "freeze": "none"},
            ],
        },
        output={"runs_dir": str(tmp_path / "runs")},
    )
    path = write_config(tmp_path / "c.yaml", config)
    plan = cli("plan", path)
    assert plan.exit_code == 0, plan.output
    assert "rank 2, alpha 2 on 14 convolutions" in " ".join(plan.output.split())
    run = tmp_path / "run"
    assert cli("finetune", path, "--run-dir", run).exit_code == 0
    assert cli("evaluate", run, "--split", "val").exit_code == 0
    trained = json.loads((run / "metrics.json").read_text())["val"]
    merged = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    # the same predictions (from scratch, 2 epochs: compare what they decide, as Keras's loss
    # from the logits is not evaluate's clipped one where probabilities saturate)
    for name in ("accuracy", "top_5_accuracy"):
        assert merged[name] == pytest.approx(trained[name], abs=1e-6)
    with zipfile.ZipFile(run / "model.keras") as archive:
        assert "lora" not in archive.read("config.json").decode()


def test_a_target_that_selects_no_layer_is_one_line(tmp_path: Path, cli: Any) -> None:
    config = write_config(
        tmp_path / "c.yaml", tiny_config(model={"lora": {"rank": 4, "target": "no_such_layer"}})
    )
    result = cli("plan", config)
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: model.lora.target: 'no_such_layer' selects none of the backbone")
