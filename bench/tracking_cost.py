"""What MLflow tracking adds to a run: the seconds in each tracking hook, and the whole run's wall
time with tracking off and on, in-process.

Runs `transferctl finetune` on a tiny job (digits, 300 images, MobileNet from scratch at 32x32,
two phases of one epoch each: the tests' tiny config) `--runs` times with tracking off and on in
turn, each in a new process. Tracked runs go to a SQLite store in a temporary folder
(`tracking: {mlflow: {uri: sqlite:///.../mlflow.db}}`); the first one creates its tables.
Timers wrap `track.listeners_for` (MLflow's import) and the `MLflowRun` hooks; `finished`
includes the model (`log_model`). Prints a Markdown table.

    .venv/bin/python bench/tracking_cost.py [--runs 3]

`--server-down`: instead, the seconds one MLflow request to a server that answers every request
503 takes, with MLflow's default retries and with transferctl's bounds (`HTTP_BOUNDS`), each in
a new process (the default takes about four minutes).

    .venv/bin/python bench/tracking_cost.py --server-down
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HOOKS = ("listeners_for", "started", "epoch", "finished", "log_model")


def tiny_config(runs: Path, tracking: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": "digits",
        "seed": 7,
        "data": {
            "source": "digits",
            "limit": 300,
            "image_size": [32, 32],
            "batch_size": 16,
            "augment": {"flip": "none"},
        },
        "model": {
            "backbone": "mobilenet",
            "weights": "none",
            "freeze": "none",
            "head": {"hidden": [], "dropout": 0.0},
        },
        "train": {
            "phases": [
                {"name": "head", "epochs": 1, "learning_rate": 2.0e-3},
                {
                    "name": "finetune",
                    "epochs": 1,
                    "learning_rate": 5.0e-4,
                    "freeze": {"last_trainable": 30},
                },
            ]
        },
        "output": {"runs_dir": str(runs)},
        "tracking": tracking or {},
    }


def instrument(spent: dict[str, float]) -> None:
    """Add each hook's wall seconds to `spent[hook]`."""
    from transferctl import track
    from transferctl.track import mlflow_run

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    track.listeners_for = timed("listeners_for", track.listeners_for)
    for hook in ("started", "epoch", "finished"):
        setattr(mlflow_run.MLflowRun, hook, timed(hook, getattr(mlflow_run.MLflowRun, hook)))
    mlflow_run.log_model = timed("log_model", mlflow_run.log_model)


def finetune(config: Path) -> dict[str, float]:
    """One `transferctl finetune` in this process: its wall seconds and the hooks'."""
    from typer.testing import CliRunner

    from transferctl.cli import app

    spent: dict[str, float] = defaultdict(float)
    instrument(spent)
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["finetune", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    return {"wall": time.perf_counter() - start, **spent}


def in_a_new_process(config: Path) -> dict[str, float]:
    """`finetune(config)` in a new Python process, as a `transferctl finetune` runs (MLflow's
    import and its store's opening included); TensorFlow's import is outside the wall time."""
    completed = subprocess.run(
        [sys.executable, __file__, "--one", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return found


class Unavailable(http.server.BaseHTTPRequestHandler):
    def _refuse(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _refuse

    def log_message(self, *args: Any) -> None:
        pass


def one_request(bounded: bool) -> float:
    """Seconds until MLflow gives up one request to a server that answers 503."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if bounded:
        from transferctl.track.mlflow_run import HTTP_BOUNDS

        os.environ.update(HTTP_BOUNDS)
    import mlflow

    client = mlflow.MlflowClient(f"http://127.0.0.1:{server.server_address[1]}")
    start = time.perf_counter()
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        client.get_experiment_by_name("any")
    return time.perf_counter() - start


def server_down() -> None:
    print("| MLflow's HTTP retries | seconds until one request fails |")
    print("|---|---|")
    for how in ("bounded", "default"):
        completed = subprocess.run(
            [sys.executable, __file__, "--request", how], capture_output=True, text=True
        )
        seconds = float(completed.stdout.strip().splitlines()[-1])
        shown = "transferctl's bounds" if how == "bounded" else "MLflow's defaults"
        print(f"| {shown} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-down", action="store_true")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--request", choices=("bounded", "default"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.request is not None:
        print(one_request(arguments.request == "bounded"))
        return
    if arguments.server_down:
        server_down()
        return
    if arguments.one is not None:
        import transferctl.runtime

        transferctl.runtime.tf()
        print(json.dumps(finetune(arguments.one)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.chdir(work)  # MLflow's artifacts: ./mlruns
        uri = f"sqlite:///{work / 'mlflow.db'}"
        off, on = work / "off.yaml", work / "on.yaml"
        off.write_text(yaml.safe_dump(tiny_config(work / "runs", None)))
        on.write_text(yaml.safe_dump(tiny_config(work / "runs", {"mlflow": {"uri": uri}})))
        for index in range(arguments.runs):
            rows.append((index + 1, in_a_new_process(off)["wall"], in_a_new_process(on)))
    print("| run | off (s) | on (s) | " + " | ".join(f"{hook} (s)" for hook in HOOKS) + " |")
    print("|---" * (3 + len(HOOKS)) + "|")
    for index, untracked, tracked in rows:
        cells = " | ".join(f"{tracked.get(hook, 0.0):.2f}" for hook in HOOKS)
        print(f"| {index} | {untracked:.1f} | {tracked['wall']:.1f} | {cells} |")


if __name__ == "__main__":
    main()
