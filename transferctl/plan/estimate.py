"""`transferctl plan --estimate`: time a short probe of real training steps, extrapolate per phase.

Per phase: the model frozen as the phase freezes it and compiled as the loop compiles it, one
warm-up step (tracing), then `steps` timed training steps on real batches of the configured
training data; validation is timed the same way with forward passes. Where the phase would use
the feature cache, the one backbone pass over every split is timed on the probe batches and
charged once, and the epochs then cost the head alone (timed on the cached features' shape).
The warm-up calls (tracing the train and predict functions) are charged once per phase: on
small data they are most of a run. An estimate from a few steps on this machine: the BatchNorm
statistics pass, checkpoints and the process's start are not in it.

A probe step never holds more than `PROBE_MEMORY` of activations: at a large image size it runs
at a smaller batch and scales its times to the configured one; when one image alone needs more,
the estimate is refused with the memory a training step would take (nothing is allocated).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from transferctl import runtime
from transferctl.config import backbones
from transferctl.config.schema import Config
from transferctl.errors import UserError
from transferctl.labels import SPLITS
from transferctl.plan.phases import make_plan

PROBE_STEPS = 3
PROBE_MEMORY = 2 * 2**30  # bytes of activations one probe step may hold
GIB = 2**30


@dataclass(frozen=True)
class PhaseEstimate:
    name: str
    epochs: int
    seconds_per_epoch: float
    tracing: float  # the warm-up calls, charged once
    cache_pass: float  # the feature cache's backbone pass over every split, charged once
    timed_batch: int  # the batch the steps were timed at (scaled to the configured one)

    @property
    def total(self) -> float:
        return self.tracing + self.cache_pass + self.epochs * self.seconds_per_epoch


def _timed(step: Any, batches: list[Any]) -> tuple[float, float]:
    """Seconds of a first (warm-up, tracing) call of `step`, then seconds per later call."""
    started = time.perf_counter()
    step(batches[0])
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    return warm_up, (time.perf_counter() - started) / len(batches)


def activation_bytes(model: Any) -> int:
    """Bytes of every layer's output for one image (float32), nested models included: about
    what a training step keeps per image for its backward pass."""
    total = 0
    for layer in model.layers:
        if getattr(layer, "layers", None):
            total += activation_bytes(layer)
            continue
        outputs = layer.output if isinstance(layer.output, list | tuple) else [layer.output]
        total += sum(4 * math.prod(d or 1 for d in out.shape[1:]) for out in outputs)
    return total


def probe_batch(config: Config, per_image: int, batch_size: int) -> int:
    """The batch a probe step runs at: the configured one, or fewer images when that would hold
    more than `PROBE_MEMORY` of activations.

    Raises:
        UserError: one image alone holds more than `PROBE_MEMORY`.
    """
    fits = PROBE_MEMORY // max(per_image, 1)
    if fits < 1:
        height, width = config.image_size
        raise UserError(
            "--estimate",
            f"a training step at data.image_size [{height}, {width}] holds about "
            f"{per_image / GIB:.1f} GiB of activations per image "
            f"({batch_size * per_image / GIB:,.0f} GiB at batch {batch_size}), more than the "
            f"estimate's probe allows ({PROBE_MEMORY / GIB:g} GiB)",
            "lower data.image_size (or data.batch_size), or run plan without --estimate",
        )
    return min(batch_size, fits)


def estimate(config: Config, steps: int = PROBE_STEPS) -> list[PhaseEstimate]:
    """Per phase, seconds per epoch and the feature cache's one-off pass (see the module doc)."""
    from transferctl.data import load_data
    from transferctl.model.classifier import build_classifier
    from transferctl.model.freezing import apply_freeze
    from transferctl.train.loop import compile_model

    runtime.prepare(config.train.mixed_precision, config.seed, deterministic=False)
    plan = make_plan(config)
    data = load_data(config.data, config.seed)
    spec = backbones.get(config.model.backbone)
    model, backbone = build_classifier(
        spec, config.image_size, "none", config.model.head, data.num_classes, lora=config.model.lora
    )
    probe = probe_batch(config, activation_bytes(model), data.batch_size)
    scale = data.batch_size / probe  # times of a probe batch -> times of a configured batch
    batches = list(dataclasses.replace(data, batch_size=probe).training().take(steps))
    train_steps, val_steps = data.steps("train"), data.steps("val") if data.has("val") else 0
    splits = sum(data.steps(split) for split in SPLITS if data.has(split))
    found = []
    for phase, planned in zip(config.train.phases, plan.phases, strict=True):
        freeze = phase.freeze or config.model.freeze
        apply_freeze(model, backbone, freeze, bool(config.model.train_batchnorm), "estimate")
        compile_model(model, config.train, phase.learning_rate, 1000, data.num_classes)
        tracing, step = _timed(lambda batch: model.train_on_batch(*batch), batches)
        traced, forward = _timed(lambda batch: model.predict_on_batch(batch[0]), batches)
        tracing += traced if val_steps else 0.0
        step, forward = step * scale, forward * scale
        cache_pass = 0.0
        if planned.feature_cache.use:
            traced, backbone_pass = _timed(lambda b: backbone.predict_on_batch(b[0]), batches)
            tracing += traced
            cache_pass = splits * backbone_pass * scale
            step = max(step - forward, 0.0)  # the head alone trains on cached features
            forward = 0.0
        per_epoch = train_steps * step + val_steps * forward
        found.append(
            PhaseEstimate(planned.name, phase.epochs, per_epoch, tracing, cache_pass, probe)
        )
    return found
