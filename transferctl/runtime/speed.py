"""Speed decisions that depend on the device: XLA (`jit_compile`) and prefetch to the GPU.

Each is a small pure function of a `runtime.Device` and whether a tf.distribute strategy is in
use, so every branch is unit-tested without a GPU (tests/test_speed_decisions.py).

- `jit_compile`: off everywhere. On CPU, we measured XLA 4-9x slower on this TF 2.21 /
  Keras 3.15.1. Under tf.distribute Keras runs the step per replica and XLA adds a compile per
  replica and per batch shape for no measured gain. On one GPU it is off too, the same as Keras's
  own `jit_compile="auto"` on TensorFlow: the last batch of an epoch is smaller
  (`drop_remainder` is off) and recompiles, op determinism (`train.deterministic`) is not
  guaranteed under XLA, and no GPU measurement here shows a gain worth that. Turn it on only
  with a measurement that shows one.
- `prefetch_device`: on one GPU without tf.distribute, the training batches are copied to the
  GPU ahead of the step (`tf.data.experimental.prefetch_to_device`, the last transformation);
  nothing on CPU (the batches already live in host memory) and nothing under tf.distribute
  (the strategy's distributed dataset places each replica's batch itself). Not with class
  weights either: Keras maps the weights over the dataset after it, which must stay on the host.
"""

from __future__ import annotations

from typing import Any

from transferctl.runtime import Device

PREFETCH_BATCHES = 2  # batches held on the GPU ahead of the training step


def jit_compile(on: Device, distributed: bool) -> bool:
    """Whether `model.compile` gets `jit_compile=True` (see the module docstring: never, today)."""
    if on.kind != "GPU" or distributed:
        return False  # CPU: measured 4-9x slower; tf.distribute: a compile per replica
    return False  # one GPU: Keras's own auto on TF; partial last batch recompiles; determinism


def prefetch_device(on: Device, distributed: bool, class_weighted: bool = False) -> str | None:
    """The device the training batches are prefetched to, or `None` to leave them on the host."""
    if on.kind != "GPU" or distributed or class_weighted:
        return None
    return "/gpu:0"


def feed(dataset: Any, on: Device, distributed: bool, class_weighted: bool = False) -> Any:
    """The training dataset as `fit` gets it: prefetched to the GPU where `prefetch_device` says."""
    target = prefetch_device(on, distributed, class_weighted)
    if target is None:
        return dataset
    from transferctl import runtime

    prefetch = runtime.tf().data.experimental.prefetch_to_device(target, PREFETCH_BATCHES)
    return dataset.apply(prefetch)
