"""Several machines training one run: TF_CONFIG, the wait for peers, collectives between workers.

The same `transferctl finetune config.yaml --run-dir DIR` runs on every worker, each with its own
`TF_CONFIG` (what Kubernetes operators and Slurm resolvers write):

    {"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}

`from_env` parses and checks it (a mistake: `UserError("TF_CONFIG", ...)`, exit 2, before
TensorFlow starts). The chief (task type `chief`, or worker 0 when there is no chief) alone
writes the run directory (`transferctl.stages.worker` decides where each worker writes).

`make_strategy` builds `MultiWorkerMirroredStrategy` once every peer has joined, waiting at most
`TRANSFERCTL_PEER_TIMEOUT` seconds (default 300: pods of one job are usually scheduled within a
minute or two, and a cluster that is not complete after five minutes is better reported than
waited for); past it, exit 2 naming the peers that never answered a TCP connection. TensorFlow
waits holding Python's lock (a watchdog thread never runs, measured), so the bound is its own
coordination service's registration deadline."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transferctl.errors import UserError, quote

VARIABLE = "TF_CONFIG"
PEER_TIMEOUT_VARIABLE = "TRANSFERCTL_PEER_TIMEOUT"
DEFAULT_PEER_TIMEOUT = 300.0
JOBS = ("chief", "worker")  # the task types MultiWorkerMirroredStrategy trains with
FIX = "set TF_CONFIG to JSON like " + json.dumps(
    {"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}
)


@dataclass(frozen=True)
class Cluster:
    """The cluster TF_CONFIG describes, and this process's place in it."""

    jobs: Mapping[str, tuple[str, ...]]  # task type -> addresses (host:port), in index order
    task_type: str
    task_index: int

    @property
    def address(self) -> str:
        return self.jobs[self.task_type][self.task_index]

    @property
    def is_chief(self) -> bool:
        """The one worker that writes the run directory: the chief, or worker 0 without one."""
        if "chief" in self.jobs:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def num_workers(self) -> int:
        """Every process that trains (the chief included)."""
        return sum(len(self.jobs.get(job, ())) for job in JOBS)

    @property
    def peers(self) -> tuple[str, ...]:
        """The other training processes' `host:port` addresses (chief first, then workers)."""
        return tuple(
            address
            for job in JOBS
            for index, address in enumerate(self.jobs.get(job, ()))
            if (job, index) != (self.task_type, self.task_index)
        )

    def name(self) -> str:
        return f"{self.task_type} {self.task_index} ({self.address})"


def _fail(what: str, fix: str = FIX) -> UserError:
    return UserError(VARIABLE, what, fix)


