"""One transferctl run as one MLflow run: the `MLflowRun` listener.

`started`: the tracking server must answer (an http(s) one a TCP connect within
`CONNECT_SECONDS`); the run continues the MLflow run tagged with its directory (a resumed run) or
starts one named after its folder, nested under the open parent run (`parent_run`, or the
caller's own active `mlflow.start_run()`) in the parent's experiment, else in the config's
`tracking.mlflow.experiment` (default: the config's name); the resolved config is logged as
params, and the run is tagged with the transferctl version, its directory and its kind.
`epoch`: the history row's numbers at the run epoch. `finished`: metrics.json's numbers
(`final_metrics`), the run's files, the model as an MLflow Keras model, then the run ends.
`close`: a run an exception stopped ends KILLED (Ctrl-C, a pruned trial) or FAILED.

Tracking never stops training: the first failure prints one warning line and the listener does
nothing more. MLflow is imported only here, and only once tracking is on. Every call names its run
(`MlflowClient`), so nothing of MLflow's global state (the fluent run stack, the tracking URI
set by `mlflow.set_tracking_uri`) changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import numbers
import os
import re
import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transferctl
from transferctl import runtime
from transferctl.config.loader import flatten
from transferctl.distribute import cluster as cluster_module
from transferctl.errors import Interrupted, UserError, first_line, printable, shorten
from transferctl.rundir import layout as rundir
from transferctl.rundir.model_file import load_model_file

CONNECT_SECONDS = 5.0
# MLflow's HTTP client retries for minutes by default (7 retries, backoff factor 2, 120 s each):
# a server lost during training costs seconds instead (unless these variables are set)
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
PARAM_CHARS = 6000  # MLflow's longest param value
PARAM_BATCH = 100  # MLflow's most params in one log_batch
ARTIFACTS = (
    rundir.CONFIG,
    rundir.ENV,
    rundir.LABELS,
    rundir.HISTORY,
    rundir.METRICS,
    rundir.CURVES,
    rundir.RECONSTRUCTIONS,
    rundir.BAD_FILES,
)
MODEL_ARTIFACT = "model"  # runs:/<run id>/model: mlflow.keras.load_model loads it
DIR_TAG, KEY_TAG = "run_dir", "run_dir_key"  # the key: a digest, safe in a search filter
STOPPED_TAG = "stopped_by"  # the exception that stopped the run; gone once it resumes
_NOT_A_KEY = re.compile(r"[^\w\-. /]")  # what MLflow refuses in a param's name


@dataclass(frozen=True)
class Where:
    """Where runs are tracked: `tracking.mlflow`'s `uri` and `experiment` (None: MLflow's
    resolution of the URI; the config's name), and whether the config asked (else
    MLFLOW_TRACKING_URI turned tracking on)."""

    uri: str | None
    experiment: str | None
    asked: bool


# the open parent runs' ids, innermost last (`parent_run`); None: a parent MLflow refused
PARENTS: list[str | None] = []


@dataclass
class MLflowRun:
    """The listener that mirrors one run directory into one MLflow run (module doc).

    Args:
        kind: the `kind` tag. Defaults to the run's env.json `kind`.
        name: the MLflow run's name. Defaults to the run directory's folder name.
    """

    where: Where
    kind: str | None = None
    name: str | None = None
    run_id: str | None = None
    off: bool = False
    uri: str = ""
    client: Any = field(default=None, repr=False)

    def started(self, run_dir: Path, config: Any) -> None:
        if not self.off and trains_here():
            self._guarded(self._open, Path(run_dir).resolve(), config)

    def epoch(self, row: dict[str, Any]) -> None:
        if self.run_id is not None:
            self._guarded(self._log_epoch, row)

    def finished(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        if self.run_id is not None:
            self._guarded(self._finish, Path(run_dir), metrics)

    def close(self, error: BaseException | None) -> None:
        """End the run if it is still open: FINISHED without `error`, else KILLED or FAILED,
        with a `stopped_by` tag naming the exception."""
        if self.run_id is not None:
            self._guarded(self._stop, error)

    def _guarded(self, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception as error:  # noqa: BLE001 - tracking never stops training
            self._give_up(error)

    def _give_up(self, error: Exception) -> None:
        """One warning line; the listener does nothing more (the MLflow run, if any, is left
        as it is: the server may be gone)."""
        self.off, self.run_id = True, None
        uri = self.uri or self.where.uri or os.environ.get("MLFLOW_TRACKING_URI") or "default"
        what = shorten(first_line(error), 400)
        print(
            f"warning: MLflow tracking ({printable(shorten(uri, 200))}): {printable(what)}; "
            "the run goes on without it",
            file=sys.stderr,
            flush=True,
        )

    def _open(self, run_dir: Path, config: Any) -> None:
        import mlflow

        self.uri = self.where.uri or mlflow.get_tracking_uri()
        check_reachable(self.uri)
        self.client = client = mlflow.MlflowClient(self.uri)
        parent = open_parent()
        if parent is not None:
            experiment = client.get_run(parent).info.experiment_id
        else:
            experiment = experiment_id(client, self.where.experiment or config.name or "runs")
        key = run_key(run_dir)
        found = client.search_runs([experiment], f"tags.{KEY_TAG} = '{key}'", max_results=1)
        if found:
            run = found[0]
            client.update_run(run.info.run_id, status="RUNNING")
            if STOPPED_TAG in run.data.tags:
                client.delete_tag(run.info.run_id, STOPPED_TAG)
        else:
            tags = {
                "transferctl_version": transferctl.__version__,
                DIR_TAG: str(run_dir),
                KEY_TAG: key,
                "kind": self.kind or rundir.run_kind(run_dir),
            }
            if parent is not None:
                tags["mlflow.parentRunId"] = parent
            run = client.create_run(experiment, run_name=self.name or run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        self._log_params(params_of(config), run.data.params)

    def _log_params(self, params: dict[str, str], logged: dict[str, str]) -> None:
        """`params` not logged yet (a resumed run keeps its first values: MLflow's params do
        not change; config.yaml, logged at the end, is the run's own)."""
        from mlflow.entities import Param

        new = [Param(key, value) for key, value in params.items() if key not in logged]
        for start in range(0, len(new), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=new[start : start + PARAM_BATCH])

    def _log_epoch(self, row: dict[str, Any]) -> None:
        values = {key: value for key, value in row.items() if key != "epoch"}
        self._log_metrics(values, step=int(row["epoch"]))

    def _log_metrics(self, values: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        found = [
            Metric(key, float(value), stamp, step)
            for key, value in values.items()
            if is_number(value)
        ]
        if found:
            self.client.log_batch(self.run_id, metrics=found)

    def _finish(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        run_id = self.run_id
        assert run_id is not None
        self._log_metrics(final_metrics(metrics), step=0)
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(run_id, str(run_dir / name))
        log_model(self.client, run_id, run_dir / rundir.MODEL)
        self._end("FINISHED")

    def _stop(self, error: BaseException | None) -> None:
        if error is not None:
            stopped = f"{type(error).__name__}: {first_line(error)}"
            self.client.set_tag(self.run_id, STOPPED_TAG, shorten(stopped, 2000))
        self._end(stop_status(error))

    def _end(self, status: str) -> None:
        """The run ended with `status`. The links MLflow prints for a server's run go to stderr:
        stdout holds only the run directory."""
        with contextlib.redirect_stdout(sys.stderr):
            self.client.set_terminated(self.run_id, status)
        self.run_id = None


def trains_here() -> bool:
    """This process writes the run directory: not one of a multi-worker run's other workers
    (the chief alone tracks the run)."""
    try:
        found = cluster_module.from_env()
    except UserError:
        return True
    return found is None or found.num_workers <= 1 or found.is_chief


def open_parent() -> str | None:
    """The run to nest under: the innermost `parent_run`, else the caller's active MLflow run."""
    if PARENTS:
        return PARENTS[-1]
    import mlflow

    active = mlflow.active_run()
    return None if active is None else active.info.run_id


def stop_status(error: BaseException | None) -> str:
    """FINISHED; KILLED for a stop someone chose (Ctrl-C, a pruned tune trial); else FAILED."""
    if error is None:
        return "FINISHED"
    chosen = isinstance(error, Interrupted) or type(error).__name__ == "TrialPruned"
    return "KILLED" if chosen or not isinstance(error, Exception) else "FAILED"


def check_reachable(uri: str) -> None:
    """An http(s) server answers a TCP connect within `CONNECT_SECONDS` (MLflow's own client
    would retry for minutes), and MLflow's retries are bounded (`HTTP_BOUNDS`). Other URIs (a
    database, a folder) are MLflow's to open; so is a server reached through a proxy.

    Raises:
        ConnectionError: no answer.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    for name, value in HTTP_BOUNDS.items():
        os.environ.setdefault(name, value)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        raise ConnectionError("the URI names no host")
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host):
        return
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ConnectionError(f"cannot connect to {host}:{port} ({reason})") from None


def experiment_id(client: Any, name: str) -> str:
    """The experiment `name`'s id, created when missing (by another process meanwhile too)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def run_key(run_dir: Path) -> str:
    """The run directory's digest: the tag a resumed run's MLflow run is found by (a path's
    quotes and backslashes do not survive MLflow's search filters)."""
    return hashlib.sha256(str(run_dir).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def params_of(config: Any) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys (`train.phases.0.learning_rate`),
    values as strings (JSON for lists and null), each cut to MLflow's `PARAM_CHARS`."""
    params = {}
    for key, value in flatten(config.model_dump(mode="json")).items():
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > PARAM_CHARS:
            text = text[: PARAM_CHARS - 1] + "…"
        params[_NOT_A_KEY.sub("_", key)[:250]] = text
    return params


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json's numbers as MLflow metrics, its dotted keys joined by `_`; the held-out
    scores prefixed `final_` (`final_val_accuracy`, `final_test_loss`, `linear_probe_val_accuracy`,
    `teacher_test_accuracy`, `kept_epoch`, `training_epochs`). Each phase's details stay in the
    metrics.json artifact."""
    found = {}
    for key, value in flatten(metrics).items():
        if key.startswith("training.phases") or not is_number(value):
            continue
        name = key.replace(".", "_")
        found[f"final_{name}" if key.startswith(("val.", "test.")) else name] = float(value)
    return found


def log_model(client: Any, run_id: str, path: Path) -> None:
    """model.keras as an MLflow Keras model (`runs:/<run id>/model`: `mlflow.keras.load_model`
    and `mlflow.pyfunc.load_model` load it, the UI offers to register it); a model that does not
    load safely (Lambda layers, trained with --unsafe) as the plain file."""
    if not path.is_file():
        return
    with tempfile.TemporaryDirectory(prefix="transferctl-mlflow-") as folder:
        saved = keras_flavour(path, Path(folder) / MODEL_ARTIFACT)
        if saved is None:
            client.log_artifact(run_id, str(path))
        else:
            client.log_artifacts(run_id, str(saved), MODEL_ARTIFACT)


def keras_flavour(path: Path, target: Path) -> Path | None:
    """The model in `path` saved with MLflow's Keras flavour into `target` (its signature from
    the model's inputs and outputs, its requirements this TensorFlow's and Keras's, so that
    MLflow does not start a process to infer them); None when it does not load safely."""
    import mlflow.keras

    try:
        model = load_model_file(path, explain=None)
    except Exception:  # noqa: BLE001 - logged as the plain file instead
        return None
    requirements = [
        f"tensorflow=={runtime.tf().__version__}",
        f"keras=={runtime.keras().__version__}",
    ]
    mlflow.keras.save_model(
        model, str(target), signature=signature(model), pip_requirements=requirements
    )
    return target


def signature(model: Any) -> Any:
    """The model's MLflow signature: its tensors' dtypes and shapes (-1: any batch)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def schema(tensors: list[Any]) -> Schema:
        named = len(tensors) > 1
        return Schema(
            [
                TensorSpec(
                    np.dtype(str(tensor.dtype)),
                    tuple(-1 if size is None else int(size) for size in tensor.shape),
                    tensor.name if named else None,
                )
                for tensor in tensors
            ]
        )

    return ModelSignature(inputs=schema(list(model.inputs)), outputs=schema(list(model.outputs)))
