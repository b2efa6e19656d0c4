"""What a config will train, phase by phase, without training or downloading anything.

`make_plan` builds the classifier's architecture (no weights: `weights="none"`), applies each
phase's freezing exactly as training does (`apply_freeze`), and records what trains, what stays
frozen, the BatchNorm mode, the parameter counts, the learning rate, whether the feature cache
will be used and why, and the head init. A bad freeze spec fails here as it would in `finetune`.

Example:
    plan = make_plan(load_config("configs/demo.yaml"))
    for phase in plan.phases:
        print(phase.name, phase.frozen_layers, phase.trainable_params, phase.feature_cache.use)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferctl import runtime
from transferctl.config import backbones
from transferctl.config.classes import source_class_names
from transferctl.config.schema import Config, Data, Head, Phase
from transferctl.errors import UserError
from transferctl.train.feature_cache import CacheDecision, decide
from transferctl.train.layer_rates import Rates, phase_rates
from transferctl.train.unfreeze import schedule as unfreeze_schedule

BATCHNORM_INFERENCE = "inference"
BATCHNORM_TRAINS = "trains"
BATCHNORM_ABSENT = "none in the backbone"


@dataclass(frozen=True)
class LayerPlan:
    """One backbone layer, and whether it trains in each phase."""

    index: int
    name: str
    kind: str  # the Keras class name
    batchnorm: bool
    params: int
    trains: tuple[bool, ...]  # one per phase, in phase order


@dataclass(frozen=True)
class UnfreezeStep:
    """One step of gradual unfreezing: from `first_epoch` to `last_epoch` (1-based, within the
    phase) this many backbone layers and parameters train."""

    first_epoch: int
    last_epoch: int
    trainable_layers: int
    trainable_params: int


@dataclass(frozen=True)
class PhasePlan:
    """One phase: its freezing as applied to the built model, and what follows from it."""

    index: int
    name: str
    epochs: int
    learning_rate: float
    freeze: str  # the spec, as written in YAML: all, {last_trainable: 20}, ...
    freeze_field: str  # where it comes from: train.phases.N.freeze or model.freeze
    frozen: tuple[int, ...]  # indices in backbone.layers frozen by the spec
    frozen_layers: int
    trainable_layers: int
    backbone_frozen: bool  # every backbone layer frozen
    batchnorm: str  # inference | trains | none in the backbone
    trainable_batchnorm_layers: int
    trainable_params: int
    total_params: int
    feature_cache: CacheDecision
    rates: Rates  # per group: head, backbone (or its per-layer range), before the schedule
    unfreeze: tuple[UnfreezeStep, ...] = ()  # gradual unfreezing; () without `unfreeze`


@dataclass(frozen=True)
class Plan:
    """The whole plan: the model as built, then each phase."""

    name: str
    backbone: str
    backbone_layers: int
    backbone_params: int
    image_size: tuple[int, int]
    weights: str
    num_classes: int
    class_names: list[str] | None  # None when only the count is known
    head: Head
    head_init: str  # random | linear_probe: what model.head.init resolves to
    head_init_reason: str
    lr_schedule: str
    phases: list[PhasePlan]
    layers: list[LayerPlan]
    lora: str | None = None  # model.lora: where the adapters go and what they hold


def make_plan(config: Config) -> Plan:
    """The plan of a resolved config (`load_config`); builds the architecture, trains nothing.

    Raises:
        UserError: a freeze spec names an unknown layer or matches none (naming its field), a
            run named by `model.weights` trained another backbone, or the class count of the
            data cannot be told.
    """
    from transferctl.model.classifier import build_classifier
    from transferctl.model.freezing import check_freezes
    from transferctl.model.head_init import resolve_head_init
    from transferctl.model.lora import adapter_params

    spec = backbones.get(config.model.backbone)
    weights = config.model.weights
    if weights not in ("imagenet", "none") and Path(weights).is_dir():
        from transferctl.model.backbone import _check_run_backbone

        _check_run_backbone(Path(weights), spec)  # as finetune will, before loading
    class_names = planned_class_names(config.data)
    model, backbone = build_classifier(
        spec, config.image_size, "none", config.model.head, len(class_names), lora=config.model.lora
    )
    check_freezes(backbone, config.model.freeze, [phase.freeze for phase in config.train.phases])
    phases: list[PhasePlan] = []
    trains: list[list[bool]] = []
    for index, phase in enumerate(config.train.phases):
        planned, training = _phase_plan(config, index, phase, model, backbone)
        phases.append(planned)
        trains.append(training)
    first_frozen = phases[0].backbone_frozen
    return Plan(
        name=config.name or "run",
        backbone=spec.name,
        backbone_layers=len(backbone.layers),
        backbone_params=int(backbone.count_params()) - adapter_params(backbone),
        image_size=config.image_size,
        weights=config.model.weights,
        num_classes=len(class_names),
        class_names=class_names if config.data.source != "folder" or config.data.classes else None,
        head=config.model.head,
        head_init=resolve_head_init(config.model.head.init, first_frozen),
        head_init_reason=_head_init_reason(config.model.head.init, first_frozen),
        lr_schedule=config.train.lr_schedule,
        phases=phases,
        layers=_layer_plans(backbone, trains),
        lora=_lora_summary(config, backbone),
    )


def _lora_summary(config: Config, backbone: Any) -> str | None:
    from transferctl.model.lora import adapted_layers, adapter_params, kinds

    lora = config.model.lora
    if lora is None:
        return None
    layers = adapted_layers(backbone)
    alpha = lora.alpha if lora.alpha is not None else lora.rank
    return (
        f"rank {lora.rank}, alpha {alpha:g} on {kinds(layers)} "
        f"({adapter_params(backbone):,} adapter parameters): in the backbone layers a phase "
        "trains, only the adapters train; model.keras holds them merged"
    )


def _phase_plan(
    config: Config, index: int, phase: Phase, model: Any, backbone: Any
) -> tuple[PhasePlan, list[bool]]:
    """One phase's freezing applied to the built model as training applies it: the phase's
    plan, and which backbone layers train as it starts."""
    from transferctl.model.freezing import apply_freeze, frozen_indices

    field = f"train.phases.{index}.freeze" if phase.freeze else "model.freeze"
    freeze = phase.freeze or config.model.freeze
    train_batchnorm = bool(config.model.train_batchnorm)
    report = apply_freeze(model, backbone, freeze, train_batchnorm, field)
    trains = [bool(layer.trainable and backbone.trainable) for layer in backbone.layers]
    frozen = tuple(sorted(frozen_indices(backbone, freeze, field)))
    steps: list[UnfreezeStep] = []
    if phase.unfreeze is not None:
        for step in unfreeze_schedule(phase.epochs, phase.unfreeze, len(frozen)):
            grown = apply_freeze(model, backbone, freeze, train_batchnorm, field, step.released)
            steps.append(
                UnfreezeStep(
                    step.first_epoch + 1,
                    step.end_epoch,
                    grown.trainable_layers,
                    grown.trainable_params,
                )
            )
    released = steps[-1].trainable_layers - report.trainable_layers if steps else 0
    training = set(range(len(backbone.layers))) - set(frozen[: len(frozen) - released])
    batch_norm = runtime.keras().layers.BatchNormalization
    if not any(isinstance(layer, batch_norm) for layer in backbone.layers):
        mode = BATCHNORM_ABSENT
    else:
        mode = BATCHNORM_TRAINS if report.trainable_batchnorm_layers else BATCHNORM_INFERENCE
    planned = PhasePlan(
        index=index,
        name=phase.label,
        epochs=phase.epochs,
        learning_rate=phase.learning_rate,
        freeze=freeze.describe(),
        freeze_field=field,
        frozen=frozen,
        frozen_layers=report.frozen_layers,
        trainable_layers=report.trainable_layers,
        backbone_frozen=report.backbone_frozen,
        batchnorm=mode,
        trainable_batchnorm_layers=report.trainable_batchnorm_layers,
        trainable_params=report.trainable_params,
        total_params=int(model.count_params()),
        feature_cache=decide(
            config.train.feature_cache,
            report.backbone_frozen,
            config.data.augment,
            unfreezing=phase.unfreeze is not None,
        ),
        rates=phase_rates(backbone, phase, training),
        unfreeze=tuple(steps),
    )
    return planned, trains


def _layer_plans(backbone: Any, trains: list[list[bool]]) -> list[LayerPlan]:
    """Every backbone layer, with whether it trains in each phase (`trains`, one list a phase)."""
    batch_norm = runtime.keras().layers.BatchNormalization
    return [
        LayerPlan(
            index=i,
            name=layer.name,
            kind=type(layer).__name__,
            batchnorm=isinstance(layer, batch_norm),
            params=int(layer.count_params()) if layer.weights else 0,
            trains=tuple(phase_trains[i] for phase_trains in trains),
        )
        for i, layer in enumerate(backbone.layers)
    ]


def planned_class_names(data: Data) -> list[str]:
    """The classes a run of `data` will have, known without loading a single image.

    `data.classes` when set; else digits 0-9, CIFAR's names, or a folder's class sub-folders
    (a folder class without a usable image is dropped at load time, so the count is an upper
    bound there).
    """
    if data.classes is not None:
        return list(data.classes)
    names = source_class_names(data)
    if names is None or len(names) < 2:
        raise UserError(
            "data.path",
            f"cannot tell the classes of {data.path}: it does not hold two class sub-folders",
            "put each class's images in its own sub-folder",
        )
    return names


def _head_init_reason(setting: str, first_phase_frozen: bool) -> str:
    if setting != "auto":
        return "model.head.init"
    if first_phase_frozen:
        return "auto: the first phase keeps the whole backbone frozen"
    return "auto: the first phase trains part of the backbone"