def from_env(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The cluster of `TF_CONFIG`, or None when it is unset or empty. TF-free.

    Raises:
        UserError: malformed JSON, no `cluster` or `task`, an unknown task type, an index out of
            range, an address that is not `host:port`, the same address twice.
    """
    raw = (os.environ if environ is None else environ).get(VARIABLE, "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError as error:
        raise _fail(f"not valid JSON ({error})") from None
    except RecursionError:
        raise _fail("not valid JSON for a cluster: nested too deeply") from None
    if not isinstance(config, dict):
        raise _fail(f"expected a JSON object with `cluster` and `task`; got {quote(config)}")
    jobs = _jobs(config.get("cluster"))
    task_type, task_index = _task(config.get("task"), jobs)
    return Cluster(jobs, task_type, task_index)


def _jobs(cluster: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(cluster, dict) or not cluster:
        raise _fail(
            "`cluster` is missing or empty; it maps task types (chief, worker) to lists of "
            "host:port addresses"
        )
    unknown = sorted(set(cluster) - set(JOBS))
    if unknown:
        raise _fail(
            f"cluster has task type(s) {', '.join(map(quote, unknown))}; multi-worker training "
            "takes `chief` and `worker` only (no parameter servers or evaluators)",
            "list every training process under `worker` (and at most one under `chief`)",
        )
    jobs: dict[str, tuple[str, ...]] = {}
    for job, addresses in cluster.items():
        if isinstance(addresses, dict):  # TF's sparse form {index: address}
            addresses = _dense(job, addresses)
        if not isinstance(addresses, list) or not addresses:
            raise _fail(f"cluster.{job} must be a non-empty list of host:port addresses")
        jobs[job] = tuple(_address(f"cluster.{job}[{i}]", a) for i, a in enumerate(addresses))
    if len(jobs.get("chief", ())) > 1:
        raise _fail(f"cluster.chief lists {len(jobs['chief'])} addresses; at most one chief")
    seen: dict[str, str] = {}
    for job, addresses in jobs.items():
        for index, address in enumerate(addresses):
            if address in seen:
                raise _fail(
                    f"{address} is listed twice ({seen[address]} and {job}[{index}])",
                    "give every worker its own host:port",
                )
            seen[address] = f"{job}[{index}]"
    return jobs


def _dense(job: str, addresses: dict[Any, Any]) -> list[Any]:
    try:
        by_index = {int(key): value for key, value in addresses.items()}
    except (TypeError, ValueError):
        raise _fail(f"cluster.{job} has a non-numeric index") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise _fail(f"cluster.{job} indices must be 0..{len(by_index) - 1}")
    return [by_index[index] for index in range(len(by_index))]


def _address(where: str, address: Any) -> str:
    if not isinstance(address, str):
        raise _fail(f"{where} must be a host:port string; got {quote(address)}")
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    valid_port = port.isdigit() and 1 <= int(port) <= 65535
    if not host or not valid_port or any(c.isspace() or c in "/@" for c in host):
        raise _fail(
            f"{where} is {quote(address)}, not host:port (a host name or IP and a port 1-65535)"
        )
    return address


def _task(task: Any, jobs: Mapping[str, tuple[str, ...]]) -> tuple[str, int]:
    if not isinstance(task, dict):
        raise _fail('`task` is missing; it names this process: {"type": ..., "index": ...}')
    task_type, index = task.get("type"), task.get("index", 0)
    if not isinstance(task_type, str) or task_type not in jobs:
        raise _fail(
            f"task.type is {quote(task_type)}; the cluster has {', '.join(sorted(jobs))}",
            "set task.type to one of the cluster's task types",
        )
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int):
        raise _fail(f"task.index must be a whole number; got {quote(index)}")
    count = len(jobs[task_type])
    if not 0 <= index < count:
        raise _fail(
            f"task.index {index} is out of range: cluster.{task_type} has {count} "
            f"address(es) (indices 0..{count - 1})",
            "give each process its own index, from 0",
        )
    return task_type, index


def peer_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds to wait for every peer (`TRANSFERCTL_PEER_TIMEOUT`, default 300).

    Raises:
        UserError: not a positive number.
    """
    raw = (os.environ if environ is None else environ).get(PEER_TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_PEER_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise UserError(
            PEER_TIMEOUT_VARIABLE,
            f"expected a positive number of seconds; got {quote(raw)}",
            f"set e.g. {PEER_TIMEOUT_VARIABLE}=300, or unset it (default {DEFAULT_PEER_TIMEOUT:g})",
        )
    return seconds


def unreachable(addresses: tuple[str, ...], seconds: float = 5.0) -> list[str]:
    """The addresses nobody accepts a TCP connection on (a peer that never started), tried
    together and bounded as a whole: one that has not answered within `seconds` (a host name
    that takes long to resolve, thousands of them) counts as not answering."""
    answered: set[str] = set()
    pending = list(addresses)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def probe() -> None:
        while time.monotonic() < deadline:
            with lock:
                if not pending:
                    return
                address = pending.pop()
            host, _, port = address.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds):
                    answered.add(address)
            except OSError:
                pass

    # daemon threads: a name lookup that never returns cannot keep the process alive
    threads = [threading.Thread(target=probe, daemon=True) for _ in range(min(64, len(pending)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [address for address in addresses if address not in answered]


def _some(addresses: list[str] | tuple[str, ...], shown: int = 5) -> str:
    """The first few addresses, and how many more."""
    more = len(addresses) - shown
    return ", ".join(addresses[:shown]) + (f" and {more} more" if more > 0 else "")


def never_came(cluster: Cluster, seconds: float) -> UserError:
    """The error for peers that did not all join within `seconds`, naming the absent ones."""
    missing = unreachable(cluster.peers, seconds=min(5.0, seconds))
    who = (
        f"no answer from {_some(missing)}"
        if missing
        else f"every peer ({_some(cluster.peers)}) accepts connections, but not all joined"
    )
    return UserError(
        PEER_TIMEOUT_VARIABLE,
        f"{cluster.name()} waited {seconds:g} s for its {cluster.num_workers - 1} peer(s): {who}",
        "start the same command on every worker, each with its own TF_CONFIG; check the "
        f"addresses and the network, or raise {PEER_TIMEOUT_VARIABLE}",
    )


_joined: list[tuple[Cluster, Any]] = []  # the strategy this process built, once


def make_strategy(cluster: Cluster | None = None) -> Any:
    """`MultiWorkerMirroredStrategy` for `cluster` (TF_CONFIG's when None) once every peer has
    joined, with Keras's fit made to work under it (`distribute.keras_multiworker`). Built
    once per process: later calls return the same strategy.

    TensorFlow waits for peers while holding Python's lock, deaf to signals and to any Python
    thread (measured: a watchdog thread never runs). The bound is TensorFlow's own: the
    coordination service's registration timeout, set to `TRANSFERCTL_PEER_TIMEOUT` (the leader,
    chief or worker 0, gives up after it; another worker about 5 s later).

    Raises:
        UserError: no TF_CONFIG; a bad TRANSFERCTL_PEER_TIMEOUT; peers missing past it.
    """
    cluster = cluster or from_env()
    if cluster is None:
        raise UserError(VARIABLE, "multi-worker training needs TF_CONFIG; it is not set", FIX)
    for known, strategy in _joined:
        if known == cluster:
            return strategy
    seconds = peer_timeout()
    _check_port_free(cluster)
    from transferctl import runtime
    from transferctl.distribute import keras_multiworker
    from transferctl.runtime import native

    tf = runtime.tf()
    keras_multiworker.apply()
    _bound_registration(cluster, seconds)
    try:
        # TensorFlow's native lines while joining (dozens about barriers and stragglers) go
        # nowhere; the outcome is told in one line. Kept with TRANSFERCTL_DEBUG=1.
        with native.native_stderr_dropped():
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.DeadlineExceededError:
        native.native_stderr_dropped_for_good()  # TensorFlow's agent complains again at exit
        raise never_came(cluster, seconds) from None
    except tf.errors.UnknownError as error:
        if "gRPC server" not in str(error):
            raise
        raise _port_taken(cluster) from None  # taken between the check and TensorFlow's bind
    _joined.append((cluster, strategy))
    return strategy


def _check_port_free(cluster: Cluster) -> None:
    """This worker's port, free to listen on, as TensorFlow's server needs it to be."""
    port = int(cluster.address.rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except PermissionError:
            raise _fail(
                f"{cluster.name()}: port {port} needs privileges to listen on",
                "give this worker a port above 1023 in TF_CONFIG",
            ) from None
        except OSError:
            raise _port_taken(cluster) from None


def _port_taken(cluster: Cluster) -> UserError:
    port = cluster.address.rpartition(":")[2]
    return _fail(
        f"{cluster.name()}: port {port} is already in use on this machine",
        f"stop what listens there (`ss -ltnp 'sport = :{port}'` shows it), or give this "
        "worker a free port in TF_CONFIG",
    )


def _bound_registration(cluster: Cluster, seconds: float) -> None:
    """Configure the coordination service as MultiWorkerMirroredStrategy would (it leaves a
    configured one alone), plus a registration deadline that every task shares (a barrier)."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    from transferctl import runtime

    spec = runtime.tf().train.ClusterSpec({job: list(cluster.jobs[job]) for job in cluster.jobs})
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster.jobs[job]))
            for job in JOBS
            if job in cluster.jobs
        ],
        cluster_register_timeout_in_ms=int(seconds * 1000),
    )
    context.context().coordination_service.cluster_register_with_barrier = True


def gather(strategy: Any, values: list[float]) -> list[list[float]]:
    """`values` from every replica of every worker, one row each (a collective: all call it)."""
    from transferctl import runtime

    tf = runtime.tf()

    def step() -> Any:
        row = tf.constant([values], tf.float64)
        return tf.distribute.get_replica_context().all_gather(row, axis=0)

    rows = strategy.experimental_local_results(strategy.run(step))[0]
    return [[float(value) for value in row] for row in rows.numpy()]


def barrier(strategy: Any) -> None:
    """Return once every worker has reached this point."""
    gather(strategy, [0.0])


def agree(strategy: Any, point: tuple[int, ...], what: str) -> None:
    """Check that every worker holds the same `point` (e.g. where training resumes).

    Raises:
        UserError: they differ (`what` describes the point for the message).
    """
    rows = {tuple(int(value) for value in row) for row in gather(strategy, list(map(float, point)))}
    if len(rows) > 1:
        bottom, top = min(rows), max(rows)
        raise UserError(
            "--run-dir",
            f"the workers disagree on {what}: from {bottom} to {top}, this worker {point}",
            "pass the same --run-dir on every worker, on a volume they all share",
        )
