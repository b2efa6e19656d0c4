"""The config's `train` section: the optimizer and its settings, and the phases run in order.

Each field's docstring is its description in the config reference (docs/config.md, rendered by
`config/reference.py`). The default phases are the two-phase recipe of the Keras transfer
learning guide: the head alone on a frozen backbone, then the top of the backbone at a small rate.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from transferctl.config.fields import (
    PLAIN_NAME,
    Fraction,
    Freeze,
    FreezeSpec,
    LayerDecay,
    PositiveFinite,
    Section,
    parse_freeze,
    shorten,
)


class Unfreeze(Section):
    """Gradual unfreezing: every `every` epochs, `layers` more backbone layers train."""

    every: Annotated[int, Field(gt=0)]
    """Epochs between two unfreezing steps; below the phase's `epochs`."""
    layers: Annotated[int, Field(gt=0)]
    """How many frozen backbone layers nearest the top start training at each step."""


class Phase(Section):
    """One stage of training, compiled afresh: its epochs, rate, and what trains."""

    name: str | None = None
    """A label for history.csv rows and the phase's `tensorboard/` folder: letters, digits,
    `-`, `_`, `.`, at most 64 characters; null: `phase1`, `phase2`, ... by position."""
    epochs: Annotated[int, Field(gt=0)]
    """Epochs in this phase."""
    learning_rate: PositiveFinite
    """The head's learning rate (and the backbone's, unless scaled below); `lr_schedule`
    applies within the phase."""
    freeze: FreezeSpec | None = None
    """Which backbone layers stay frozen in this phase (as `model.freeze`); null: `model.freeze`."""
    unfreeze: Unfreeze | None = None
    """Gradual unfreezing: `{every: K, layers: N}` starts from the phase's freeze and every K
    epochs lets the N frozen layers nearest the top train too, each step its own `fit` after a
    recompile (the optimizer state restarts; the schedule runs on). Such a phase never uses the
    feature cache."""
    backbone_lr_scale: PositiveFinite = 1.0
    """Discriminative rates: the backbone learns at `learning_rate` x this, the head at
    `learning_rate`."""
    layer_decay: LayerDecay | None = None
    """Or per layer: each backbone layer learns at `learning_rate` x `layer_decay` ** depth,
    depth counted from the top over the layers that hold weights (a CNN of 50 conv layers wants
    about 0.95). Not together with `backbone_lr_scale`."""

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze(cls, value: Any) -> Freeze | None:
        return None if value is None else parse_freeze(value)

    @field_validator("name", mode="after")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        # the name labels history.csv rows and names a tensorboard/ sub-folder
        if value is not None and not PLAIN_NAME.fullmatch(value):
            raise ValueError(
                "expected a short label of letters, digits, '-', '_' or '.' (not starting with "
                f"'.'), at most 64 characters; got {shorten(value)!r}"
            )
        return value

    @property
    def label(self) -> str:
        """The phase's name (filled in by `Train` when the config left it out)."""
        assert self.name is not None, "validate through Train"
        return self.name


class EarlyStopping(Section):
    """Stop a phase when its validation metric stops improving."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    """The validation metric watched (also the one `restore_best` keeps the best epoch by)."""
    patience: Annotated[int, Field(gt=0)] = 3
    """Epochs without improvement before the phase stops."""
    min_delta: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    """The smallest change that counts as an improvement."""


DEFAULT_PHASES = (
    Phase(name="head", epochs=5, learning_rate=1.0e-3),
    Phase(
        name="finetune",
        epochs=5,
        learning_rate=1.0e-5,
        freeze=Freeze(mode="last_trainable", value=20),
    ),
)


class Train(Section):
    """How the model learns: the optimizer and its settings, and the phases, run in order."""

    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    """The optimizer; each phase gets a fresh one."""
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    """The learning rate within each phase: `constant`, `cosine` (to 0), or `exponential` (to
    the phase's rate / 100)."""
    weight_decay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    """Decoupled weight decay, for `adamw` (null: 0.004) and `sgd` only."""
    momentum: Fraction = 0.9
    """`sgd`'s (Nesterov) momentum."""
    label_smoothing: Fraction = 0.0
    """Label smoothing of the cross-entropy loss; 0: off."""
    ema: Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)] | None = None
    """An exponential moving average of the weights, e.g. 0.999 (the optimizer's `use_ema`,
    `ema_momentum`): each step, average = ema x average + (1 - ema) x weights. Validation,
    the best epoch, checkpoints and model.keras use the average; it spans about 1 / (1 - ema)
    steps, so keep that well below a phase's steps; each phase (and unfreezing step) starts
    a new average from where the last ended. null: off."""
    mixed_precision: Literal["auto", "off", "float16", "bfloat16"] = "auto"
    """`auto`: bfloat16 on GPUs of compute capability 8.0 and above, float16 on 7.x, float32 on
    CPU (where float16 measured 3-4x slower and bfloat16 gained nothing)."""
    early_stopping: EarlyStopping | None = None
    """Stop a phase early, e.g. `{monitor: val_loss, patience: 3, min_delta: 0.0}`; null: off."""
    restore_best: Literal["run", "phase", False] = "run"
    """What model.keras holds, by `val_loss` (or the early-stopping monitor): `run`, the best
    epoch of the whole run; `phase`, each phase ends on its own best epoch and the last phase's
    is saved; `false`, the last epoch. With `run` and `phase` each phase ends on its best (the
    next starts from it). `true` (configs before 0.3) reads as `run`."""
    keep_checkpoints: bool = False
    """Keep checkpoints/' weights files when the run finishes (false: they are removed, and
    checkpoints/state.json, the run's finished mark, stays; a finished run is never resumed)."""
    class_weight: Literal["none", "balanced"] = "none"
    """`balanced`: weight each class's loss by the inverse of its share of the training
    labels."""
    checkpoint_every: Annotated[int, Field(gt=0)] | None = None
    """Also checkpoint every N steps, so that a resume continues mid-epoch; null: at the end of
    every epoch only."""
    deterministic: bool = False
    """TensorFlow op determinism: with the same `seed`, identical reruns on one machine."""
    feature_cache: Literal["auto", "off"] = "auto"
    """`auto`: a phase with the whole backbone frozen and no augmentation runs the backbone once
    per image and trains the head on the cached features; `off`: never."""
    phases: Annotated[list[Phase], Field(min_length=1)] = list(DEFAULT_PHASES)
    """The phases, run in order, each compiled afresh; `--set` reaches one by its index, e.g.
    `train.phases.0.epochs`."""

    @field_validator("restore_best", mode="before")
    @classmethod
    def _restore_best(cls, value: Any) -> Any:
        return "run" if value is True else value

    @field_validator("feature_cache", "mixed_precision", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false: `feature_cache: off` means "off"
        return "off" if value is False else value

    @field_validator("phases", mode="after")
    @classmethod
    def _default_names(cls, phases: list[Phase]) -> list[Phase]:
        """Names are labels, not settings: an unnamed phase is `phase<N>`, counted from 1."""
        return [
            phase if phase.name else phase.model_copy(update={"name": f"phase{index + 1}"})
            for index, phase in enumerate(phases)
        ]
