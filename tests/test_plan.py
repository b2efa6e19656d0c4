"""`transferctl plan`: what each phase trains, read from the built model; nothing trained."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import tiny_config as any_tiny_config
from tests.conftest import write_config
from transferctl.model.head_init import resolve_head_init

REPO = Path(__file__).resolve().parents[1]
MOBILENET_V3_SMALL_LAYERS = 157
FEATURES = 576  # MobileNetV3Small's pooled features

# the expected layer counts below are MobileNetV3Small's
tiny_config = partial(any_tiny_config, backbone="mobilenet_v3_small")


def _row(output: str, label: str) -> str:
    """The text of one row of the phase table (its first line)."""
    for line in output.splitlines():
        if line.startswith(f"│ {label} "):
            return line
    raise AssertionError(f"no row {label!r} in:\n{output}")


def test_plan_of_the_demo_says_what_each_phase_trains(cli, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = cli("plan", REPO / "configs" / "demo.yaml", "--set", f"output.runs_dir={runs}")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "mobilenet_v3_small: 157 layers" in out
    assert "input     32x32" in out
    assert "weights   none (from scratch)" in out
    assert "classes   10: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in out
    assert "init random (auto: the first phase trains part of the backbone)" in out
    assert re.search(r"0: scratch\s+┃ 1: finetune", out)
    assert "│ 0 of 157 " in _row(out, "frozen layers")
    # Keras numbers auto-named layers per process: input_layer, or input_layer_3 after others
    assert re.search(r"117 of 157: #0 input_layer(_\d+)? … #116 ", _row(out, "frozen layers"))
    assert "40 of 157: #117 " in _row(out, "training layers")
    assert "{last_trainable: 40} (train.phases.1.freeze)" in _row(out, "freeze")
    assert "0.002 (cosine)" in _row(out, "learning rate")
    assert _row(out, "BatchNorm").count("trains (") == 2  # from scratch: BatchNorm learns
    assert _row(out, "feature cache").count("no: part of the backbone trains") == 2
    assert not runs.exists()  # nothing written


def test_frozen_first_phase_uses_the_cache_and_a_linear_probe_head(cli, tmp_path: Path) -> None:
    config = tiny_config(
        model={"freeze": "all", "train_batchnorm": False},
        data={"classes": [3, 5, 8]},
        train={"phases": [{"name": "head", "epochs": 3, "learning_rate": 1e-3}]},
    )
    result = cli("plan", write_config(tmp_path / "frozen.yaml", config))
    assert result.exit_code == 0, result.output
    out = result.stdout
    head = (FEATURES + 1) * 3  # three classes: the head is sized by data.classes
    assert f"│ {head:,} of " in _row(out, "trainable params")
    assert "157 of 157" in _row(out, "frozen layers")
    assert "│ 0 of 157 " in _row(out, "training layers")
    assert "inference (frozen)" in _row(out, "BatchNorm")
    assert "yes: the backbone is frozen and nothing is augmented" in _row(out, "feature cache")
    assert "init linear_probe (auto: the first phase keeps the whole backbone frozen)" in out
    assert "classes   3: 3, 5, 8" in out

    augmented = cli(
        "plan", tmp_path / "frozen.yaml", "--set", "data.augment.flip=horizontal", "--set",
        "model.head.init=random",
    )  # fmt: skip
    assert augmented.exit_code == 0, augmented.output
    assert "no: augmentation is on" in _row(augmented.stdout, "feature cache")
    assert "init random (model.head.init)" in augmented.stdout


def test_layers_table_and_regex_freeze(cli, tmp_path: Path) -> None:
    pattern = "^expanded_conv_[0-3]_"
    config = tiny_config(
        model={"freeze": {"regex": pattern}, "train_batchnorm": False},
        train={"phases": [{"name": "tune", "epochs": 1, "learning_rate": 1e-3}]},
    )
    result = cli("plan", write_config(tmp_path / "regex.yaml", config), "--layers")
    assert result.exit_code == 0, result.output
    rows = [
        line.split("│")[1:-1] for line in result.stdout.splitlines() if re.match(r"│\s+\d+ │", line)
    ]
    assert len(rows) == MOBILENET_V3_SMALL_LAYERS
    cells = {row[1].strip(): [cell.strip() for cell in row] for row in rows}
    # index, name, type, BatchNorm, params, tune
    matched = [name for name in cells if re.search(pattern, name)]
    assert matched and all(cells[name][5] == "no" for name in matched)
    assert cells["conv"][5] == "yes" and cells["conv"][3] == ""
    assert cells["conv_bn"][3] == "yes" and cells["conv_bn"][5] == "no"  # BatchNorm frozen
    assert [cell.strip() for cell in rows[-1]][5] == "yes"  # the last layer
    assert f"{len(matched)} of 157 in " in _row(result.stdout, "frozen layers")
    assert "no: part of the backbone trains" in _row(result.stdout, "feature cache")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.freeze={regex: '^block_9'}",
            "error: model.freeze.regex: '^block_9' matches none of the backbone's 157 layer names",
        ),
        (
            "train.phases.1.freeze={until: conv_99}",
            "error: train.phases.1.freeze.until: the backbone has no layer named 'conv_99'",
        ),
    ],
)
def test_bad_freeze_specs_exit_2_naming_the_field(
    cli, tmp_path: Path, override: str, message: str
) -> None:
    config = write_config(tmp_path / "bad.yaml", tiny_config())
    result = cli("plan", config, "--set", override)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message), result.stderr
    assert "transferctl plan CONFIG --layers" in result.stderr
    assert "Traceback" not in result.output


def test_plan_of_an_imagenet_preset_downloads_nothing(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    result = cli("plan", REPO / "configs" / "cifar10-vgg16.yaml")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "vgg16: 19 layers" in out and "input     224x224" in out
    assert "weights   imagenet (finetune loads them; plan does not download)" in out
    assert "classes   10: airplane, automobile, bird" in out
    assert "19 of 19" in _row(out, "frozen layers")
    assert "4 of 19: #15 block5_conv1 … #18 block5_pool" in _row(out, "training layers")
    assert _row(out, "BatchNorm").count("none in the backbone") == 2
    assert "no: augmentation is on" in _row(out, "feature cache")
    assert "init linear_probe" in out
    assert not (tmp_path / "empty-keras-home").exists()


def test_plan_help_never_imports_tensorflow() -> None:
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from transferctl.cli import app\n"
        "r = CliRunner().invoke(app, ['plan', '--help'])\n"
        "assert r.exit_code == 0 and '--layers' in r.output, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_make_plan_returns_data(tmp_path: Path) -> None:
    from transferctl.config.loader import load_config
    from transferctl.plan import make_plan

    config = tiny_config(model={"freeze": {"first": 50}, "train_batchnorm": True})
    plan = make_plan(load_config(write_config(tmp_path / "p.yaml", config)))
    assert plan.backbone == "mobilenet_v3_small" and plan.num_classes == 10
    first, second = plan.phases
    assert first.frozen == tuple(range(50)) and first.freeze_field == "model.freeze"
    assert first.frozen_layers == 50 and first.trainable_layers == 107
    assert not first.backbone_frozen and first.batchnorm == "trains"
    assert second.frozen_layers == 127 and second.freeze_field == "train.phases.1.freeze"
    assert first.trainable_params > second.trainable_params
    assert [layer.trains for layer in plan.layers[:2]] == [(False, False), (False, False)]
    assert plan.layers[-1].trains == (True, True)
    assert plan.head_init == "random"


def test_resolve_head_init() -> None:
    assert resolve_head_init("auto", True) == "linear_probe"
    assert resolve_head_init("auto", False) == "random"
    assert resolve_head_init("random", True) == "random"
    assert resolve_head_init("linear_probe", False) == "linear_probe"
    with pytest.raises(ValueError, match="Received: head_init='probe'"):
        resolve_head_init("probe", True)


def test_estimate_times_real_steps_per_phase_and_in_total(cli, tmp_path: Path) -> None:
    config = tiny_config(
        model={"freeze": "all", "train_batchnorm": False},
        train={
            "phases": [
                {"name": "head", "epochs": 2, "learning_rate": 1e-3},
                {"name": "finetune", "epochs": 1, "learning_rate": 1e-4, "freeze": "none"},
            ]
        },
    )
    result = cli("plan", write_config(tmp_path / "estimate.yaml", config), "--estimate")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "estimate from 3 timed training steps per phase" in out
    head = re.search(r"phase head: ([\d.]+) s/epoch x 2, feature cache pass ([\d.]+) s once", out)
    finetune = re.search(r"phase finetune: ([\d.]+) s/epoch x 1, tracing ([\d.]+) s once", out)
    total = re.search(r"total: ([\d.]+) s", out)
    assert head and finetune and total, out
    assert float(finetune.group(1)) > 0 and float(total.group(1)) > 0
