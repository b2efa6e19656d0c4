"""MLflow tracking (`tracking: {mlflow: ...}`): what MLflow's own client reads back from a
finetune run, a resumed run continuing its MLflow run, trials nested under one parent, and a
tracking server that is down, which costs one warning line and seconds, never the run."""

from __future__ import annotations

import csv
import http.server
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import interrupt_after_commit, tiny_config, write_config
from transferctl import track
from transferctl.config.loader import load_config
from transferctl.config.schema import Config
from transferctl.track.mlflow_run import HTTP_BOUNDS
from transferctl.train import listeners

mlflow = pytest.importorskip("mlflow")

ONE_EPOCH = {"phases": [{"name": "head", "epochs": 1, "learning_rate": 2.0e-3}]}


@pytest.fixture(autouse=True)
def _mlflow_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's artifacts land in ./mlruns: the test's own folder; the HTTP bounds the
    listener sets, and MLFLOW_TRACKING_URI, are put back after each test."""
    monkeypatch.chdir(tmp_path)
    for name in (*HTTP_BOUNDS, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def _config(tmp_path: Path, tracking: dict[str, Any] | None, **sections: Any) -> Path:
    config = tiny_config(output={"runs_dir": str(tmp_path / "runs")}, **sections)
    config["name"] = "digits"
    if tracking is not None:
        config["tracking"] = tracking
    return write_config(tmp_path / "digits.yaml", config)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_finetune_run_killed_and_resumed_is_one_mlflow_run(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = _config(tmp_path, {"mlflow": {"uri": uri, "experiment": "t"}})
    run = tmp_path / "runs" / "tracked"
    with pytest.MonkeyPatch.context() as patch:
        interrupt_after_commit(patch, lambda state: state.epochs_done == 1 and not state.finished)
        assert cli("finetune", config, "--run-dir", run, "-q").exit_code == 130
    client = mlflow.MlflowClient(uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert killed.info.status == "KILLED"
    assert killed.data.tags["stopped_by"].startswith("Interrupted: interrupted; ")

    resumed = cli("finetune", "--resume", run, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip().splitlines() == [str(run)]
    (tracked,) = client.search_runs([killed.info.experiment_id])
    assert tracked.info.run_id == killed.info.run_id
    assert tracked.info.status == "FINISHED" and "stopped_by" not in tracked.data.tags
    assert tracked.info.run_name == "tracked"
    assert tracked.data.tags["run_dir"] == str(run.resolve())
    assert tracked.data.tags["kind"] == "finetune"
    params = tracked.data.params
    assert params["train.phases.0.learning_rate"] == "0.002"
    assert params["train.phases.1.learning_rate"] == "0.0005"
    assert params["data.image_size"] == "[32, 32]" and params["name"] == "digits"
    history = client.get_metric_history(tracked.info.run_id, "val_accuracy")
    rows = _rows(run)
    assert [point.step for point in history] == [int(row["epoch"]) for row in rows] == [1, 2]
    assert history[-1].value == pytest.approx(float(rows[-1]["val_accuracy"]))
    assert tracked.data.metrics["final_val_accuracy"] > 0
    assert tracked.data.metrics["training_epochs"] == 2
    artifacts = {item.path for item in client.list_artifacts(tracked.info.run_id)}
    assert {"curves.png", "history.csv", "config.yaml", "metrics.json", "model"} <= artifacts
    folder = client.download_artifacts(tracked.info.run_id, "model", str(tmp_path))
    model = mlflow.keras.load_model(folder)  # an MLflow Keras model, not only the file
    assert tuple(model.outputs[0].shape) == (None, 10)


@pytest.mark.slow
def test_a_tracking_server_that_is_down_costs_one_warning_and_seconds(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    config = _config(tmp_path, {"mlflow": {"uri": "http://127.0.0.1:9"}}, train=ONE_EPOCH)
    started = time.perf_counter()
    result = cli("finetune", config, "-q")
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 120  # MLflow's own retries: minutes
    warnings = [line for line in result.stderr.splitlines() if "MLflow" in line]
    assert warnings == [
        "warning: MLflow tracking (http://127.0.0.1:9): cannot connect to 127.0.0.1:9 "
        "(Connection refused); the run goes on without it"
    ]
    assert (Path(result.stdout.strip()) / "model.keras").is_file()


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """A server that accepts connections and answers every request 503, which MLflow's
    client retries."""

    def _refuse(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PATCH = _refuse

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def unavailable_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_server_that_answers_503_is_given_up_within_seconds(
    tmp_path: Path, unavailable_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(_config(tmp_path, {"mlflow": {"uri": unavailable_server}}))
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    started = time.perf_counter()
    with track.tracked(config):
        listeners.started(run, config)
        listeners.epoch({"epoch": 1, "loss": 1.0})
        listeners.finished(run, {"val": {"accuracy": 0.5}})
    assert time.perf_counter() - started < 30  # unbounded: 7 retries, about four minutes
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"warning: MLflow tracking ({unavailable_server}): ")
    assert line.endswith("; the run goes on without it")


def test_mlflow_missing_is_one_line_naming_the_extra(
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    config = _config(tmp_path, {"mlflow": {"uri": "sqlite:///mlflow.db"}})
    result = cli("finetune", config)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: tracking.mlflow: MLflow is not installed (")
    assert line.endswith(
        "; pip install 'transferctl[mlflow]', or remove tracking.mlflow from the config"
    )
    assert not (tmp_path / "runs").exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # not asked by the config
    assert track.listeners_for(load_config(_config(tmp_path, None))) == []
    assert capsys.readouterr().err.startswith(
        "warning: MLFLOW_TRACKING_URI is set but MLflow is not installed; the run is not tracked"
    )
    assert track.listeners_for(load_config(_config(tmp_path, {}))) == []  # tracking: {} is off
    assert capsys.readouterr().err == ""


def _trial(run: Path, config: Config, epoch: int, pruned: bool = False) -> None:
    """What a tune trial's run tells its listeners: started, one epoch, then pruned (the
    listener raises optuna.TrialPruned) or finished."""
    import optuna

    run.mkdir(parents=True, exist_ok=True)
    with track.tracked(config):
        listeners.started(run, config)
        listeners.epoch({"epoch": epoch, "phase": "head", "val_accuracy": 0.5, "seconds": 1})
        if pruned:
            raise optuna.TrialPruned(f"pruned at run epoch {epoch}")
        listeners.finished(run, {"val": {"accuracy": 0.5, "loss": 1.0, "num_examples": 9}})


def test_trials_nest_under_one_parent_run_that_a_resumed_study_goes_on_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # tracking: null, so the variable turns it on
    config = load_config(_config(tmp_path, None))
    study = tmp_path / "runs" / "digits-tune"
    trials = [study / "trials" / "0", study / "trials" / "1"]
    with track.parent_run(config, study.name, study):
        _trial(trials[0], config, epoch=1)
        with pytest.raises(optuna.TrialPruned):
            _trial(trials[1], config, epoch=1, pruned=True)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits").experiment_id
    statuses = {run.info.run_name: run.info.status for run in client.search_runs([experiment])}
    assert statuses == {"digits-tune": "FINISHED", "0": "FINISHED", "1": "KILLED"}

    with track.parent_run(config, study.name, study):  # `tune --resume`, or a --jobs worker
        for trial in trials:
            _trial(trial, config, epoch=2)
    runs = client.search_runs([experiment])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.run_name == "digits-tune" and parent.data.tags["kind"] == "tune"
    assert parent.data.tags["run_dir"] == str(study.resolve())
    assert parent.info.status == "FINISHED" and parent.data.params["name"] == "digits"
    children = sorted((run for run in runs if run is not parent), key=lambda run: run.info.run_name)
    assert [run.info.run_name for run in children] == ["0", "1"]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and run.data.metrics["final_val_accuracy"] == 0.5
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [point.step for point in history] == [1, 2]
