"""How training is spread over devices: the `runtime.distribution` decision and its strategy.

`setup` runs first in a training command (before anything else starts TensorFlow's devices):
it splits the CPU into `TRANSFERCTL_CPU_DEVICES` logical devices when asked, decides the
strategy, and builds it. Everything that creates variables or runs the model then happens
inside `Distribution.scope()` (pipeline._train and pretrain's _train open it once).

- `none`: TensorFlow's default strategy, one device: the path transferctl always took.
- `mirrored`: `tf.distribute.MirroredStrategy`, one replica per GPU, or per logical CPU device
  when TRANSFERCTL_CPU_DEVICES splits the CPU (to try and test the code path without GPUs).
- `multi_worker`: `MultiWorkerMirroredStrategy` from TF_CONFIG (`transferctl.distribute.cluster`).
- `auto`: multi_worker when TF_CONFIG names more than one worker; else mirrored when more than
  one GPU is visible, or when TRANSFERCTL_CPU_DEVICES asks for more than one CPU device (the
  variable exists only to try distribution, so asking for devices is asking for mirroring);
  else none.

`data.batch_size` is per replica: `fit` gets batches of `batch_size x replicas` (the global
batch), which the strategy splits. `runtime.lr_scaling: linear` multiplies the learning rates by
the number of replicas; `none` (the default) keeps them as configured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferctl.errors import UserError

CPU_DEVICES_VARIABLE = "TRANSFERCTL_CPU_DEVICES"
MAX_CPU_DEVICES = 64
WHERE = "runtime.distribution"
ENV_BYTES = 1 << 20  # env.json is a few KB


def cpu_devices(environ: Mapping[str, str] | None = None) -> int:
    """The logical CPU devices TRANSFERCTL_CPU_DEVICES asks for (1 when unset). TF-free.

    Raises:
        UserError: not a whole number from 1 to `MAX_CPU_DEVICES` (naming the variable).
    """
    raw = (os.environ if environ is None else environ).get(CPU_DEVICES_VARIABLE, "").strip()
    if not raw:
        return 1
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_CPU_DEVICES:
        raise UserError(
            CPU_DEVICES_VARIABLE,
            f"expected a whole number of logical CPU devices from 1 to {MAX_CPU_DEVICES}; "
            f"got {raw!r}",
            f"set e.g. {CPU_DEVICES_VARIABLE}=2, or unset it",
        )
    return count


@dataclass(frozen=True)
class Choice:
    """The strategy a setting resolves to on this machine, and why, in words."""

    strategy: str  # none | mirrored | multi_worker
    reason: str


def decide(setting: str, gpus: int, cpu_devices: int, workers: int) -> Choice:
    """Resolve `runtime.distribution` (a pure function: unit-tested branch by branch).

    Args:
        setting: auto | none | mirrored | multi_worker.
        gpus: GPUs visible to TensorFlow.
        cpu_devices: logical CPU devices (TRANSFERCTL_CPU_DEVICES; 1 when unset).
        workers: workers TF_CONFIG names (0 when unset).

    Raises:
        UserError: multi_worker without TF_CONFIG.
    """
    if setting == "none":
        return Choice("none", "runtime.distribution is none")
    if setting == "multi_worker":
        if workers == 0:
            raise UserError(
                WHERE,
                "multi_worker needs TF_CONFIG (the cluster and this worker's task); it is not set",
                "set TF_CONFIG on every worker, or use auto or mirrored",
            )
        return Choice("multi_worker", f"runtime.distribution is multi_worker ({workers} workers)")
    if setting == "mirrored":
        return Choice("mirrored", "runtime.distribution is mirrored")
    if workers > 1:
        return Choice("multi_worker", f"auto: TF_CONFIG names {workers} workers")
    if gpus > 1:
        return Choice("mirrored", f"auto: {gpus} GPUs are visible")
    if gpus == 0 and cpu_devices > 1:
        return Choice("mirrored", f"auto: {CPU_DEVICES_VARIABLE}={cpu_devices}")
    return Choice("none", "auto: one device")


@dataclass
class Distribution:
    """The strategy training runs under, and what it means for the batch and the rates."""

    strategy_name: str  # none | mirrored | multi_worker
    replicas: int
    per_replica_batch_size: int
    lr_scaling: str  # none | linear
    reason: str
    devices: tuple[str, ...] = ()
    strategy: Any = None  # a tf.distribute.Strategy; None: the default strategy
    cluster: Any = None  # transferctl.distribute.cluster.Cluster under multi_worker

    @property
    def global_batch_size(self) -> int:
        return self.per_replica_batch_size * self.replicas

    @property
    def lr_factor(self) -> float:
        return float(self.replicas) if self.lr_scaling == "linear" else 1.0

    @property
    def distributed(self) -> bool:
        """Under tf.distribute (XLA stays off then: runtime/speed.py)."""
        return self.strategy_name != "none"

    def scope(self) -> Any:
        """Where variables are created and the model runs; nothing at all for `none`."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def scale_rate(self, rate: float) -> float:
        return rate * self.lr_factor

    def scaled_train(self, train: Any) -> Any:
        """The `train` section with every phase's learning rate scaled (`lr_scaling`)."""
        if self.lr_factor == 1.0:
            return train
        phases = [
            phase.model_copy(update={"learning_rate": self.scale_rate(phase.learning_rate)})
            for phase in train.phases
        ]
        return train.model_copy(update={"phases": phases})

    def describe(self) -> str:
        """For the console line on the device; empty for a single device."""
        if not self.distributed:
            return ""
        where = f" ({', '.join(short_name(d) for d in self.devices)})" if self.devices else ""
        text = (
            f"{self.strategy_name} over {self.replicas} replica(s){where}, global batch "
            f"{self.global_batch_size} ({self.per_replica_batch_size} per replica)"
        )
        if self.lr_factor != 1.0:
            text += f", learning rates x{self.lr_factor:g} (lr_scaling linear)"
        return text

    def record(self) -> dict[str, Any]:
        """env.json's `distribution`."""
        return {
            "strategy": self.strategy_name,
            "replicas": self.replicas,
            "global_batch_size": self.global_batch_size,
            "per_replica_batch_size": self.per_replica_batch_size,
            "lr_scaling": self.lr_scaling,
            "lr_factor": self.lr_factor,
            "devices": list(self.devices),
            "reason": self.reason,
            CPU_DEVICES_VARIABLE: os.environ.get(CPU_DEVICES_VARIABLE),
        }


