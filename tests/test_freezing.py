"""Freezing: trainable counts are what the config says; frozen weights never move."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_RUN_BACKBONE, tiny_config, write_config

pytestmark = pytest.mark.slow

UNTIL_LAYER = "conv_pw_3"
TINY_RUN_UNTIL_LAYER = "expanded_conv_3_expand"  # the same place in the tiny run's V3Small
REGEX = "^(conv1|conv_(dw|pw|pad)_[1-3])(_|$)"  # the stem and the first three blocks, by name
PHASES = [
    {"name": "all", "epochs": 1, "learning_rate": 1e-3, "freeze": "all"},
    {"name": "none", "epochs": 1, "learning_rate": 1e-4, "freeze": "none"},
    {"name": "first", "epochs": 1, "learning_rate": 1e-4, "freeze": {"first": 50}},
    {"name": "until", "epochs": 1, "learning_rate": 1e-4, "freeze": {"until": UNTIL_LAYER}},
    {"name": "last", "epochs": 1, "learning_rate": 1e-4, "freeze": {"last_trainable": 30}},
    {"name": "regex", "epochs": 1, "learning_rate": 1e-4, "freeze": {"regex": REGEX}},
]


def _load(path: Path):
    import keras

    import transferctl.model.preprocess  # noqa: F401 - registers the layer

    return keras.saving.load_model(str(path), compile=False)


def _backbone_params_from(index: int) -> int:
    """Trainable parameters of a fresh MobileNet's layers [index:], BatchNorm excluded."""
    return _backbone_params_where(lambda position, name: position >= index)


def _backbone_params_where(trains) -> int:
    """Trainable parameters of a fresh MobileNet's layers for which `trains(index, name)`,
    BatchNorm excluded."""
    import keras

    backbone = keras.applications.MobileNet(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    return sum(
        int(np.prod(weight.shape))
        for position, layer in enumerate(backbone.layers)
        if trains(position, layer.name) and not isinstance(layer, keras.layers.BatchNormalization)
        for weight in layer.trainable_weights
    )


def test_each_freeze_mode_trains_what_the_config_says(cli, tmp_path: Path) -> None:
    config = tiny_config(
        model={"train_batchnorm": False, "weights": "none"},
        data={"limit": 64, "source": "digits"},
        train={"phases": PHASES},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    result = cli("finetune", write_config(tmp_path / "freeze.yaml", config), "--quiet")
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    phases = {
        phase["name"]: phase
        for phase in json.loads((run / "metrics.json").read_text())["training"]["phases"]
    }
    head = (1024 + 1) * 10  # pooled MobileNet features -> 10 digit classes
    layer_count = 86
    import keras

    names = [
        layer.name
        for layer in keras.applications.MobileNet(
            include_top=False, weights=None, input_shape=(32, 32, 3)
        ).layers
    ]
    until_index = names.index(UNTIL_LAYER)
    matched = [name for name in names if re.search(REGEX, name)]
    assert 20 < len(matched) < 60 and "conv1" in matched and "conv_pw_3_relu" in matched
    assert not {"conv_dw_4", "conv_dw_10", "conv_pad_12"} & set(matched)
    expected = {
        "all": (layer_count, head),
        "none": (0, head + _backbone_params_from(0)),
        "first": (50, head + _backbone_params_from(50)),
        "until": (until_index, head + _backbone_params_from(until_index)),
        "last": (layer_count - 30, head + _backbone_params_from(layer_count - 30)),
        "regex": (
            len(matched),
            head + _backbone_params_where(lambda position, name: not re.search(REGEX, name)),
        ),
    }
    for name, (frozen, params) in expected.items():
        assert phases[name]["frozen_backbone_layers"] == frozen, name
        assert phases[name]["trainable_params"] == params, name
    assert phases["all"]["trainable_params"] < phases["last"]["trainable_params"]
    assert phases["last"]["trainable_params"] < phases["none"]["trainable_params"]


def test_frozen_weights_and_batchnorm_statistics_are_bit_identical(
    cli, tmp_path: Path, tiny_run: Path, image_folder: Path
) -> None:
    """Start from a trained run, freeze until a layer: everything before it must not move."""
    config = tiny_config(
        image_folder,
        backbone=TINY_RUN_BACKBONE,
        model={
            "weights": str(tiny_run),
            "freeze": {"until": TINY_RUN_UNTIL_LAYER},
            "train_batchnorm": False,
        },
        train={"phases": [{"name": "tune", "epochs": 2, "learning_rate": 1e-2}]},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    result = cli("finetune", write_config(tmp_path / "until.yaml", config), "--quiet")
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])

    import keras

    before = _load(tiny_run / "model.keras").get_layer("backbone")
    after = _load(run / "model.keras").get_layer("backbone")
    names = [layer.name for layer in before.layers]
    boundary = names.index(TINY_RUN_UNTIL_LAYER)
    changed_after_boundary = 0
    for index, (old, new) in enumerate(zip(before.layers, after.layers, strict=True)):
        is_bn = isinstance(old, keras.layers.BatchNormalization)
        for old_weight, new_weight in zip(old.get_weights(), new.get_weights(), strict=True):
            same = np.array_equal(old_weight, new_weight)
            if index < boundary or is_bn:
                assert same, f"frozen layer {old.name} changed"
            elif not same:
                changed_after_boundary += 1
    assert changed_after_boundary > 10  # the unfrozen part did train


def test_weights_from_an_earlier_run_are_loaded_not_random(
    cli, tmp_path: Path, tiny_run: Path, image_folder: Path
) -> None:
    config = tiny_config(
        image_folder,
        backbone=TINY_RUN_BACKBONE,
        model={"weights": str(tiny_run), "freeze": "all"},
        train={"phases": [{"name": "head", "epochs": 1, "learning_rate": 1e-3}]},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    result = cli("finetune", write_config(tmp_path / "from_run.yaml", config), "--quiet")
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    source = _load(tiny_run / "model.keras").get_layer("backbone").get_weights()
    loaded = _load(run / "model.keras").get_layer("backbone").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(source, loaded, strict=True))

    import keras

    random = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).get_weights()
    kernels = [i for i, w in enumerate(random) if w.ndim == 4]
    assert not any(np.array_equal(random[i], loaded[i]) for i in kernels)


