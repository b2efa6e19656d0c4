"""Hostile input and concurrent use (issue 9): never hang, never exhaust memory, never
overwrite, never trust a damaged run. One section per finding of the issue; most need no
training (hand-made runs with a plain Keras model), the few that do are marked slow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_image_folder, tiny_config, write_config
from tests.hostile_inputs import (
    ALIAS_BOMB,
    make_fifo,
    make_png_bomb,
    run_measured,
    save_image,
)

HANG_LIMIT = 45  # seconds: a command that hangs is killed well under a minute
DIGITS = [str(digit) for digit in range(10)]


# ----------------------------------------------------------------------------------------------
# fixtures: runs made by hand (a plain Keras model), no training
# ----------------------------------------------------------------------------------------------


def _resolved_config(work: Path, **sections: Any) -> str:
    from transferctl.config.loader import dump_config, load_config

    config = tiny_config(output={"runs_dir": str(work / "runs")}, **sections)
    return dump_config(load_config(write_config(work / "source.yaml", config)))


def make_run(folder: Path, classes: list[str], **sections: Any) -> Path:
    """A finished run directory whose model.keras averages the pixels into a Dense softmax."""
    import keras

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(_resolved_config(folder.parent, **sections))
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in classes))
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(pooled)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "state.json").write_text(json.dumps({"finished": True}))
    return folder


def make_unfinished_run(folder: Path) -> Path:
    """A run killed after its first epoch: config, labels, a checkpoint and its state."""
    from transferctl.train import checkpoint

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(_resolved_config(folder.parent))
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in DIGITS))
    weights = "epoch-0001-step-000000-phase-0.weights.h5"
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / weights).write_bytes(os.urandom(4096))
    state = checkpoint.TrainState(epochs_done=1, weights=weights, best_weights=weights)
    checkpoint.commit(folder / "checkpoints", state)
    return folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("digits") / "run", DIGITS)


@pytest.fixture
def unfinished(tmp_path: Path) -> Path:
    return make_unfinished_run(tmp_path / "unfinished")


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s run lock until it is killed."""
    code = (
        "import sys, time; from pathlib import Path; "
        "from transferctl.rundir import lock as runlock; "
        "runlock.acquire(Path(sys.argv[1]), 'test'); print('held', flush=True); time.sleep(120)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


# ----------------------------------------------------------------------------------------------
# 1. export --out never overwrites another run or files it did not write
# ----------------------------------------------------------------------------------------------


def test_export_out_refuses_another_run_directory(
    digits_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    other = make_run(tmp_path / "other", ["a", "b"])
    before = (other / "model.keras").read_bytes()
    result = cli("export", digits_run, "--format", "keras", "--out", other)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --out: {other} is another run directory; runs are never overwritten; "
        "pass a new or empty folder\n"
    )
    result = cli("export", digits_run, "--format", "keras", "--out", other / "export")
    assert result.exit_code == 2
    assert f"--out: {other / 'export'} is inside {other}, which is another run" in result.stderr
    assert (other / "model.keras").read_bytes() == before
    assert not (other / "export").exists()


def test_export_out_refuses_a_folder_whose_files_it_would_overwrite(
    digits_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.onnx").write_text("my own model")
    (out / "notes.txt").write_text("unrelated")
    result = cli("export", digits_run, "--format", "keras", "--format", "onnx", "--out", out)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --out: {out} is not empty and holds no export (no export.json); the export "
        "would write its files among others; pass a new or empty folder\n"
    )
    assert (out / "model.onnx").read_text() == "my own model"
    assert sorted(path.name for path in out.iterdir()) == ["model.onnx", "notes.txt"]


def test_export_out_refuses_the_exports_of_another_run(
    digits_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "shipped"
    out.mkdir()
    document = {"source_run": str(tmp_path / "elsewhere"), "class_names": DIGITS, "exports": {}}
    (out / "export.json").write_text(json.dumps(document))
    result = cli("export", digits_run, "--format", "keras", "--out", out)
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: --out: {out} holds the exports of another run ({tmp_path / 'elsewhere'})"
    )


@pytest.mark.slow
def test_export_removes_what_a_killed_export_left(
    tiny_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "out"
    (out / ".saved_model.k1l2.tmp" / "variables").mkdir(parents=True)
    (out / ".model.keras.a1b2.tmp.keras").write_bytes(b"half a model")
    (out / ".saved_model.x9y8.old" / "saved_model").mkdir(parents=True)  # a swap cut short
    (out / ".saved_model.x9y8.old" / "saved_model" / "saved_model.pb").write_bytes(b"previous")
    result = cli("export", tiny_run, "--format", "keras", "--out", out)
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in out.iterdir() if path.name != ".transferctl.lock")
    assert names == ["export.json", "labels.txt", "model.keras", "saved_model"]
    assert (out / "saved_model" / "saved_model.pb").read_bytes() == b"previous"  # put back


# ----------------------------------------------------------------------------------------------
# 2. special files: reported like any bad file, never a hang
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def folder_with_fifo(tmp_path: Path) -> Path:
    root = make_image_folder(tmp_path / "images", classes=("red", "green"), per_class=6)
    make_fifo(root / "red" / "pipe.png")
    return root


def test_doctor_reports_a_named_pipe_instead_of_hanging(folder_with_fifo: Path) -> None:
    started = time.monotonic()
    code, out, err, _ = run_measured(["doctor", str(folder_with_fifo)], timeout=HANG_LIMIT)
    assert code == 0, err
    assert "red/pipe.png: not a regular file: a named pipe (FIFO)" in out
    assert time.monotonic() - started < HANG_LIMIT


def test_finetune_audit_reports_a_named_pipe_instead_of_hanging(
    folder_with_fifo: Path, tmp_path: Path
) -> None:
    config = tiny_config(
        folder_with_fifo,
        data={"on_bad_file": "fail", "validation_split": 0.2},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    path = write_config(tmp_path / "fifo.yaml", config)
    code, _, err, _ = run_measured(["finetune", str(path), "--quiet"], timeout=HANG_LIMIT)
    assert code == 2, err
    assert err.strip().splitlines()[-1] == (
        f"error: data.path: {folder_with_fifo / 'red' / 'pipe.png'}: not a regular file: a "
        "named pipe (FIFO); fix or remove it, or set data.on_bad_file: skip"
    )


def test_predict_skips_named_pipes_and_predicts_the_rest(
    digits_run: Path, folder_with_fifo: Path, tmp_path: Path
) -> None:
    lone = make_fifo(tmp_path / "lone.jpg")
    good = save_image(tmp_path / "good.png")
    code, out, err, _ = run_measured(
        ["predict", str(digits_run), str(good), str(lone), str(folder_with_fifo), "--json"],
        timeout=HANG_LIMIT,
    )
    assert code == 3, err
    assert f"skipped {lone}: not a regular file: a named pipe (FIFO)" in err
    assert f"skipped {folder_with_fifo / 'red' / 'pipe.png'}: not a regular file" in err
    predicted = [json.loads(line)["path"] for line in out.splitlines()]
    assert str(good) in predicted
    assert len(predicted) == 1 + 12  # good.png and the folder's images


def test_devices_are_reported_like_any_bad_file(tmp_path: Path) -> None:
    from transferctl.data import audit

    device = tmp_path / "red" / "device.png"
    device.parent.mkdir()
    device.symlink_to("/dev/null")
    report = audit.inspect_file(device, "train", "red", webp=False)
    assert report.reason == "not a regular file: a character device"


# ----------------------------------------------------------------------------------------------
# 3. small inputs, bounded memory; error lines cut to a readable length
# ----------------------------------------------------------------------------------------------


def test_validate_refuses_a_yaml_alias_bomb_in_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(ALIAS_BOMB)
    code, _, err, peak = run_measured(["validate", str(bomb)], timeout=HANG_LIMIT)
    assert code == 2, err
    assert err == (
        f"error: {bomb} line 6 column 4: too large: more than 100,000 values with its aliases "
        "expanded; write the values out, without aliases\n"
    )
    assert peak < 1024, f"peak RSS {peak:.0f} MiB"


@pytest.mark.parametrize(
    "text",
    [
        "name: &a [" + ", ".join(["x" * 100] * 20) + "]\nseed: [*a, *a, *a, *a, *a, *a]\n",
        "data: {batch_size: " + "9" * 5000 + "x}\n",
        "model: {backbone: '" + "resnet" * 2000 + "'}\n",
    ],
    ids=["aliased-list", "long-number", "long-name"],
)
def test_error_lines_quote_values_cut_to_a_readable_length(
    text: str, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    config = tmp_path / "long.yaml"
    config.write_text(text)
    result = cli("validate", config)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines and all(len(line) < 1200 for line in lines), [len(line) for line in lines]
    assert all(line.startswith("error: ") for line in lines)


def test_set_values_go_through_the_same_bounded_reader(cli: Callable[..., Any]) -> None:
    bomb = "[" + ", ".join(["&a [1,2,3,4,5,6,7,8,9,10]"] + ["*a"] * 9) + "]"
    nested = "[" * 40 + "]" * 40
    result = cli("validate", "configs/demo.yaml", "--set", f"data.classes={bomb * 1}")
    assert result.exit_code == 2
    result = cli("validate", "configs/demo.yaml", "--set", f"data.classes={nested}")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: --set data.classes line 1 column 33: lists and mappings nested more than 32 deep"
    )


def test_recursive_aliases_are_refused(tmp_path: Path, cli: Callable[..., Any]) -> None:
    config = tmp_path / "loop.yaml"
    config.write_text("train: &t {phases: *t}\n")
    result = cli("validate", config)
    assert result.exit_code == 2
    assert "the alias *t refers to a value that contains it" in result.stderr


@pytest.fixture(scope="module")
def png_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


def test_predict_refuses_a_decompression_bomb_and_predicts_the_rest(
    digits_run: Path, png_bomb: Path, tmp_path: Path
) -> None:
    assert png_bomb.stat().st_size < 500_000
    good = [save_image(tmp_path / f"good{index}.png", (40 * index, 90, 200)) for index in range(3)]
    code, out, err, peak = run_measured(
        ["predict", str(digits_run), str(png_bomb), *map(str, good), "--json"],
        timeout=HANG_LIMIT * 2,
    )
    assert code == 3, err
    assert f"skipped {png_bomb}: image too large: 400,000,000 pixels, more than 89,478,485" in err
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(path) for path in good]
    assert peak < 1024, f"peak RSS {peak:.0f} MiB"


def test_the_pixel_cap_is_the_same_in_the_audit_and_in_predict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow only warns between its threshold and twice it; both readers refuse it."""
    from PIL import Image

    from transferctl import predict
    from transferctl.data import audit

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    image = save_image(tmp_path / "red" / "big.png", side=40)  # 1,600 pixels
    report = audit.inspect_file(image, "train", "red", webp=False)
    assert report.reason is not None and report.reason.startswith(
        "image too large: 40x40 pixels, more than 1,000"
    )
    with pytest.raises(predict.UnreadableImage, match="image too large: 40x40 pixels"):
        predict.read_image(image, (32, 32))


# ----------------------------------------------------------------------------------------------
# 4. names that cannot round-trip through labels.txt are refused up front
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("two\nlines", "contains the control character U+000A (line feed)"),
        ("carriage\rreturn", "contains the control character U+000D (carriage return)"),
        ("escape\x1bcode", "contains the control character U+001B"),
        (" padded", "starts or ends with white space, which labels.txt does not keep"),
        ("line\u2028separator", "contains the control character U+2028"),
    ],
)
def test_validate_refuses_class_folders_whose_names_cannot_round_trip(
    name: str, problem: str, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    root = make_image_folder(tmp_path / "images", classes=("red", "green"), per_class=3)
    (root / "green").rename(root / name)
    config = write_config(tmp_path / "names.yaml", tiny_config(root))
    result = cli("validate", config)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: data.path: the class folder {str(root / name)!r}: its name {problem}; rename "
        "the folder (class names are written one per line to labels.txt)\n"
    )
    result = cli("doctor", root)
    assert result.exit_code == 2
    assert problem in result.stderr


def test_class_folder_names_that_are_not_utf8_are_refused(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    root = make_image_folder(tmp_path / "images", classes=("red", "green"), per_class=3)
    os.rename(root / "green", os.fsencode(root) + b"/gr\xffn")
    result = cli("validate", write_config(tmp_path / "bytes.yaml", tiny_config(root)))
    assert result.exit_code == 2
    assert "its name is not valid UTF-8" in result.stderr


# ----------------------------------------------------------------------------------------------
# 5. --resume never trusts a damaged run
# ----------------------------------------------------------------------------------------------


def _cut_at_a_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))


@pytest.mark.parametrize(
    ("damage", "damaged", "what"),
    [
        (_cut_at_a_line, "config.yaml", "has changed since the last checkpoint"),
        (lambda path: path.write_text(""), "config.yaml", "is empty"),
        (lambda path: path.unlink(), "config.yaml", "is missing"),
        (lambda path: path.unlink(), "labels.txt", "is missing"),
        (lambda path: path.write_text("0\n1\n"), "labels.txt", "has changed since"),
        (
            lambda path: path.write_bytes(path.read_bytes()[:100]),
            "checkpoints/epoch-0001-step-000000-phase-0.weights.h5",
            "has changed since",
        ),
        (
            lambda path: path.write_text(path.read_text()[:40]),
            "checkpoints/state.json",
            "the run's training state is damaged (not valid JSON",
        ),
    ],
    ids=[
        "config-cut",
        "config-empty",
        "config-gone",
        "labels-gone",
        "labels-edited",
        "weights-cut",
        "state-cut",
    ],
)
def test_resume_refuses_damaged_run_files_naming_them(
    unfinished: Path,
    damage: Callable[[Path], None],
    damaged: str,
    what: str,
    cli: Callable[..., Any],
) -> None:
    damage(unfinished / damaged)
    untouched = {path: path.read_bytes() for path in unfinished.rglob("*") if path.is_file()}
    result = cli("finetune", "--resume", unfinished, "--quiet")
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {unfinished / damaged}: {what}"), line
    assert "Traceback" not in result.output
    after = {path: path.read_bytes() for path in unfinished.rglob("*") if path.is_file()}
    after.pop(unfinished / ".transferctl.lock", None)
    assert after == untouched  # never repaired silently


def test_state_files_record_checksums_of_what_resuming_needs(unfinished: Path) -> None:
    state = json.loads((unfinished / "checkpoints" / "state.json").read_text())
    assert sorted(state["checksums"]) == [
        "checkpoints/epoch-0001-step-000000-phase-0.weights.h5",
        "config.yaml",
        "labels.txt",
    ]
    assert all(len(digest) == 64 for digest in state["checksums"].values())


@pytest.mark.slow
def test_an_old_state_file_without_checksums_still_resumes(
    tiny_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "old")
    (run / "model.keras").unlink()
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    state.pop("checksums")
    state["finished"] = False
    (run / "checkpoints" / "state.json").write_text(json.dumps(state))
    result = cli("finetune", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert (run / "model.keras").is_file()


# ----------------------------------------------------------------------------------------------
# 6. one trainer per run directory
# ----------------------------------------------------------------------------------------------


def test_a_run_in_use_is_named_with_its_holder(
    unfinished: Path, digits_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    holder = _holder(unfinished)
    try:
        result = cli("finetune", "--resume", unfinished, "--quiet")
        assert result.exit_code == 2
        assert result.stderr == (
            f"error: --resume: {unfinished} is in use by PID {holder.pid} (a finetune is "
            "training it); wait for it to finish or stop it\n"
        )
        result = cli("evaluate", unfinished)
        assert result.exit_code == 2
        assert f"in use by PID {holder.pid}" in result.stderr and "--resume" not in result.stderr
        result = cli("export", unfinished, "--format", "keras")
        assert result.exit_code == 2
        assert f"error: RUN_DIR: {unfinished} is in use by PID {holder.pid}" in result.stderr
        result = cli("predict", unfinished, save_image(tmp_path / "one.png"))
        assert result.exit_code == 2
        assert f"is in use by PID {holder.pid}" in result.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    # the kernel dropped the lock of the killed process: nothing blocks, nothing to clean up
    from transferctl.rundir import lock as runlock

    assert runlock.holder(unfinished) is None
    result = cli("evaluate", unfinished)
    assert "in use" not in result.stderr
    assert "its training did not finish" in result.stderr


@pytest.mark.slow
def test_two_resumes_at_once_exactly_one_trains(tiny_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / "model.keras").unlink()
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    state["finished"] = False
    (run / "checkpoints" / "state.json").write_text(json.dumps(state))

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "transferctl", "finetune", "--resume", str(run), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first, second = start(), start()
    results = {
        process.pid: (process, *process.communicate(timeout=600)) for process in (first, second)
    }
    codes = sorted(process.returncode for process, _, _ in results.values())
    assert codes == [0, 2], [err for _, _, err in results.values()]
    winner = next(pid for pid, (process, _, _) in results.items() if process.returncode == 0)
    loser = next(err for process, _, err in results.values() if process.returncode == 2)
    assert loser.strip().splitlines()[-1] == (
        f"error: --resume: {run} is in use by PID {winner} (a finetune is training it); "
        "wait for it to finish or stop it"
    )
    assert (run / "model.keras").is_file()


# ----------------------------------------------------------------------------------------------
# 7. limits of the file system are bad input, found by validate
# ----------------------------------------------------------------------------------------------


def test_a_name_too_long_for_the_file_system_is_refused_at_validate(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    config = write_config(
        tmp_path / "long.yaml",
        tiny_config(name="n" * 240, output={"runs_dir": str(tmp_path / "runs")}),
    )
    result = cli("validate", config)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: name: 'nnnnn")
    assert (
        "is 240 bytes long; with the timestamp the run folder's name would pass the file "
        "system's limit of 255 bytes; use at most 234 bytes" in result.stderr
    )
    result = cli("finetune", config, "--quiet")  # before any TensorFlow work
    assert result.exit_code == 2
    assert not (tmp_path / "runs").exists()


def test_control_characters_in_the_run_name_are_refused(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    config = write_config(tmp_path / "odd.yaml", tiny_config(name="run\x07bell"))
    result = cli("validate", config)
    assert result.exit_code == 2
    assert result.stderr == (
        "error: name: 'run\\x07bell' contains the control character U+0007; it names the run's "
        "folder; use letters, digits, - and _\n"
    )


def test_evaluate_data_from_a_folder_with_a_very_long_name(
    digits_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    folder = tmp_path / ("d" * 255)  # NAME_MAX: "data-" + it is not a file name
    for digit in DIGITS:
        save_image(folder / digit / "one.png", (25 * int(digit), 100, 100))
    result = cli("evaluate", digits_run, "--data", folder)
    assert result.exit_code == 0, result.output
    written = Path(result.stdout.strip().splitlines()[-1])
    assert (written / "metrics.json").is_file()


# ----------------------------------------------------------------------------------------------
# 8. the smaller findings
# ----------------------------------------------------------------------------------------------


def test_predict_skips_an_unreadable_file_named_on_the_command_line(
    digits_run: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = save_image(tmp_path / "good.png")
    locked = make_fifo(tmp_path / "locked.png")  # unreadable for root too
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: str(path) != str(locked) and real_access(path, mode)
    )
    result = cli("predict", digits_run, good, locked)
    assert result.exit_code == 3, result.output
    assert f"skipped {locked}: " in result.stderr


def test_a_text_file_named_model_keras_is_not_a_keras_model(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    model = tmp_path / "model.keras"
    model.write_text("this is not a model\n")
    result = cli("predict", model, save_image(tmp_path / "one.png"))
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {model}: {model} is not a Keras model file (a .keras file is a zip archive); "
        "pass a .keras file saved by transferctl (a damaged file: train or export again)\n"
    )


def test_unreadable_sub_folders_are_reported_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transferctl import predict
    from transferctl.data import audit

    root = make_image_folder(tmp_path / "images", classes=("red", "green"), per_class=3)
    save_image(root / "red" / "more" / "hidden-by-permissions.png")
    locked = root / "red" / "more"
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # root reads every folder: deny one, as chmod 000 would
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = audit.audit_folder(root)
    assert (str(locked), "cannot read the folder: Permission denied") in found.skipped()
    problems: list[predict.Skipped] = []
    images = predict.find_images([root], problems)
    assert len(images) == 6
    assert problems == [predict.Skipped(locked, "cannot read the folder: Permission denied")]


def test_disk_space_error_names_the_run_dir_option(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transferctl.stages import lifecycle as pipeline

    monkeypatch.setattr(
        pipeline.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0)
    )
    config = write_config(tmp_path / "c.yaml", tiny_config())
    result = cli("finetune", config, "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --run-dir: only 0 MiB free on ")
    assert result.stderr.rstrip().endswith("free some space or point --run-dir elsewhere")


def test_evaluate_with_thousands_of_classes_writes_its_metrics(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    classes = [f"c{index:04d}" for index in range(1500)]
    run = make_run(tmp_path / "wide", classes)
    data = tmp_path / "data"
    for index, name in enumerate(classes):
        save_image(data / name / "one.png", (index % 256, index // 256, 7), side=8)
    started = time.monotonic()
    result = cli("evaluate", run, "--data", data)
    assert result.exit_code == 0, result.output
    written = run / "eval" / "data-data"
    assert json.loads((written / "metrics.json").read_text())["num_examples"] == 1500
    assert not (written / "confusion_matrix.csv").exists()
    assert not (written / "confusion_matrix.png").exists()
    assert "1,500 classes: no confusion_matrix.csv or confusion_matrix.png" in result.stderr
    assert time.monotonic() - started < 120


# ----------------------------------------------------------------------------------------------
# 4. what a run reads of another run, or of its training images, is bounded too
# ----------------------------------------------------------------------------------------------


def test_export_sample_skips_a_training_image_turned_into_a_named_pipe(tmp_path: Path) -> None:
    """The parity sample re-reads training images: one replaced by a FIFO is skipped, no hang."""
    from types import SimpleNamespace

    from transferctl.export import source

    good = save_image(tmp_path / "good.png")
    pipe = make_fifo(tmp_path / "pipe.png")
    examples = SimpleNamespace(images=None, paths=[str(good), str(pipe)])
    started = time.monotonic()
    decoded = source._decode(examples, 0)
    assert decoded is not None and decoded[0].shape == (24, 24, 3)
    assert source._decode(examples, 1) is None
    assert time.monotonic() - started < HANG_LIMIT


def test_a_source_run_whose_config_is_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    """`model.weights: RUN_DIR` reads that run's config.yaml through the bounded reader."""
    run = make_run(tmp_path / "source", DIGITS)
    (run / "config.yaml").write_text(ALIAS_BOMB)
    config = tiny_config(model={"weights": str(run)}, output={"runs_dir": str(tmp_path / "runs")})
    config["data"] = {"source": "digits", "image_size": [32, 32], "limit": 40}
    path = write_config(tmp_path / "target.yaml", config)
    code, _, err, _ = run_measured(["finetune", str(path), "--quiet"], timeout=HANG_LIMIT)
    assert code == 2, err
    assert f"error: {run / 'config.yaml'} line 6 column 4: too large" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
