"""Keras 3's `fit` under `MultiWorkerMirroredStrategy`: two shallow fixes, guarded by version.

Keras 3.15.1 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585) in two
places of keras/src/backend/tensorflow/trainer.py, both only when the strategy spans workers:

- `TensorFlowTrainer._maybe_symbolic_build` all-reduces (MEAN) the first batch only to learn its
  shapes; the collective reduce of a PerReplica batch fails ("Attempt to convert a value
  (PerReplica...) to a Tensor"). This worker's first replica's batch has the same shapes.
- `reduce_per_replica(..., "auto"/"mean")` reduces the step's metric results with
  `strategy.reduce("MEAN", v, axis=0)`: every result is a scalar ("Invalid reduction dimension 0
  for input with 0 dimensions"). `axis=None` (an element-wise mean over replicas) is right for
  scalars and for any metric's vector alike.

The first fix is needed by `MirroredStrategy` on one machine too: where a batch splits unevenly
over the replicas (a split smaller than one global batch, an epoch's short last batch: 5 images
on 2 replicas are 3 + 2), the element-wise MEAN of the replicas' batches fails ("AddN must have
the same size and shape [3,32,32,3] != [2,32,32,3]"). Mirrored training applies it too, and,
where Keras's code is not the verified one, goes on without it (Keras's own behaviour).

With both replaced, fit, evaluate and predict run unchanged on every worker (the whole training
loop: callbacks, BatchNorm statistics, the feature cache, checkpoints). The replacement is
applied only when the two functions are exactly the code it was written against (a hash of their
source): on `VERIFIED` Keras versions silently; on another version with the same code, with a
warning; when the code differs, multi-worker training refuses to start (exit 2) rather than run
an unverified trainer. Other strategies go through the original functions.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from transferctl.errors import UserError

VERIFIED = ("3.15.1",)
# sha256 of inspect.getsource() of the two functions in the verified versions.
SOURCE_HASHES = {
    "TensorFlowTrainer._maybe_symbolic_build": (
        "92a504f5eba9b29f81f1bf26180bdd5bf5186b06b7bda426534b90d2d02bc1c2"
    ),
    "reduce_per_replica": "2e7d54b1e6edc29a8c6a7e6b66cd4c8be3ba7842412c93753ac3afe169fa7fb8",
}
_applied: dict[str, Callable[..., Any]] = {}


def source_hash(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def _targets() -> tuple[Any, dict[str, Callable[..., Any]]]:
    from keras.src.backend.tensorflow import trainer

    functions = {
        "TensorFlowTrainer._maybe_symbolic_build": trainer.TensorFlowTrainer._maybe_symbolic_build,
        "reduce_per_replica": trainer.reduce_per_replica,
    }
    return trainer, functions


def check() -> list[str]:
    """The names of the functions whose code is not what the fix was written against."""
    _, functions = _targets()
    return [
        name for name, function in functions.items() if source_hash(function) != SOURCE_HASHES[name]
    ]


def apply(required: bool = True) -> None:
    """Replace the two functions (once per process).

    Args:
        required: multi-worker training cannot run without the fix: Keras code that differs
            from the verified code is an error. Not required (mirrored), nothing is replaced.

    Raises:
        UserError: Keras's code differs from the code the fix was verified on (`required`).
    """
    from transferctl import runtime

    keras = runtime.keras()
    if _applied:
        return
    changed = check()
    if changed and not required:
        return
    if changed:
        raise UserError(
            "runtime.distribution",
            f"multi-worker training patches Keras's TensorFlow trainer, verified on Keras "
            f"{', '.join(VERIFIED)}; in the installed Keras {keras.__version__} "
            f"{' and '.join(changed)} changed",
            f"install keras=={VERIFIED[-1]}, or train on one machine (runtime.distribution: "
            "none or mirrored)",
        )
    if keras.__version__ not in VERIFIED and required:
        print(
            f"warning: multi-worker fit is patched for Keras {', '.join(VERIFIED)}; Keras "
            f"{keras.__version__} has the same code, so the patch is applied unverified",
            file=sys.stderr,
        )
    trainer, functions = _targets()
    _applied.update(functions)
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = _reduce_per_replica


def multi_worker(strategy: Any) -> bool:
    from keras.src.backend.tensorflow import trainer

    return bool(trainer._collective_all_reduce_multi_worker(strategy))


def _local(strategy: Any, value: Any) -> Any:
    from transferctl import runtime

    if isinstance(value, runtime.tf().distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
    """As Keras's, but the shapes come from this worker's first replica, not an all-reduce
    (under any strategy: replicas' batches of different sizes cannot be averaged)."""
    strategy = self._distribute_strategy
    if strategy is None:
        _applied["TensorFlowTrainer._maybe_symbolic_build"](self, iterator, data_batch)
        return
    from keras.src import tree

    if iterator is not None:
        for _, _, batches in iterator:
            data_batch = tree.map_structure(lambda v: _local(strategy, v), next(batches))
            break
    with strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
    """As Keras's, but a multi-worker mean reduces element-wise (axis None), not over axis 0."""
    if reduction in ("auto", "mean") and multi_worker(strategy):
        from keras.src import tree

        return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return _applied["reduce_per_replica"](values, strategy, reduction)
