"""Reliability: kills, interrupts, NaN losses, changed configs, determinism, unsafe files."""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_config, write_config
from tests.test_curves import assert_curves_png

pytestmark = pytest.mark.slow

PHASES = [
    {"name": "a", "epochs": 2, "learning_rate": 2e-3},
    {"name": "b", "epochs": 1, "learning_rate": 2e-4, "freeze": {"last_trainable": 30}},
]


def _config(tmp_path: Path, name: str, **train: object) -> Path:
    config = tiny_config(
        data={"limit": 192, "batch_size": 16, "source": "digits"},  # 12 steps an epoch
        train={"phases": PHASES, **train},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    return write_config(tmp_path / f"{name}.yaml", config)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "transferctl", "finetune", *args, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv") as handle:
        return list(csv.DictReader(handle))


def _wait_for_rows(run: Path, rows: int, process: subprocess.Popen, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if (run / "history.csv").is_file() and len(_history(run)) >= rows:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError("training did not get there in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run the killed ones are compared with, trained in this process: nothing is killed."""
    from typer.testing import CliRunner

    from transferctl.cli import app

    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    config = _config(tmp_path, "whole", keep_checkpoints=True)  # copied and resumed below
    arguments = ["finetune", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def test_sigkill_mid_epoch_then_resume(tmp_path: Path, uninterrupted: Path, cli) -> None:
    run = tmp_path / "run"
    config = _config(tmp_path, "killed")
    process = _start(str(config), "--run-dir", str(run))
    _wait_for_rows(run, 2, process)  # epoch 2 done, epoch 3 under way
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(_history(run)) in (2, 3)
    assert not (run / "model.keras").exists()

    # the same command with --run-dir of an unfinished run resumes it
    result = cli("finetune", config, "--run-dir", run, "--quiet")
    assert result.exit_code == 0, result.output
    rows = _history(run)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [row["phase"] for row in rows] == ["a", "a", "b"]

    import keras

    import transferctl.model.preprocess  # noqa: F401

    keras.saving.load_model(str(run / "model.keras"), compile=False)
    resumed = json.loads((run / "metrics.json").read_text())["val"]["accuracy"]
    whole = json.loads((uninterrupted / "metrics.json").read_text())["val"]["accuracy"]
    assert resumed > 0.6 and abs(resumed - whole) < 0.1, (resumed, whole)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["finished"] is True
    assert_curves_png(run / "curves.png")  # drawn when the resumed run finished

    # resuming a finished run says so and exits 0
    result = cli("finetune", "--resume", run)
    assert result.exit_code == 0
    assert "already finished" in result.stderr


# One process imports Keras and builds the model once, then for each attempt forks a writer
# that saves in a loop (checkpoints, model.keras, metrics.json) and SIGKILLs it after the delay
# the test sends: each kill lands at a random point of a write, as a killed run's would, without
# paying a TensorFlow start-up per attempt.
WRITER = textwrap.dedent(
    """
    import itertools, os, signal, sys, time
    from pathlib import Path
    import keras, numpy as np
    from transferctl.rundir import layout as rundir
    from transferctl.train import checkpoint
    from transferctl.train.checkpoint import TrainState
    folder = Path(sys.argv[1])
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(10)])
    model.compile("adam", "mse")
    model.fit(np.zeros((4, 64)), np.zeros((4, 10)), verbose=0)
    print("ready", flush=True)
    for line in sys.stdin:
        writer = os.fork()
        if writer == 0:
            try:
                for epoch in itertools.count(1):
                    state = TrainState(epochs_done=epoch)
                    checkpoint.save(
                        model, folder / "checkpoints", state, best_model_weights=epoch % 3 == 0
                    )
                    with rundir.atomic_path(folder / "model.keras", suffix=".keras") as temporary:
                        model.save(str(temporary))
                    metrics = {"epoch": epoch, "pad": "x" * 100000}
                    rundir.write_json(folder / "metrics.json", metrics)
            finally:
                os._exit(1)
        time.sleep(float(line))
        os.kill(writer, signal.SIGKILL)
        os.waitpid(writer, 0)
        print("killed", flush=True)
    """
)


def test_kills_while_writing_never_leave_a_truncated_artifact(tmp_path: Path) -> None:
    import h5py
    import keras

    rng = random.Random(0)
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        for _attempt in range(8):
            process.stdin.write(f"{rng.uniform(0.05, 1.5)}\n")
            process.stdin.flush()
            assert process.stdout.readline().strip() == "killed"
            state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
            for name in {state["weights"], state["best_weights"]} - {None}:
                with h5py.File(tmp_path / "checkpoints" / name, "r") as handle:
                    assert "optimizer" in handle, name
            if (tmp_path / "model.keras").exists():
                keras.saving.load_model(str(tmp_path / "model.keras"), compile=False)
            if (tmp_path / "metrics.json").exists():
                json.loads((tmp_path / "metrics.json").read_text())
    finally:
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finished = [p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert "state.json" in finished


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path: Path, cli) -> None:
    config = tiny_config(
        backbone="mobilenet_v3_small",  # MobileNet's loss stayed finite at this rate
        data={"limit": 64, "source": "digits"},
        train={
            "optimizer": "sgd",
            "phases": [{"name": "boom", "epochs": 2, "learning_rate": 1.0e12}],
        },
        output={"runs_dir": str(tmp_path / "runs")},
    )
    result = cli("finetune", write_config(tmp_path / "nan.yaml", config), "--quiet")
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: train.phases.0: the loss became nan")
    assert "lower train.phases.0.learning_rate" in line
    run = next((tmp_path / "runs").iterdir())
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert (run / "checkpoints" / state["weights"]).is_file()
    assert not (run / "model.keras").exists()


def test_ctrl_c_exits_130_with_the_resume_command(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = _start(str(_config(tmp_path, "interrupted")), "--run-dir", str(run))
    _wait_for_rows(run, 1, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"resume with: transferctl finetune --resume {run}" in err
    assert "Traceback" not in err


def test_deterministic_runs_have_identical_history(tmp_path: Path, cli) -> None:
    losses = []
    for index in range(2):
        config = tiny_config(
            data={"limit": 48, "source": "digits", "augment": {"flip": "horizontal"}},
            train={
                "deterministic": True,
                "phases": [{"name": "only", "epochs": 2, "learning_rate": 1e-3}],
            },
            output={"runs_dir": str(tmp_path / f"runs{index}")},
        )
        result = cli("finetune", write_config(tmp_path / f"d{index}.yaml", config), "--quiet")
        assert result.exit_code == 0, result.output
        rows = _history(Path(result.stdout.strip().splitlines()[-1]))
        losses.append([(row["loss"], row["val_loss"]) for row in rows])
    assert losses[0] == losses[1]


def test_keras_file_with_code_needs_unsafe(tmp_path: Path, cli) -> None:
    import keras

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    keras.Model(inputs, outputs).save(str(tmp_path / "lambda.keras"))
    config = tiny_config(
        model={"weights": str(tmp_path / "lambda.keras")},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    path = write_config(tmp_path / "unsafe.yaml", config)
    result = cli("finetune", path, "--quiet")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: model.weights: cannot load ")
    assert "--unsafe" in result.stderr
    result = cli("finetune", path, "--quiet", "--unsafe")
    assert result.exit_code == 2  # loads now, but it is no MobileNetV3Small backbone
    assert "does not match this backbone" in result.stderr


def test_step_checkpoints_resume_mid_epoch_and_changed_configs_need_force(
    tmp_path: Path, cli
) -> None:
    run = tmp_path / "run"
    config = _config(tmp_path, "steps", checkpoint_every=5)  # 12 steps an epoch
    process = _start(str(config), "--run-dir", str(run))
    state_file = run / "checkpoints" / "state.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if state["epochs_done"] >= 1 and state["steps_done"] >= 10:
                break
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads(state_file.read_text())
    assert state["steps_done"] > 0  # killed after a mid-epoch checkpoint
    killed_in = state["epochs_done"] + 1

    changed = ["--set", "train.phases.1.learning_rate=0.001"]
    result = cli("finetune", config, "--resume", run, *changed)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --resume: the config differs from the run's own in ")
    assert "train.phases.1.learning_rate" in result.stderr

    result = cli("finetune", config, "--resume", run, *changed, "--force")
    assert result.exit_code == 0, result.output
    assert f"resuming {run} at epoch {killed_in}, step {state['steps_done'] + 1}" in result.stderr
    rows = _history(run)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert float(rows[2]["learning_rate"]) == pytest.approx(1e-3)


def test_resume_after_the_last_epoch_was_committed(tmp_path: Path, uninterrupted: Path, cli):
    """A kill after a phase's last epoch is committed, before model.keras is written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    state_file = run / "checkpoints" / "state.json"
    state = json.loads(state_file.read_text())
    state.update(
        finished=False,
        phase_index=1,
        phase_start_epoch=2,
        epochs_done=3,
        best_weights=state["weights"],
        best_value=0.5,
        best_epoch=2,
        phases_done=state["phases_done"][:1],
    )
    state_file.write_text(json.dumps(state))
    (run / "model.keras").unlink()
    (run / "metrics.json").unlink()
    (run / "curves.png").unlink(missing_ok=True)
    result = cli("finetune", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert [int(row["epoch"]) for row in _history(run)] == [1, 2, 3]
    assert (run / "model.keras").is_file()
    assert_curves_png(run / "curves.png")
    assert json.loads(state_file.read_text())["finished"] is True
