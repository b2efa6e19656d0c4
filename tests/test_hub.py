"""KerasHub backbones (`model.backbone: hub:PRESET_OR_DIR`, issue 27): a tiny ViT saved with
keras_hub's own `save_to_preset`, fine-tuned on digits through the CLI once for the module, then
evaluated, exported to ONNX and TFLite through their parity gates, planned, and loaded with Keras
and KerasHub alone. Without the extra, and offline with a preset name, it fails in one line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import tiny_config, write_config
from transferctl.cli import app

pytestmark = pytest.mark.slow
keras_hub = pytest.importorskip("keras_hub")

VIT = {"patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
VIT_PARAMS = 23_904  # ViTBackbone at 32x32 with VIT, as keras_hub builds it
LAST_TRAINABLE = 4  # transformer_block_2, drop_class_token, token_grid, ln


def _save_tiny_vit(folder: Path) -> Path:
    import keras

    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), **VIT)
    assert backbone.count_params() == VIT_PARAMS
    backbone.save_to_preset(str(folder))
    return folder


def _hub_config(work: Path, backbone: str, **model: Any) -> Path:
    config = tiny_config(
        model={"backbone": backbone, "freeze": "all", **model},
        output={"runs_dir": str(work / "runs")},
    )
    config["model"].pop("weights")  # a hub backbone's default start: its preset's weights
    config["train"]["phases"][1]["freeze"] = {"last_trainable": LAST_TRAINABLE}
    return write_config(work / f"hub-{len(list(work.glob('*.yaml')))}.yaml", config)


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Head on the frozen ViT, then its last block and norm fine-tuned; evaluated, exported."""
    work = tmp_path_factory.mktemp("hub")
    preset = _save_tiny_vit(work / "tiny_vit")
    config = _hub_config(work, "hub:tiny_vit")  # relative to the config file
    runner = CliRunner()
    run = work / "run"
    results = {"finetune": runner.invoke(app, ["finetune", str(config), "--run-dir", str(run)])}
    results["evaluate"] = runner.invoke(app, ["evaluate", str(run), "--split", "val"])
    for fmt in ("onnx", "tflite"):
        results[fmt] = runner.invoke(app, ["export", str(run), "--format", fmt])
    results["plan"] = runner.invoke(app, ["plan", str(config), "--layers"])
    yield {"run": run, "config": config, "preset": preset, "work": work, **results}


def test_a_hub_vit_finetunes_evaluates_and_exports(hub_run: dict[str, Any]) -> None:
    run = hub_run["run"]
    for step in ("finetune", "evaluate", "onnx", "tflite"):
        assert hub_run[step].exit_code == 0, f"{step}: {hub_run[step].output}"
    saved = (run / "config.yaml").read_text()
    assert f"backbone: hub:{hub_run['preset']}" in saved and "weights: preset" in saved
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [row["phase"] for row in rows] == ["head", "finetune"]
    output = hub_run["finetune"].output
    # the head's phase: the frozen ViT runs once over the images (its tokens pooled on a grid)
    assert "feature cache: on" in output
    assert "backbone layers frozen 5, trainable 4" in output  # {last_trainable: 4}: a block
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] > 0.5  # ten classes; a random ViT's probe reaches ~0.8
    evaluated = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(metrics["val"]["accuracy"], abs=1e-6)
    for fmt, name in (("onnx", "model.onnx"), ("tflite", "model.tflite")):
        assert (run / "export" / name).is_file()
        assert "top-1 agreement 100.0%" in hub_run[fmt].output  # the parity gate passed


def test_plan_lists_the_vit_block_by_block(hub_run: dict[str, Any]) -> None:
    result = hub_run["plan"]
    assert result.exit_code == 0, result.output
    for name in ("vit_patching_and_embedding", "transformer_block_1", "transformer_block_2", "ln"):
        assert name in result.output
    assert f"{VIT_PARAMS:,} parameters" in result.output
    assert f"{LAST_TRAINABLE} of 9: #5 transformer_block_2" in result.output


