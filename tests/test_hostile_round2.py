"""Hostile input, round 2 (beyond run references): symbolic link loops wherever a path is
named, control characters, role checks on teachers and predicted models, `--force` with a
changed backbone, `export --out` into a foreign folder, bounded estimates and waits. Each ends
in one line and exit 2 (3 for predict's skips) within seconds, and leaves the runs usable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import tiny_config, write_config


def _one_line(result: Any, starts: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


def test_a_symbolic_link_loop_wherever_a_path_is_named_is_exit_2(
    tiny_run: Path, tmp_path: Path, cli: Any
) -> None:
    loop = tmp_path / "loop"
    os.symlink(tmp_path / "back", loop)
    os.symlink(loop, tmp_path / "back")
    config = write_config(tmp_path / "c.yaml", tiny_config())
    cases = {
        "data.path": (
            "validate",
            config,
            "--set",
            "data.source=folder",
            "--set",
            f"data.path={loop}",
        ),
        "model.weights": ("validate", config, "--set", f"model.weights={loop}"),
        "distill.teacher": ("validate", config, "--set", f"distill.teacher={loop}"),
        "--run-dir": ("finetune", config, "--run-dir", loop),
        "--resume": ("pretrain", "--resume", loop),
        "--out": ("export", tiny_run, "--format", "keras", "--out", loop),
        "DATA_PATH": ("doctor", loop),
        "RUN_DIR": ("evaluate", loop),
        "RUN_DIR|MODEL": ("predict", loop, loop),
        f"{loop}": ("show", loop),
    }
    for where, args in cases.items():
        result = cli(*args)
        _one_line(result, f"{where}: ")
        assert "symbolic link loop" in result.stderr, (where, result.stderr)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["back", "c.yaml", "loop"]


def test_a_control_character_in_a_config_or_a_set_value_is_named_by_line_and_column(
    tmp_path: Path, cli: Any
) -> None:
    config = write_config(tmp_path / "c.yaml", tiny_config())
    text = config.read_text()
    config.write_text(text.replace("seed:", "\x07seed:", 1))
    line = text[: text.index("seed:")].count("\n") + 1
    result = cli("validate", config)
    _one_line(result, f"{config} line {line} column 1: a control character U+0007")
    assert '("\\x07")' in result.stderr
    config.write_text(text)
    result = cli("validate", config, "--set", "train.phases.0.name=a\x1bb")
    _one_line(result, "--set train.phases.0.name line 1 column 2: a control character U+001B")
    # written as an escape, it is a value, and the name's own check refuses it, printably
    result = cli("validate", config, "--set", 'train.phases.0.name="a\\x1bb"')
    _one_line(result, "train.phases.0.name: ")
    assert "\x1b" not in result.stderr and "a\\x1bb" in result.stderr


def test_plan_estimate_at_a_huge_image_size_is_refused_with_the_memory_it_needs(
    tmp_path: Path, cli: Any
) -> None:
    config = write_config(tmp_path / "c.yaml", tiny_config())
    result = cli("plan", config, "--estimate", "--set", "data.image_size=[4096, 4096]")
    _one_line(result, "--estimate: a training step at data.image_size [4096, 4096] holds about")
    assert "GiB of activations per image" in result.stderr


def test_export_refuses_a_folder_that_holds_other_files(
    tiny_run: Path, tmp_path: Path, cli: Any
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = cli("export", tiny_run, "--format", "keras", "--out", tmp_path)
    _one_line(result, f"--out: {tmp_path} is not empty and holds no export (no export.json)")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def _fake_teacher(folder: Path, finished: bool = True, softmax: bool = True) -> Path:
    """A run folder as a teacher's is checked: its model a softmax classifier over the digits,
    or (softmax False) an encoder's pooled features, ten channels wide, like a pretrain run's."""
    from transferctl import runtime

    keras = runtime.keras()
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(10, 3)(inputs))
    outputs = keras.layers.Softmax()(features) if softmax else features
    (folder / "checkpoints").mkdir(parents=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    (folder / "config.yaml").write_text("name: teacher\n")
    (folder / "labels.txt").write_text("".join(f"{digit}\n" for digit in range(10)))
    state = {"finished": finished}
    (folder / "checkpoints" / "state.json").write_text(json.dumps(state))
    return folder


def test_a_teacher_must_be_a_finished_classifier_and_predict_wants_one(
    tmp_path: Path, image_folder: Path, cli: Any
) -> None:
    encoder = _fake_teacher(tmp_path / "encoder", softmax=False)
    runs = tmp_path / "runs"
    config = write_config(
        tmp_path / "c.yaml",
        tiny_config(distill={"teacher": str(encoder)}, output={"runs_dir": str(runs)}),
    )
    result = cli("finetune", config)
    _one_line(result, f"distill.teacher: {encoder / 'model.keras'} is not a classifier")
    assert "its last layer is no softmax" in result.stderr and not runs.exists()

    unfinished = _fake_teacher(tmp_path / "unfinished", finished=False)
    result = cli("validate", config, "--set", f"distill.teacher={unfinished}")
    _one_line(result, f"distill.teacher: {unfinished} is not a finished transferctl run")

    image = next(image_folder.rglob("*.png"))
    result = cli("predict", encoder / "model.keras", image)
    _one_line(result, f"{encoder / 'model.keras'}: not a classifier: its last layer is no softmax")
    result = cli("predict", _fake_teacher(tmp_path / "classifier") / "model.keras", image)
    assert result.exit_code == 0, result.output  # a softmax classifier over its labels predicts


def _fake_pretrain_run(folder: Path, name: str = "encoder") -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(f"name: {name}\n")
    (folder / "env.json").write_text(json.dumps({"kind": "pretrain"}))
    (folder / "model.keras").write_bytes(b"PK")
    (folder / "checkpoints" / "state.json").write_text(json.dumps({"finished": True}))
    return folder


def test_pretrains_hint_names_the_run_only_when_the_name_finds_it(tmp_path: Path) -> None:
    from transferctl.commands.pretrain import _found_by_name

    older = _fake_pretrain_run(tmp_path / "runs" / "encoder-20260101-120000")
    assert _found_by_name(older)
    elsewhere = _fake_pretrain_run(tmp_path / "runs" / "my-encoder")  # pretrain --run-dir
    assert not _found_by_name(elsewhere)  # {run: encoder} would find `older`: the path only
    _fake_pretrain_run(tmp_path / "runs" / "encoder-20260102-120000")
    assert not _found_by_name(older)  # a newer run of the name


def test_control_characters_in_an_error_line_are_escaped(tmp_path: Path, cli: Any) -> None:
    missing = tmp_path / "a\x1b[31mb\x07"
    result = cli("show", missing)
    _one_line(result, f"{tmp_path}/a\\x1b[31mb\\x07: ")
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


def test_data_classes_on_a_folder_without_class_folders_says_so(tmp_path: Path, cli: Any) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"")
    config = write_config(tmp_path / "c.yaml", tiny_config(flat, data={"classes": ["a", "b"]}))
    result = cli("validate", config)
    _one_line(result, "data.classes: unknown class(es) 'a', 'b': the folder has no class sub")


def test_force_with_a_model_its_checkpoint_does_not_fit_leaves_the_run_resumable(
    tmp_path: Path, cli: Any
) -> None:
    one_phase = {"phases": [{"name": "head", "epochs": 1, "learning_rate": 2e-3}]}
    config = write_config(
        tmp_path / "c.yaml",
        tiny_config(train={**one_phase, "keep_checkpoints": True}, data={"limit": 64}),
    )
    run = tmp_path / "run"
    assert cli("finetune", config, "--run-dir", run, "-q").exit_code == 0
    # as if killed after its last checkpoint, before the run was marked finished
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    (run / "checkpoints" / "state.json").write_text(json.dumps({**state, "finished": False}))
    (run / "model.keras").unlink()
    before = (run / "config.yaml").read_bytes()
    result = cli(
        "finetune", config, "--run-dir", run, "--force", "-q", "--set", "model.head.hidden=[8]"
    )
    _one_line(result, f"--force: the checkpoint of {run} does not load into the new config's")
    assert (run / "config.yaml").read_bytes() == before
    result = cli("finetune", "--resume", run, "-q")
    assert result.exit_code == 0, result.output
    assert (run / "model.keras").is_file()


def test_a_disk_without_room_for_the_spilled_features_is_exit_2_that_resumes(
    tmp_path: Path, cli: Any, monkeypatch: Any
) -> None:
    from transferctl.train import feature_cache

    one_phase = {"phases": [{"name": "head", "epochs": 1, "learning_rate": 2e-3}]}
    config = write_config(
        tmp_path / "c.yaml",
        tiny_config(model={"freeze": "all"}, train=one_phase, data={"limit": 64}),
    )
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(feature_cache, "MEMORY_BUDGET_BYTES", 0)  # the features spill to disk
        patch.setattr(feature_cache, "free_bytes", lambda folder: 32 * 2**20)  # a full disk
        result = cli("finetune", config, "--run-dir", run, "-q")
    _one_line(result, "train.feature_cache: the cached features need 0 MiB on")
    assert "only 32 MiB is free" in result.stderr
    assert not list(run.rglob("features-*.npy"))
    result = cli("finetune", "--resume", run, "-q")  # room again
    assert result.exit_code == 0, result.output


def test_json_from_a_run_is_read_bounded_fifos_and_deep_nesting_included(
    tmp_path: Path, cli: Any
) -> None:
    runs = tmp_path / "runs"
    piped = _fake_pretrain_run(runs / "tiny-20260101-120000", name="tiny")
    (piped / "env.json").unlink()
    os.mkfifo(piped / "env.json")  # opened plainly, it would wait for a writer forever
    deep = "[" * 20_000 + "]" * 20_000
    (_fake_pretrain_run(runs / "tiny-20260102-120000", name="tiny") / "env.json").write_text(deep)
    config = write_config(tmp_path / "c.yaml", tiny_config(output={"runs_dir": str(runs)}))
    result = cli("validate", config, "--set", "model.weights={run: tiny}")
    assert result.exit_code == 0, result.output  # kinds unreadable: counted as finetune runs
    assert "tiny-20260102-120000" in result.stdout
    (piped / "metrics.json").write_text(deep)
    result = cli("show", piped)
    _one_line(result, f"{piped / 'metrics.json'}: damaged file (JSON nested too deeply)")
