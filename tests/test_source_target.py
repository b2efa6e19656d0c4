"""Source -> target: `model.weights: {run: NAME}` starts from the newest finished run of a name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_config, write_config


def _fake_run(
    runs: Path,
    name: str,
    stamp: str,
    *,
    finished: bool = True,
    backbone: str = "mobilenet",
    kind: str | None = None,
) -> Path:
    """A run directory as `finetune` leaves it, as far as finding it by name needs."""
    run = runs / f"{name}-{stamp}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump({"name": name, "model": {"backbone": backbone}})
    )
    (run / "checkpoints" / "state.json").write_text(json.dumps({"finished": finished}))
    (run / "model.keras").write_bytes(b"not read by validate")
    if kind is not None:
        (run / "env.json").write_text(json.dumps({"kind": kind}))
    return run


def _target(tmp_path: Path, runs: Path, **model: object) -> Path:
    config = tiny_config(
        model={"weights": {"run": "source"}, **model}, output={"runs_dir": str(runs)}
    )
    return write_config(tmp_path / "target.yaml", config)


def test_the_newest_finished_run_of_the_name_is_used(cli, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _fake_run(runs, "source", "20260101-120000")
    _fake_run(runs, "source", "20260102-120000-2")
    newest = _fake_run(runs, "source", "20260102-120000-10")  # -10 is after -2
    _fake_run(runs, "source", "20260103-120000", finished=False)  # newer, but unfinished
    _fake_run(runs, "source-b", "20260104-120000")  # another name that starts the same
    result = cli("validate", _target(tmp_path, runs))
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["model"]["weights"] == str(newest.resolve())
    assert resolved["model"]["train_batchnorm"] is False  # pretrained: BatchNorm frozen
    planned = cli("plan", _target(tmp_path, runs))
    assert planned.exit_code == 0, planned.output
    assert (
        f"weights   {newest.resolve()} (a transferctl run: its trained backbone)" in planned.stdout
    )


def test_a_name_of_both_kinds_needs_the_kind_and_the_kind_finds_its_run(
    cli, tmp_path: Path
) -> None:
    """pretrain and finetune runs of one config share its name: `{run: NAME}` never guesses."""
    runs = tmp_path / "runs"
    encoder = _fake_run(runs, "source", "20260101-120000", kind="pretrain")
    tuned = _fake_run(runs, "source", "20260102-120000", kind="finetune")
    older = _fake_run(runs, "source", "20260101-110000")  # before kinds: a finetune run
    result = cli("validate", _target(tmp_path, runs))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith("error: model.weights: finished runs of 2 kinds are named 'source' ")
    assert f"finetune: {tuned.resolve()}" in line and f"pretrain: {encoder.resolve()}" in line
    assert "{run: source, kind: pretrain}" in line and len(result.stderr.splitlines()) == 1
    for kind, expected in (("pretrain", encoder), ("finetune", tuned)):
        result = cli("validate", _target(tmp_path, runs, weights={"run": "source", "kind": kind}))
        assert result.exit_code == 0, result.output
        assert yaml.safe_load(result.stdout)["model"]["weights"] == str(expected.resolve())
    assert older != tuned
    bad = cli("validate", _target(tmp_path, runs, weights={"run": "source", "kind": "teacher"}))
    assert bad.exit_code == 2 and "model.weights" in bad.stderr and "`kind`" in bad.stderr
    missing = cli("validate", _target(tmp_path, runs, weights={"run": "other", "kind": "pretrain"}))
    assert missing.exit_code == 2
    assert "no finished pretrain run named 'other'" in missing.stderr
    assert "transferctl pretrain with name: other" in missing.stderr


def test_no_finished_run_of_the_name_exits_2(cli, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _fake_run(runs, "source", "20260103-120000", finished=False)
    result = cli("validate", _target(tmp_path, runs))
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: model.weights: no finished run named 'source' in {runs.resolve()} "
        "(1 unfinished); train it first (transferctl finetune with name: source), or check "
        "output.runs_dir\n"
    )
    empty = cli("validate", _target(tmp_path, tmp_path / "nowhere"))
    assert empty.exit_code == 2
    assert empty.stderr.startswith("error: model.weights: no finished run named 'source' in ")


def test_a_run_with_another_backbone_is_refused_by_plan_and_finetune(cli, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    source = _fake_run(runs, "source", "20260101-120000", backbone="resnet50")
    target = _target(tmp_path, runs)
    expected = (
        f"error: model.weights: the run {source.resolve()} trained backbone resnet50, this "
        "config asks for mobilenet; set model.backbone: resnet50, or start from "
        "another run\n"
    )
    for command in ("plan", "finetune"):
        result = cli(command, target, *(["--quiet"] if command == "finetune" else []))
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr == expected, command
    assert sorted(path.name for path in runs.iterdir()) == [source.name]  # no run started


@pytest.mark.slow
def test_target_with_other_classes_starts_from_the_source_backbone(cli, tmp_path: Path) -> None:
    """Source on digits 0-4, target on 5-9 with 5 labels each: a new head, the same backbone."""
    runs = tmp_path / "runs"
    source_config = tiny_config(
        name="source",
        data={"classes": [0, 1, 2, 3, 4], "limit": 120},
        train={"phases": [{"name": "scratch", "epochs": 1, "learning_rate": 2e-3}]},
        output={"runs_dir": str(runs)},
    )
    result = cli("finetune", write_config(tmp_path / "source.yaml", source_config), "--quiet")
    assert result.exit_code == 0, result.output
    source = Path(result.stdout.strip().splitlines()[-1])

    target_config = tiny_config(
        name="target",
        data={"classes": [5, 6, 7, 8, 9], "per_class": 5, "limit": 120},
        model={"weights": {"run": "source"}, "freeze": "all"},
        train={"phases": [{"name": "head", "epochs": 1, "learning_rate": 1e-3}]},
        output={"runs_dir": str(runs)},
    )
    result = cli("finetune", write_config(tmp_path / "target.yaml", target_config), "--quiet")
    assert result.exit_code == 0, result.output
    target = Path(result.stdout.strip().splitlines()[-1])

    resolved = yaml.safe_load((target / "config.yaml").read_text())
    assert resolved["model"]["weights"] == str(source)
    assert resolved["model"]["train_batchnorm"] is False
    assert resolved["data"]["classes"] == ["5", "6", "7", "8", "9"]
    assert (target / "labels.txt").read_text().split() == ["5", "6", "7", "8", "9"]
    assert (source / "labels.txt").read_text().split() == ["0", "1", "2", "3", "4"]

    import keras

    import transferctl.model.preprocess  # noqa: F401 - registers the 0.1 layer, if any

    source_model = keras.saving.load_model(str(source / "model.keras"), compile=False)
    target_model = keras.saving.load_model(str(target / "model.keras"), compile=False)
    assert target_model.output_shape == (None, 5)
    before = source_model.get_layer("backbone").get_weights()
    after = target_model.get_layer("backbone").get_weights()
    assert len(before) == len(after) > 100
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    history = (target / "history.csv").read_text().splitlines()
    assert len(history) == 2  # the target did train its head for its epoch