def test_weights_from_a_run_with_another_backbone_is_refused(
    cli, tmp_path: Path, tiny_run: Path, image_folder: Path
) -> None:
    config = tiny_config(
        image_folder,
        model={"weights": str(tiny_run), "backbone": "mobilenet_v2"},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    result = cli("finetune", write_config(tmp_path / "mismatch.yaml", config), "--quiet")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: model.weights: the run ")
    assert "trained backbone mobilenet_v3_small, this config asks for mobilenet_v2" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_until_layer_names_the_field(cli, tmp_path: Path) -> None:
    config = tiny_config(
        model={"freeze": {"until": "block_99"}}, output={"runs_dir": str(tmp_path / "runs")}
    )
    result = cli("finetune", write_config(tmp_path / "until.yaml", config), "--quiet")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: model.freeze.until: the backbone has no layer named")
    assert "transferctl backbones --layers" in result.stderr


def test_regex_freezes_the_matching_layers_wherever_they_are() -> None:
    """`{regex: ...}` on a built model: matches frozen, the rest trains, BatchNorm stays frozen."""
    from transferctl.config import backbones
    from transferctl.config.schema import Freeze, Head
    from transferctl.errors import UserError
    from transferctl.model.classifier import build_classifier
    from transferctl.model.freezing import apply_freeze, check_freezes

    spec = backbones.get("mobilenet_v3_small")
    model, backbone = build_classifier(spec, (32, 32), "none", Head(hidden=[]), 4)
    regex = Freeze(mode="regex", value="_(depthwise|project)$")
    report = apply_freeze(model, backbone, regex, False, "train.phases.0.freeze")
    names = [layer.name for layer in backbone.layers]
    matched = {i for i, name in enumerate(names) if re.search("_(depthwise|project)$", name)}
    assert report.frozen_layers == len(matched) > 10
    assert report.trainable_layers == len(names) - len(matched)
    assert report.trainable_batchnorm_layers == 0 and not report.backbone_frozen
    for index, layer in enumerate(backbone.layers):
        is_bn = type(layer).__name__ == "BatchNormalization"
        assert layer.trainable == (index not in matched and not is_bn), layer.name

    everything = apply_freeze(model, backbone, Freeze(mode="regex", value="."), True, "m")
    assert everything.backbone_frozen and everything.trainable_batchnorm_layers == 0
    assert everything.trainable_params == (576 + 1) * 4
    assert apply_freeze(model, backbone, Freeze(mode="all"), True, "m").backbone_frozen
    assert not apply_freeze(
        model, backbone, Freeze(mode="first", value=156), True, "m"
    ).backbone_frozen

    with pytest.raises(UserError, match=r"^train\.phases\.1\.freeze\.regex: '\^nope' matches none"):
        check_freezes(backbone, Freeze(mode="all"), [None, Freeze(mode="regex", value="^nope")])