def single_device(per_replica_batch_size: int, lr_scaling: str = "none") -> Distribution:
    """The default strategy: what a caller gets without `setup` (and what `none` resolves to)."""
    return Distribution("none", 1, per_replica_batch_size, lr_scaling, "one device")


def short_name(device: str) -> str:
    """`/job:localhost/replica:0/task:0/device:CPU:1` -> `CPU:1`."""
    return device.rsplit("device:", 1)[-1]


def setup(runtime_config: Any, per_replica_batch_size: int) -> Distribution:
    """Split the CPU if asked, decide the strategy and build it. Call before any other use of
    TensorFlow in the process (MultiWorkerMirroredStrategy and the CPU split both need that).

    Args:
        runtime_config: the config's `runtime` section.
        per_replica_batch_size: `data.batch_size`.
    """
    requested = cpu_devices()  # a bad value fails before TensorFlow starts
    cluster = _cluster(runtime_config.distribution)
    if cluster is None and runtime_config.distribution == "multi_worker":
        decide("multi_worker", 0, requested, 0)  # raises (no TF_CONFIG), before TensorFlow
    from transferctl import runtime

    tf = runtime.tf()
    split_cpu(requested)
    gpus = len(tf.config.list_physical_devices("GPU"))
    workers = 0 if cluster is None else int(cluster.num_workers)
    choice = decide(runtime_config.distribution, gpus, requested, workers)
    scaling = runtime_config.lr_scaling
    if choice.strategy == "none":
        return Distribution("none", 1, per_replica_batch_size, scaling, choice.reason)
    if choice.strategy == "multi_worker":
        from transferctl.distribute import cluster as cluster_module

        strategy = cluster_module.make_strategy(cluster)
    else:
        devices = None
        if gpus == 0:
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        from transferctl.distribute import keras_multiworker

        keras_multiworker.apply(required=False)  # batches that split unevenly (the docstring)
    return Distribution(
        choice.strategy,
        int(strategy.num_replicas_in_sync),
        per_replica_batch_size,
        scaling,
        choice.reason,
        tuple(strategy.extended.worker_devices),
        strategy,
        cluster,
    )


def _cluster(setting: str) -> Any:
    """TF_CONFIG's cluster when it can matter (multi_worker, or auto with TF_CONFIG set)."""
    if setting not in ("auto", "multi_worker") or not os.environ.get("TF_CONFIG"):
        return None
    from transferctl.distribute import cluster

    return cluster.from_env()


def split_cpu(count: int) -> None:
    """Split the first CPU into `count` logical devices (nothing for 1).

    Raises:
        UserError: TensorFlow had already started its devices with another split.
    """
    if count <= 1:
        return
    from transferctl import runtime

    tf = runtime.tf()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:  # devices already initialised in this process
        found = len(tf.config.list_logical_devices("CPU"))
        if found != count:
            raise UserError(
                CPU_DEVICES_VARIABLE,
                f"TensorFlow had started with {found} CPU device(s) before the CPU could be "
                f"split into {count}",
                "set it before the process starts (in Python: before any TensorFlow call)",
            ) from None


def check_resume(env_path: Path, spread: Distribution) -> None:
    """A run resumes with the global batch it trained with: the steps of an epoch, and a
    mid-epoch checkpoint's position, count global batches.

    Args:
        env_path: the run's env.json (a run without its `distribution` record is not checked).

    Raises:
        UserError: the global batch differs (naming runtime.distribution).
    """

    from transferctl import files

    try:
        recorded = files.read_json(env_path, limit=ENV_BYTES).get("distribution")
        before = int(recorded["global_batch_size"])
        replicas = int(recorded["replicas"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return
    if before != spread.global_batch_size:
        raise UserError(
            WHERE,
            f"the run trained with a global batch of {before} ({replicas} replica(s)); here it "
            f"would be {spread.global_batch_size} ({spread.replicas} replica(s) of "
            f"{spread.per_replica_batch_size})",
            f"resume with {replicas} replica(s) ({CPU_DEVICES_VARIABLE}, GPUs), or set "
            "data.batch_size so that batch_size x replicas matches and pass --force",
        )


def distributed_now() -> bool:
    """Whether code runs inside a tf.distribute strategy's scope (XLA stays off then)."""
    from transferctl import runtime

    return bool(runtime.tf().distribute.has_strategy())
