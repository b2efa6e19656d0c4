"""The CLI shell: instant help, version, lazy TensorFlow, validate output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transferctl import __version__


def test_help_lists_the_commands_without_importing_tensorflow() -> None:
    """`--help` stays instant because TensorFlow and Keras are imported lazily: checked by what
    the process imported, not by a clock (timings live in bench/)."""
    code = (
        "import sys\n"
        "from transferctl.cli import main\n"
        "sys.argv = ['transferctl', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('imported:', 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in ("finetune", "validate", "backbones"):
        assert command in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "imported: False False"


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"transferctl {__version__}"


def test_validate_and_help_never_import_tensorflow(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: {backbone: resnet50, freeze: {first: 10}}\n")
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from transferctl.cli import app\n"
        f"r = CliRunner().invoke(app, ['validate', {str(config)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['backbones'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for command in ('finetune', 'evaluate', 'predict', 'export', 'doctor'):\n"
        "    r = CliRunner().invoke(app, [command, '--help'])\n"
        "    assert r.exit_code == 0, r.output\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_validate_prints_the_resolved_config(cli, tmp_path: Path) -> None:
    config = tmp_path / "flowers.yaml"
    config.write_text("model: {backbone: EfficientNetB0}\n")
    result = cli("validate", config, "--set", "train.phases.0.epochs=1")
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["name"] == "flowers"  # the config file's stem
    assert resolved["model"]["backbone"] == "efficientnet_b0"
    assert resolved["data"]["image_size"] == [224, 224]  # the backbone's native size
    assert resolved["model"]["train_batchnorm"] is False  # pretrained: BatchNorm frozen
    assert resolved["train"]["phases"][0] == {
        "name": "head",
        "epochs": 1,
        "learning_rate": 1.0e-3,
        "freeze": None,
        "unfreeze": None,
        "backbone_lr_scale": 1.0,
        "layer_decay": None,
    }
    assert resolved["train"]["phases"][1]["freeze"] == {"last_trainable": 20}


def test_relative_paths_resolve_against_the_config_folder(cli, tmp_path: Path) -> None:
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "c.yaml"
    config.write_text("data: {source: folder, path: ../images}\n")
    result = cli("validate", config)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["data"]["path"] == str((tmp_path / "images").resolve())


def test_backbones_lists_every_keras_application(cli) -> None:
    result = cli("backbones")
    assert result.exit_code == 0
    for name in ("vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"):
        assert name in result.stdout
    assert "224x224" in result.stdout and "299x299" in result.stdout


def test_shipped_configs_validate(cli, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    configs = sorted(root.glob("*.yaml")) + sorted(root.glob("tiny/*.yaml"))
    assert len(configs) >= 9
    for config in configs:
        data = yaml.safe_load(config.read_text())
        extra = ["--set", f"data.path={tmp_path}"] if data["data"]["source"] == "folder" else []
        result = cli("validate", config, *extra)
        assert result.exit_code == 0, f"{config.name}: {result.output}"


@pytest.mark.slow
def test_tensorflow_start_up_lines_do_not_reach_the_terminal() -> None:
    probe = (
        "from transferctl import runtime\n"
        "runtime.tf(); runtime.keras(); print(runtime.device().kind)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("CPU", "GPU")
    for noise in ("I0000", "E0000", "oneDNN", "cuda", "absl::InitializeLog", "AVX"):
        assert noise not in result.stderr, result.stderr
