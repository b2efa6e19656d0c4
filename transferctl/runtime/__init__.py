"""TensorFlow and Keras, loaded on demand and quietly; the device and precision they run with.

Only stages that compute import this module's `keras()`/`tf()`; config and CLI code never do,
so `--help` and `validate` stay instant. TensorFlow's C++ start-up lines (oneDNN, CPU feature
notices) are filtered with TF_CPP_MIN_LOG_LEVEL=2 rather than by turning oneDNN off, which
costs ~40% speed on CPU (docs/keras-behaviour.md).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

# every stage quiets TensorFlow's native lines with `runtime.quiet_native_stderr()`
from transferctl.runtime.native import quiet_native_stderr as quiet_native_stderr


@cache
def tf() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    warnings.filterwarnings("ignore", module="keras")
    with quiet_native_stderr():
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # the CUDA probe logs here, once

    tensorflow.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tensorflow


@cache
def keras() -> ModuleType:
    tf()
    import keras as keras_module

    if keras_module.backend.backend() != "tensorflow":
        from transferctl.errors import UserError

        raise UserError(
            "KERAS_BACKEND",
            f"transferctl trains with TensorFlow; got backend {keras_module.backend.backend()!r}",
            "unset KERAS_BACKEND or set it to tensorflow",
        )
    return keras_module


@dataclass(frozen=True)
class Device:
    kind: str  # "GPU" or "CPU"
    names: tuple[str, ...]
    compute_capability: tuple[int, int] | None

    def describe(self) -> str:
        return ", ".join(self.names) if self.names else self.kind


def device() -> Device:
    tensorflow = tf()
    gpus = tensorflow.config.list_physical_devices("GPU")
    if not gpus:
        return Device("CPU", (), None)
    names: list[str] = []
    capability: tuple[int, int] | None = None
    for gpu in gpus:
        details = tensorflow.config.experimental.get_device_details(gpu)
        names.append(str(details.get("device_name", gpu.name)))
        found = details.get("compute_capability")
        if found and (capability is None or tuple(found) < capability):
            capability = (int(found[0]), int(found[1]))
    return Device("GPU", tuple(names), capability)


def precision_policy(setting: str, on: Device) -> str:
    """The Keras dtype policy for `train.mixed_precision`.

    `auto` is mixed precision where it pays: float16 on GPUs with tensor cores (compute
    capability >= 7.0), bfloat16 on Ampere and newer (8.0+, no loss scaling needed), float32 on
    CPU (measured: bfloat16 no gain, float16 3-4x slower on CPU).
    """
    if setting == "off":
        return "float32"
    if setting == "float16":
        return "mixed_float16"
    if setting == "bfloat16":
        return "mixed_bfloat16"
    if on.kind == "GPU" and on.compute_capability is not None:
        if on.compute_capability >= (8, 0):
            return "mixed_bfloat16"
        if on.compute_capability >= (7, 0):
            return "mixed_float16"
    return "float32"


def set_precision(policy: str) -> None:
    keras().mixed_precision.set_global_policy(policy)


def set_seed(seed: int) -> None:
    keras().utils.set_random_seed(seed)


def prepare(mixed_precision: str, seed: int, deterministic: bool) -> Device:
    """What every training command sets first: the precision policy for this device, the
    seed, and op determinism when asked (`train.deterministic`). Returns the device."""
    on = device()
    set_precision(precision_policy(mixed_precision, on))
    set_seed(seed)
    if deterministic:
        tf().config.experimental.enable_op_determinism()
    return on


def versions() -> dict[str, Any]:
    import platform
    import sys

    from transferctl import __version__

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "tensorflow": tf().__version__,
        "keras": keras().__version__,
        "numpy": __import__("numpy").__version__,
        "transferctl": __version__,
    }
