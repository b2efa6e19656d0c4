"""Bad configs: exit 2, one line per mistake naming the field path, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

BASE = "data: {source: digits}\nmodel: {backbone: mobilenet_v2}\n"

CASES = [
    # (config text or overrides, field path, words of the message)
    ("model: {freeze: some}", "model.freeze", "expected one of all, none, {first: N}"),
    ("model: {backbone: resnet5O}", "model.backbone", "unknown backbone 'resnet5O'"),
    ("model: {bakbone: resnet50}", "model.bakbone", "unknown key; expected one of backbone"),
    ("data: {batch_size: 0}", "data.batch_size", "expected a number greater than 0; got 0"),
    ("data: {source: imagenet}", "data.source", "expected one of cifar10, cifar100, folder"),
    ("data: {validation_split: 1.5}", "data.validation_split", "less than 1.0; got 1.5"),
    ("data: {image_size: [16, 16]}", "data.image_size", "too small for mobilenet_v2"),
    ("data: {image_size: [224, 224, 3]}", "data.image_size", "expected [height, width]"),
    ("data: {source: folder}", "data.path", "required when data.source is folder"),
    ("data: {source: folder, path: nowhere}", "data.path", "folder not found"),
    ("model: {weights: missing.weights.h5}", "model.weights", "does not exist"),
    ("model: {freeze: {first: -3}}", "model.freeze", "expects a whole number >= 0"),
    ("train: {optimizer: adagrad}", "train.optimizer", "expected one of adam, adamw, sgd"),
    ("train: {phases: []}", "train.phases", "expected at least 1 item"),
    (
        "train: {phases: [{name: a, epochs: two, learning_rate: 0.1}]}",
        "train.phases.0.epochs",
        "expected a whole number; got 'two'",
    ),
    (
        "train: {phases: [{name: a, epochs: 1, learning_rate: -1}]}",
        "train.phases.0.learning_rate",
        "greater than 0.0; got -1",
    ),
    (
        "train: {phases: [{name: a, epochs: 1, learning_rate: 1}, "
        "{name: a, epochs: 1, learning_rate: 1}]}",
        "train.phases.1.name",
        "phases 0 and 1 share it",
    ),
    (
        "train: {phases: [{epochs: 1, learning_rate: 1}, {name: phase1, epochs: 1, "
        "learning_rate: 1}]}",
        "train.phases.1.name",
        "'phase1' is also the name of train.phases.0",
    ),
    (
        "train: {phases: [{name: ../up, epochs: 1, learning_rate: 1}]}",
        "train.phases.0.name",
        "expected a short label",
    ),
    ("train: {weight_decay: 0.1}", "train.weight_decay", "applies to adamw and sgd"),
    ("train: {early_stopping: {patience: 0}}", "train.early_stopping.patience", "greater than 0"),
    ("seed: lucky", "seed", "expected a whole number; got 'lucky'"),
    ("output: [runs]", "output", "expected a mapping"),
]


@pytest.mark.parametrize(("text", "field", "words"), CASES, ids=[c[1] for c in CASES])
def test_bad_config_exits_2_naming_the_field(cli, tmp_path: Path, text, field, words) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text + "\n")
    result = cli("validate", config)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {field}: "), lines
    assert words in lines[0]
    assert "Traceback" not in result.output
    assert str(config) in lines[0] or "fix" in lines[0] or ";" in lines[0]


def test_finetune_rejects_bad_config_before_training(cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model: {freeze: some}\n")
    result = cli("finetune", config, "--set", f"output.runs_dir={tmp_path / 'runs'}")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: model.freeze: ")
    assert not (tmp_path / "runs").exists()


def test_override_errors_name_the_override(cli, tmp_path: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text(BASE)
    result = cli("validate", config, "--set", "data.batch_size=-4")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: data.batch_size: expected a number greater than 0; got -4; "
        "fix it in --set data.batch_size=..."
    )
    result = cli("validate", config, "--set", "train.phases.5.epochs=1")
    assert result.exit_code == 2
    assert "train.phases.5: index 5 is out of range (the list has 2 items)" in result.stderr
    result = cli("validate", config, "--set", "novalue")
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.stderr


def test_yaml_syntax_error_names_line_and_column(cli, tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("data:\n  source: [digits\n")
    result = cli("validate", config)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {config} line ")
    assert "invalid YAML" in result.stderr


def test_missing_config_file(cli, tmp_path: Path) -> None:
    result = cli("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "config file not found" in result.stderr


def test_several_mistakes_are_all_reported(cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("data: {batch_size: 0, bogus: 1}\nmodel: {freeze: some}\n")
    result = cli("validate", config)
    assert result.exit_code == 2
    fields = [line.split(":")[1].strip() for line in result.stderr.strip().splitlines()]
    assert fields == ["data.batch_size", "data.bogus", "model.freeze"]


def test_phases_without_names_get_phase1_phase2(cli, tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "unnamed.yaml"
    config.write_text(
        "train: {phases: [{epochs: 3, learning_rate: 0.01}, "
        "{name: polish, epochs: 1, learning_rate: 0.001}, {epochs: 1, learning_rate: 0.0001}]}\n"
    )
    result = cli("validate", config)
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert [phase["name"] for phase in resolved["train"]["phases"]] == [
        "phase1",
        "polish",
        "phase3",
    ]
