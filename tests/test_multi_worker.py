"""Multi-worker training (issue 13, part 3): real `transferctl finetune` processes on 127.0.0.1.

Every worker runs the same command with its own TF_CONFIG and its own TMPDIR (so that what a
worker leaves in its temporary folder can be checked). The config trains a frozen backbone on
cached features (the cheapest real run: the cluster, the collectives, the checkpoints and the
run directory are what is under test here, not the model).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_config, write_config
from transferctl.distribute import cluster, keras_multiworker
from transferctl.errors import UserError
from transferctl.stages import worker

EPOCHS = 2  # each a checkpoint to commit and a collective to agree on; more only cost time
RUN_FILES = {
    "config.yaml",
    "env.json",
    "labels.txt",
    "history.csv",
    "metrics.json",
    "model.keras",
    "curves.png",
    "checkpoints",
    "tensorboard",
}
WAIT = 240  # seconds: a hard bound on every process of a test


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for bound in sockets:
            bound.bind(("127.0.0.1", 0))
        return [bound.getsockname()[1] for bound in sockets]
    finally:
        for bound in sockets:
            bound.close()


def _tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


class Cluster:
    """Worker processes of one run, each with its TF_CONFIG, TMPDIR and log."""

    def __init__(
        self,
        tmp_path: Path,
        workers: int,
        peer_timeout: float = 120,
        command: str = "finetune",
        epochs: int = EPOCHS,
    ) -> None:
        self.tmp_path = tmp_path
        self.command = command
        self.epochs = epochs
        self.ports = _free_ports(workers)
        self.run_dir = tmp_path / "shared" / "run"
        config = tiny_config(
            model={"freeze": "all"},
            train={"phases": [{"name": "head", "epochs": epochs, "learning_rate": 2e-3}]},
        )
        config["data"]["limit"] = 200
        config["pretrain"] = {"epochs": epochs}
        self.config = write_config(tmp_path / "config.yaml", config)
        self.peer_timeout = peer_timeout
        self.processes: dict[int, subprocess.Popen[str]] = {}

    def temp(self, index: int) -> Path:
        return self.tmp_path / f"tmp{index}"

    def log(self, index: int) -> Path:
        return self.tmp_path / f"worker{index}.log"

    def start(self, index: int) -> None:
        self.temp(index).mkdir(exist_ok=True)
        env = dict(os.environ)
        env.pop(worker.RESTARTS_VARIABLE, None)
        env.update(
            TF_CONFIG=_tf_config(self.ports, index),
            TMPDIR=str(self.temp(index)),
            TRANSFERCTL_PEER_TIMEOUT=str(self.peer_timeout),
            TRANSFERCTL_CACHE_DIR=str(self.tmp_path / "cache"),
        )
        with open(self.log(index), "a", encoding="utf-8") as log:
            self.processes[index] = subprocess.Popen(
                [sys.executable, "-m", "transferctl", self.command, str(self.config)]
                + ["--run-dir", str(self.run_dir)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def wait(self, index: int) -> int:
        return self.processes[index].wait(timeout=WAIT)

    def output(self, index: int) -> str:
        return self.log(index).read_text(encoding="utf-8")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Cluster] = []

    def make(
        count: int, peer_timeout: float = 120, command: str = "finetune", epochs: int = EPOCHS
    ) -> Cluster:
        made.append(Cluster(tmp_path, count, peer_timeout, command, epochs))
        return made[-1]

    yield make
    for each in made:
        each.stop_all()


def _epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "history.csv", newline="", encoding="utf-8") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _assert_complete(group: Cluster, files: set[str] = RUN_FILES) -> None:
    run = group.run_dir
    assert {path.name for path in run.iterdir()} >= files
    assert _epochs(run) == list(range(1, group.epochs + 1)), "every epoch once"
    env = json.loads((run / "env.json").read_text(encoding="utf-8"))["distribution"]
    assert (env["strategy"], env["replicas"], env["global_batch_size"]) == ("multi_worker", 2, 32)
    state = json.loads((run / "checkpoints" / "state.json").read_text(encoding="utf-8"))
    assert state["finished"] is True
    for index in group.processes:
        assert list(group.temp(index).iterdir()) == [], f"worker {index} left temporary files"
        assert group.output(index).strip().splitlines()[-1] == str(run)
    outside = {path.name for path in group.tmp_path.iterdir()}
    assert outside <= {
        "shared",
        "config.yaml",
        "cache",
        "tmp0",
        "tmp1",
        "worker0.log",
        "worker1.log",
    }


@pytest.mark.slow
def test_two_workers_train_one_run_directory(workers) -> None:  # type: ignore[no-untyped-def]
    group = workers(2)
    group.start(0)
    group.start(1)
    codes = [group.wait(0), group.wait(1)]
    assert codes == [0, 0], group.output(0)[-3000:] + group.output(1)[-3000:]
    _assert_complete(group)
    assert "run directory" in group.output(0)
    assert "run directory" not in group.output(1), "the chief alone shows progress"
    assert [path.name for path in group.run_dir.parent.iterdir()] == ["run"]


@pytest.mark.slow
@pytest.mark.extended  # pretrain's lifecycle is finetune's, whose two-worker test runs always
def test_two_workers_pretrain_one_run_directory(workers) -> None:  # type: ignore[no-untyped-def]
    group = workers(2, command="pretrain", epochs=1)  # the lifecycle is finetune's: one will do
    group.start(0)
    group.start(1)
    codes = [group.wait(0), group.wait(1)]
    assert codes == [0, 0], group.output(0)[-3000:] + group.output(1)[-3000:]
    _assert_complete(group, RUN_FILES - {"labels.txt"} | {"reconstructions.png"})
    assert [path.name for path in group.run_dir.parent.iterdir()] == ["run"]


@pytest.mark.slow
@pytest.mark.extended  # a killed single run resumes in test_reliability; two workers train above
def test_a_killed_worker_restarted_finishes_with_every_epoch_once(workers) -> None:  # type: ignore[no-untyped-def]
    group = workers(2, epochs=3)  # killed after epoch 1: two more to resume into
    group.start(0)
    group.start(1)
    state = group.run_dir / "checkpoints" / "state.json"
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and group.processes[0].poll() is None:
        if state.is_file() and '"epochs_done": 1' in state.read_text(encoding="utf-8"):
            break
        time.sleep(0.2)
    assert group.processes[0].poll() is None, "the run ended before it could be interrupted"
    group.processes[0].send_signal(signal.SIGKILL)  # the chief, mid-run
    group.processes[0].wait()
    group.start(0)  # the same command again
    codes = [group.wait(0), group.wait(1)]
    assert codes == [0, 0], group.output(0)[-3000:] + group.output(1)[-3000:]
    assert "a peer failed" in group.output(1) and "restarting" in group.output(1)
    assert "resuming" in group.output(0)
    _assert_complete(group)


def test_a_lone_worker_exits_2_naming_the_missing_peer(workers) -> None:  # type: ignore[no-untyped-def]
    group = workers(2, peer_timeout=2)
    group.start(0)
    assert group.wait(0) == 2
    output = group.output(0)
    missing = f"127.0.0.1:{group.ports[1]}"
    assert f"error: {cluster.PEER_TIMEOUT_VARIABLE}" in output and missing in output, output
    assert "Traceback" not in output
    assert not group.run_dir.exists(), "nothing written before the peers came"
    assert list(group.temp(0).iterdir()) == []


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("{not json", "not valid JSON"),
        ('["worker"]', "JSON object"),
        ('{"task": {"type": "worker", "index": 0}}', "`cluster` is missing"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', "`task` is missing"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
            "out of range",
        ),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task.type"),
        ('{"cluster": {"worker": ["a", "b:2"]}, "task": {"type": "worker"}}', "not host:port"),
        ('{"cluster": {"worker": ["a:99999"]}, "task": {"type": "worker"}}', "not host:port"),
        ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker"}}', "twice"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker"}}', "'ps'"),
        ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief"}}', "one chief"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "x"}}', "whole"),
        ("[" * 20_000 + "]" * 20_000, "nested too deeply"),
    ],
)
def test_a_malformed_tf_config_names_the_problem(value: str, named: str) -> None:
    with pytest.raises(UserError) as raised:
        cluster.from_env({"TF_CONFIG": value})
    assert raised.value.where == "TF_CONFIG" and named in raised.value.what


def test_a_malformed_tf_config_is_exit_2_before_training(cli, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "c.yaml", tiny_config())
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {}}')
    result = cli("finetune", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2
    assert "TF_CONFIG" in result.output and "task.type" in result.output
    assert not (tmp_path / "run").exists()


def test_multi_worker_needs_a_run_dir_and_a_sane_peer_timeout(
    cli, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "c.yaml", tiny_config(output={"runs_dir": str(tmp_path)}))
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 0))
    result = cli("finetune", config)
    assert result.exit_code == 2 and "--run-dir" in result.output
    monkeypatch.setenv(cluster.PEER_TIMEOUT_VARIABLE, "soon")
    result = cli("finetune", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and cluster.PEER_TIMEOUT_VARIABLE in result.output
    assert not any(tmp_path.glob("run*"))


def test_a_port_in_use_is_exit_2_naming_it(cli, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "c.yaml", tiny_config())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("TF_CONFIG", _tf_config([port, _free_ports(1)[0]], 0))
        result = cli("finetune", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: TF_CONFIG: worker 0 (127.0.0.1:{port}): port {port}")
    assert "already in use" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_the_peers_are_probed_together_within_a_bound() -> None:
    # thousands of names that do not resolve (each lookup takes a while): told in seconds,
    # not one lookup after another for minutes
    names = tuple(f"peer{index}.invalid:2222" for index in range(3000))
    start = time.monotonic()
    missing = cluster.unreachable(names, seconds=2)
    assert time.monotonic() - start < 4
    assert missing == list(names)
    error = cluster.never_came(
        cluster.Cluster({"worker": ("127.0.0.1:1", *names)}, "worker", 0), seconds=2
    )
    assert "and 2995 more" in error.what and len(error.what) < 400


def test_cluster_roles() -> None:
    found = cluster.from_env({"TF_CONFIG": _tf_config([5000, 5001, 5002], 1)})
    assert found is not None
    assert (found.is_chief, found.num_workers) == (False, 3)
    assert found.peers == ("127.0.0.1:5000", "127.0.0.1:5002")
    spec = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    chief = cluster.from_env(
        {"TF_CONFIG": json.dumps({"cluster": spec, "task": {"type": "chief"}})}
    )
    first = cluster.Cluster({k: tuple(v) for k, v in spec.items()}, "worker", 0)
    assert chief is not None and chief.is_chief and not first.is_chief
    assert chief.num_workers == 3 and chief.peers == ("w:1", "w:2")
    assert cluster.from_env({}) is None and cluster.from_env({"TF_CONFIG": " "}) is None
    assert cluster.peer_timeout({}) == cluster.DEFAULT_PEER_TIMEOUT
    assert cluster.peer_timeout({cluster.PEER_TIMEOUT_VARIABLE: "2.5"}) == 2.5


def test_the_keras_fix_matches_the_installed_keras() -> None:
    """The guard: the two replaced functions are byte for byte the code the fix was written
    for (a Keras upgrade that changes them makes multi-worker training refuse to start)."""
    assert keras_multiworker.check() == []


def test_a_peer_failure_is_told_from_other_errors() -> None:
    from transferctl import runtime

    errors = runtime.tf().errors
    lost = errors.UnavailableError(None, None, "Collective ops is aborted by: peer down")
    assert worker.peer_failure(lost)
    try:
        try:
            raise lost
        except errors.UnavailableError as error:
            raise RuntimeError("wrapped") from error
    except RuntimeError as wrapped:
        assert worker.peer_failure(wrapped)
    assert not worker.peer_failure(errors.InvalidArgumentError(None, None, "shapes"))
    assert not worker.peer_failure(ValueError("x"))


def test_the_keras_fix_refuses_a_changed_trainer(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A Keras whose trainer differs from the verified code: exit 2 naming what changed, and
    nothing patched."""
    changed = dict(keras_multiworker.SOURCE_HASHES, reduce_per_replica="0" * 64)
    monkeypatch.setattr(keras_multiworker, "SOURCE_HASHES", changed)
    monkeypatch.setattr(keras_multiworker, "_applied", {})
    with pytest.raises(UserError) as raised:
        keras_multiworker.apply()
    assert "reduce_per_replica changed" in raised.value.what
    assert "keras==3.15.1" in (raised.value.fix or "")
    assert keras_multiworker._applied == {}
