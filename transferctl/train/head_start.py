"""What a phase trains on, and where its head starts: the feature cache and the linear probe.

When the backbone is wholly frozen in the first phase (feature extraction, LP-FT), or in any
phase that uses the cache (`feature_cache.decide`), the backbone's features are computed once.
With features at hand, a linear probe is fitted (a baseline in metrics.json), and in the first
phase the head's `feature_norm` standardises them and the head starts from the probe
(`model.head.init`: linear_probe) or from Keras's random initialisation. The phase then
trains either the whole model on images or, with the cache, the head alone on the features; the
head shares the model's layers, so the model holds what it learns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl.config.schema import Model, Train
from transferctl.data import DataBundle
from transferctl.errors import UserError
from transferctl.model.head_init import resolve_head_init
from transferctl.rundir import layout as rundir
from transferctl.train import distill, feature_cache, probe
from transferctl.train.feature_cache import CacheDecision, Features


@dataclass
class PhaseInputs:
    """The model `fit` trains in a phase, its data, and what the phase summary records."""

    fit_model: Any
    features: Features | None
    decision: CacheDecision
    probe_started: bool = False  # the head starts from the probe: the start is a best candidate
    fitted: probe.Probe | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    # distillation: the teacher's outputs per training image, when computed once (`distill`)
    teacher_outputs: Any = None

    def training(self, data: DataBundle, epochs_done: int) -> Any:
        """Shuffled training batches; a resumed run draws a new, seeded order."""
        seed = data.seed + 1000 * epochs_done
        if self.features is not None and self.decision.use:
            return feature_cache.training_dataset(
                self.features, data.batch_size, seed, self.teacher_outputs
            )
        if self.teacher_outputs is not None:
            order = data.seed if epochs_done == 0 else seed
            return distill.training_dataset(data, self.teacher_outputs, order)
        if epochs_done == 0:
            return data.training()
        return dataclasses.replace(data, seed=seed).training()

    def validation(self, data: DataBundle) -> Any | None:
        if not data.has("val"):
            return None
        if self.features is not None and self.decision.use:
            return feature_cache.plain_dataset(self.features, "val", data.forward_batch_size)
        return data.validation()


def prepare(
    model: Any,
    backbone: Any,
    data: DataBundle,
    model_config: Model,
    train_config: Train,
    index: int,
    backbone_frozen: bool,
    resuming: bool,
    folder: Path,
    console: Console | None,
    teacher: distill.Teacher | None = None,
) -> PhaseInputs:
    """Decide the cache, compute features if needed, fit the probe and start the head.

    A resumed phase reloads its backbone from the file written at the phase's start (a cached
    phase's checkpoints hold the head only) and keeps the head its checkpoint holds. With a
    `teacher`, the model to fit is wrapped in a `distill.Distiller`.
    """
    decision = feature_cache.decide(
        train_config.feature_cache,
        backbone_frozen,
        data.augment_config,
        unfreezing=train_config.phases[index].unfreeze is not None,
    )
    init = resolve_head_init(model_config.head.init, backbone_frozen) if index == 0 else "random"
    base = folder / f"backbone-phase-{index}.weights.h5"
    if decision.use:
        if resuming and base.is_file():
            backbone.load_weights(str(base))
        elif not resuming:
            with rundir.atomic_path(base, suffix=".weights.h5") as temporary:
                backbone.save_weights(str(temporary))
    # the first phase on a frozen backbone always looks at the features once (to standardise
    # the head's input and start it, cache or not); later frozen phases only with the cache
    wants_features = backbone_frozen and (decision.use or index == 0)
    inputs = PhaseInputs(model, None, decision)
    inputs.summary["feature_cache"] = {"used": decision.use, "reason": decision.reason}
    if wants_features:
        head_init = init if not resuming and index == 0 else None
        _learn_from_features(inputs, model, data, folder, head_init, model_config, console)
    _say(console, decision, inputs.features, inputs.fitted)
    if teacher is not None:
        distill.attach(inputs, teacher, data)
    return inputs


def _learn_from_features(
    inputs: PhaseInputs,
    model: Any,
    data: DataBundle,
    folder: Path,
    head_init: str | None,
    model_config: Model,
    console: Console | None,
) -> None:
    """Compute the features, fit the probe, start the head (`head_init`, unless None)."""
    features = feature_cache.extract(model, data, folder / "features", console)
    fitted = probe.fit_probe(features.inputs, features.labels)
    inputs.features, inputs.fitted = features, fitted
    inputs.summary["feature_cache"]["seconds"] = round(features.seconds, 2)
    inputs.summary["linear_probe"] = fitted.summary()
    if head_init is not None:
        inputs.summary["head_init"] = _start_head(model, fitted, features, head_init, model_config)
        inputs.probe_started = inputs.summary["head_init"] == "linear_probe"
    if inputs.decision.use:
        inputs.fit_model = feature_cache.head_model(model)


def release(inputs: PhaseInputs, folder: Path) -> None:
    """After a phase: drop the cache (memory, and any spill files)."""
    inputs.features = None
    feature_cache.discard(folder / "features")


def _start_head(
    model: Any, fitted: probe.Probe, features: Features, init: str, model_config: Model
) -> str:
    if init == "linear_probe":
        try:
            probe.init_head(model, fitted)
            return "linear_probe"
        except UserError:
            if model_config.head.init != "auto":
                raise
    probe.set_standardisation(model, features.inputs["train"])
    return "random"


def _say(
    console: Console | None,
    decision: CacheDecision,
    features: Features | None = None,
    fitted: probe.Probe | None = None,
) -> None:
    if console is None:
        return
    if decision.use and features is not None:
        console.print(
            f"feature cache: on ({decision.reason}); the backbone ran once over "
            f"{sum(features.count(s) for s in feature_cache.SPLITS)} images in "
            f"{features.seconds:.1f}s; the head trains on the cached features",
            highlight=False,
        )
    else:
        console.print(f"feature cache: off ({decision.reason})", highlight=False)
    if fitted is not None:
        scores = ", ".join(f"{s} {v['accuracy']:.4f}" for s, v in fitted.scores.items())
        console.print(
            f"linear probe (logistic regression on the frozen features, C={fitted.C:g}): "
            f"accuracy {scores or 'n/a (no held-out split)'}",
            highlight=False,
        )