def test_model_keras_loads_with_keras_and_keras_hub_alone(hub_run: dict[str, Any]) -> None:
    """No transferctl in the process: its import is blocked."""
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    np.save(hub_run["work"] / "images.npy", images)
    script = (
        "import sys, json; sys.modules['transferctl'] = None\n"
        "import numpy as np, keras, keras_hub\n"
        f"model = keras.saving.load_model({str(hub_run['run'] / 'model.keras')!r}, compile=False)\n"
        f"images = np.load({str(hub_run['work'] / 'images.npy')!r})\n"
        "print(json.dumps({'params': model.count_params(), "
        "'probabilities': model.predict(images, verbose=0).tolist()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    from transferctl.rundir.model_file import load_model_file

    ours = load_model_file(hub_run["run"] / "model.keras")
    assert loaded["params"] == ours.count_params()
    expected = ours.predict(images, verbose=0)
    np.testing.assert_allclose(np.asarray(loaded["probabilities"]), expected, atol=1e-5)


def test_without_the_extra_a_hub_backbone_fails_in_one_line(
    hub_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name.startswith("keras_hub.")]:
        monkeypatch.delitem(sys.modules, name)  # Keras imports these to load a hub model
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # `import keras_hub` raises ImportError
    result = CliRunner().invoke(app, ["plan", str(hub_run["config"])])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.backbone: KerasHub backbones")
    assert "pip install 'transferctl[hub]'" in lines[0]
    result = CliRunner().invoke(app, ["evaluate", str(hub_run["run"])])  # a hub run's model.keras
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "holds KerasHub layers" in line and "pip install 'transferctl[hub]'" in line


def test_an_uncached_preset_offline_fails_fast_naming_the_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "kagglehub"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # no network, even where there is one
    monkeypatch.setenv("TRANSFERCTL_DOWNLOAD_TIMEOUT", "5")
    config = _hub_config(tmp_path, "hub:vit_base_patch16_224_imagenet")
    result = CliRunner().invoke(app, ["plan", str(config)])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: model.backbone: cannot download the KerasHub preset ")
    folder = cache / "models" / "keras" / "vit" / "keras" / "vit_base_patch16_224_imagenet"
    assert f"put the preset's files in {folder}/" in line
    assert "hub:FOLDER" in line


def test_hub_config_mistakes_are_one_line(
    hub_run: dict[str, Any], tmp_path: Path, cli: Any
) -> None:
    """A folder that is no preset, a size the ViT's patches do not tile, and `preset` weights
    for a keras.applications backbone: `validate` says so without TensorFlow."""
    config = write_config(
        tmp_path / "b.yaml",
        tiny_config(model={"backbone": f"hub:{hub_run['preset']}"}, data={"image_size": [36, 36]}),
    )
    result = cli("validate", config)
    assert result.exit_code == 2
    assert "data.image_size: [36, 36] is not a multiple of the patch size" in result.output
    assert "use e.g. [32, 32]" in result.output
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path / "c.yaml", tiny_config(model={"backbone": "hub:./empty"}))
    result = cli("validate", config)
    assert result.exit_code == 2
    assert "model.backbone" in result.output and "save_to_preset" in result.output
    config = write_config(tmp_path / "d.yaml", tiny_config(model={"weights": "preset"}))
    result = cli("validate", config)
    assert result.exit_code == 2
    assert "model.weights: preset is the start of a hub: backbone" in result.output


@pytest.mark.parametrize(
    ("family", "build"),
    [
        # a class token and a distillation token before the 16 patches
        ("deit", lambda s: keras_hub.models.DeiTBackbone(
            image_shape=s, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
            intermediate_dim=32)),
        # 4 registers after the class token
        ("dinov2", lambda s: keras_hub.models.DINOV2Backbone(
            patch_size=8, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
            num_register_tokens=4, image_shape=s, position_embedding_shape=s)),
        # patches merged: 64 tokens on an 8x8 grid, not the 16x16 of its patch size 2
        ("swin", lambda s: keras_hub.models.SwinTransformerBackbone(
            image_shape=s, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4,
            patch_size=2)),
    ],
)  # fmt: skip
def test_other_vision_families_become_a_feature_map(
    family: str, build: Any, tmp_path: Path, cli: Any
) -> None:
    build((32, 32, 3)).save_to_preset(str(tmp_path / family))
    result = cli("plan", _hub_config(tmp_path, f"hub:{family}"), "--layers")
    assert result.exit_code == 0, result.output
    assert "token_grid" in result.output
