"""The typed, validated, frozen config: the keys users write and the rules between them.

Every section forbids unknown keys. Values are checked here, once; no other module re-checks
them. Defaults are the two-phase transfer-learning recipe of the Keras guide. Derived defaults
(run name, image size, whether BatchNorm trains) are filled in by `Config.resolved`, so the
config written to a run directory holds every value explicitly and reloads to the same run.

Relative paths (`data.path`, a weights file) resolve against the config file's folder, passed
as the validation context `base_dir`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
)

from transferctl.config import backbones

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------
# Freezing: all | none | {first: N} | {until: LAYER_NAME} | {last_trainable: N}
# ----------------------------------------------------------------------------------------------

FREEZE_CHOICES = "all, none, {first: N}, {until: LAYER_NAME}, {last_trainable: N}, {regex: PATTERN}"


class Freeze(BaseModel):
    """Which backbone layers stay frozen. Layers are counted as in `backbone.layers`."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["all", "none", "first", "until", "last_trainable", "regex"]
    value: int | str | None = None

    def to_yaml(self) -> str | dict[str, int | str]:
        if self.mode in ("all", "none"):
            return self.mode
        assert self.value is not None
        return {self.mode: self.value}

    def describe(self) -> str:
        plain = self.to_yaml()
        if isinstance(plain, str):
            return plain
        ((key, value),) = plain.items()
        return f"{{{key}: {value}}}"


def _parse_freeze(value: Any) -> Freeze:
    if isinstance(value, Freeze):
        return value
    if value is None or value is False:
        return Freeze(mode="none")
    if value is True:
        return Freeze(mode="all")
    if isinstance(value, str) and value.strip().lower() in ("all", "none"):
        return Freeze(mode=value.strip().lower())  # type: ignore[arg-type]
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key in ("first", "last_trainable"):
            if isinstance(inner, bool) or not isinstance(inner, int) or inner < 0:
                raise ValueError(f"`{key}` expects a whole number >= 0; got {inner!r}")
            return Freeze(mode=key, value=inner)
        if key == "until":
            if not isinstance(inner, str) or not inner:
                raise ValueError(f"`until` expects a layer name; got {inner!r}")
            return Freeze(mode="until", value=inner)
        if key == "regex":
            if not isinstance(inner, str) or not inner:
                raise ValueError(f"`regex` expects a pattern of layer names; got {inner!r}")
            try:
                re.compile(inner)
            except re.error as error:
                raise ValueError(f"`regex` {inner!r} is not a valid pattern ({error})") from None
            return Freeze(mode="regex", value=inner)
    raise ValueError(f"expected one of {FREEZE_CHOICES}; got {value!r}")


def _freeze_to_yaml(value: Freeze) -> str | dict[str, int | str]:
    return value.to_yaml()


FreezeSpec = Annotated[Freeze, PlainSerializer(_freeze_to_yaml)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------

Fraction = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
ImageSide = Annotated[int, Field(gt=0, le=4096)]


class Augment(Section):
    """Train-only augmentation, as Keras preprocessing layers."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"
    rotation: Fraction = 0.0
    zoom: Fraction = 0.0
    contrast: Fraction = 0.0
    translate: Fraction = 0.0


class Data(Section):
    source: Literal["cifar10", "cifar100", "folder", "digits"] = "digits"
    path: Path | None = None
    image_size: tuple[ImageSide, ImageSide] | None = None
    validation_split: Fraction = 0.1
    test_split: Fraction = 0.0
    limit: Annotated[int, Field(gt=0)] | None = None
    batch_size: Annotated[int, Field(gt=0)] = 32
    augment: Augment = Augment()
    on_bad_file: Literal["skip", "fail"] = "skip"
    classes: Annotated[list[str], Field(min_length=2)] | None = None  # a subset, in this order
    per_class: Annotated[int, Field(gt=0)] | None = None  # at most N training images per class

    @field_validator("classes", mode="before")
    @classmethod
    def _names_as_text(cls, value: Any) -> Any:
        # digits' classes are named 0..9, which YAML reads as numbers
        if isinstance(value, list):
            return [
                str(item) if isinstance(item, int) and not isinstance(item, bool) else item
                for item in value
            ]
        return value

    @field_validator("classes", mode="after")
    @classmethod
    def _distinct_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            repeated = sorted({name for name in value if value.count(name) > 1})
            if repeated:
                raise ValueError(f"lists {', '.join(map(repr, repeated))} more than once")
        return value

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        if isinstance(value, list | tuple) and len(value) != 2:
            raise ValueError(f"expected [height, width]; got {list(value)!r}")
        return value

    @field_validator("path", mode="after")
    @classmethod
    def _resolve_path(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(value, info)
        if not path.exists():
            raise ValueError(f"folder not found: {path}")
        if not path.is_dir():
            raise ValueError(f"expected a folder of class sub-folders; got the file {path}")
        return path


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------


class Head(Section):
    pooling: Literal["avg", "max", "flatten"] = "avg"
    hidden: list[Annotated[int, Field(gt=0)]] = [256]
    dropout: Fraction = 0.2
    # auto: linear_probe when the first phase trains the head alone on a frozen backbone
    init: Literal["auto", "random", "linear_probe"] = "auto"


RUN_PREFIX = "run:"  # `weights: {run: NAME}` before it is resolved to a run directory


class Model(Section):
    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    freeze: FreezeSpec = Freeze(mode="all")
    train_batchnorm: bool | None = None
    head: Head = Head()

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze(cls, value: Any) -> Freeze:
        return _parse_freeze(value)

    @field_validator("backbone", mode="after")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        spec = backbones.find(value)
        if spec is None:
            close = backbones.suggest(value)
            hint = f" (did you mean {close}?)" if close else ""
            raise ValueError(
                f"unknown backbone {value!r}{hint}; `transferctl backbones` lists them"
            )
        return spec.name

    @field_validator("weights", mode="before")
    @classmethod
    def _run_by_name(cls, value: Any) -> Any:
        # {run: NAME} stays a marker until Config knows output.runs_dir (see _find_named_run)
        if isinstance(value, dict):
            if set(value) != {"run"} or not isinstance(value["run"], str) or not value["run"]:
                raise ValueError(
                    "expected imagenet, none, a file, a run directory or {run: NAME}; "
                    f"got {value!r}"
                )
            return RUN_PREFIX + value["run"]
        return value

    @field_validator("weights", mode="after")
    @classmethod
    def _weights_source(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith(RUN_PREFIX):
            return value
        if value.strip().lower() in ("imagenet", "none"):
            return value.strip().lower()
        path = _resolve(Path(value), info)
        if not path.exists():
            raise ValueError(
                f"expected imagenet, none, a .weights.h5/.h5/.keras file or a transferctl run "
                f"directory; {path} does not exist"
            )
        if path.is_dir():
            if not (path / "model.keras").is_file():
                raise ValueError(
                    f"{path} is not a finished transferctl run (it has no model.keras)"
                )
        elif not path.name.endswith((".h5", ".keras")):
            raise ValueError(f"expected a .weights.h5, .h5 or .keras file; got {path.name}")
        return str(path)


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------


class Unfreeze(Section):
    """Gradual unfreezing: every `every` epochs, `layers` more backbone layers train."""

    every: Annotated[int, Field(gt=0)]
    layers: Annotated[int, Field(gt=0)]


LayerDecay = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]


class Phase(Section):
    name: str | None = None  # a label; default phase1, phase2, ... (filled in by Train)
    epochs: Annotated[int, Field(gt=0)]
    learning_rate: PositiveFinite
    freeze: FreezeSpec | None = None
    unfreeze: Unfreeze | None = None  # from the phase's freeze, N more layers every K epochs
    backbone_lr_scale: PositiveFinite = 1.0  # the backbone learns at learning_rate * this
    layer_decay: LayerDecay | None = None  # or at learning_rate * layer_decay ** depth

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze(cls, value: Any) -> Freeze | None:
        return None if value is None else _parse_freeze(value)

    @field_validator("name", mode="after")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        # the name labels history.csv rows and names a tensorboard/ sub-folder
        if value is not None and not _PLAIN_NAME.fullmatch(value):
            raise ValueError(
                "expected a short label of letters, digits, '-', '_' or '.' (not starting with "
                f"'.'), at most 64 characters; got {_shorten(value)!r}"
            )
        return value

    @property
    def label(self) -> str:
        """The phase's name (filled in by `Train` when the config left it out)."""
        assert self.name is not None, "validate through Train"
        return self.name


class EarlyStopping(Section):
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: Annotated[int, Field(gt=0)] = 3
    min_delta: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0


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
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    weight_decay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    momentum: Fraction = 0.9
    label_smoothing: Fraction = 0.0
    mixed_precision: Literal["auto", "off", "float16", "bfloat16"] = "auto"
    early_stopping: EarlyStopping | None = None
    restore_best: bool = True
    class_weight: Literal["none", "balanced"] = "none"
    checkpoint_every: Annotated[int, Field(gt=0)] | None = None  # steps; null: every epoch
    deterministic: bool = False
    # auto: a phase with the whole backbone frozen and no augmentation trains on cached features
    feature_cache: Literal["auto", "off"] = "auto"
    phases: Annotated[list[Phase], Field(min_length=1)] = list(DEFAULT_PHASES)

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


class Output(Section):
    runs_dir: Path = Path("runs")


# ----------------------------------------------------------------------------------------------
# runtime: how training is spread over devices (distribute/strategy.py decides and builds)
# ----------------------------------------------------------------------------------------------


class Runtime(Section):
    """Distribution over devices; `data.batch_size` is per replica.

    distribution: `auto` is multi_worker when TF_CONFIG names more than one worker, mirrored
    when more than one GPU is visible (or TRANSFERCTL_CPU_DEVICES splits the CPU), else none
    (one device, the default strategy). The global batch is batch_size x replicas.
    lr_scaling: `none` (the default) keeps every configured learning rate as written: they are
    tuned per config for transfer (mostly Adam, small fine-tuning rates), and Adam's step does
    not grow with the batch the way SGD's does. `linear` multiplies them by the number of
    replicas (Goyal et al. 2017's rule for SGD at large batch, with the same per-replica batch).
    """

    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    lr_scaling: Literal["none", "linear"] = "none"


# ----------------------------------------------------------------------------------------------
# distill
# ----------------------------------------------------------------------------------------------


class Distill(Section):
    """Knowledge distillation: a finished run (the teacher) teaches the configured model.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross-entropy(labels)
    """

    teacher: str  # a run directory, or {run: NAME} (resolved with output.runs_dir)
    temperature: PositiveFinite = 4.0
    alpha: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.9

    @field_validator("teacher", mode="before")
    @classmethod
    def _run_by_name(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) != {"run"} or not isinstance(value["run"], str) or not value["run"]:
                raise ValueError(f"expected a run directory or {{run: NAME}}; got {value!r}")
            return RUN_PREFIX + value["run"]
        return value

    @field_validator("teacher", mode="after")
    @classmethod
    def _finished_run(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith(RUN_PREFIX):
            return value
        path = _resolve(Path(value), info)
        if not path.is_dir():
            raise ValueError(
                f"expected a transferctl run directory; {path} "
                + ("is a file" if path.exists() else "does not exist")
            )
        missing = [name for name in ("model.keras", "labels.txt") if not (path / name).is_file()]
        if missing:
            raise ValueError(
                f"{path} is not a finished transferctl run (it has no {' or '.join(missing)})"
            )
        return str(path)


# ----------------------------------------------------------------------------------------------
# pretrain: `transferctl pretrain` (the backbone as the encoder of an autoencoder)
# ----------------------------------------------------------------------------------------------


class Pretrain(Section):
    """Unsupervised pretraining: the backbone encodes, a decoder reconstructs the input images."""

    objective: Literal["autoencoder"] = "autoencoder"
    epochs: Annotated[int, Field(gt=0)] = 20
    learning_rate: PositiveFinite = 1.0e-3
    sparsity: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0  # L1 on the code
    noise: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # std of input noise, in 0-1 pixel units


# ----------------------------------------------------------------------------------------------
# the whole config
# ----------------------------------------------------------------------------------------------


class Config(Section):
    name: str | None = None
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()
    output: Output = Output()
    runtime: Runtime = Runtime()
    pretrain: Pretrain | None = None  # `transferctl pretrain` uses the defaults when null
    distill: Distill | None = None

    @field_validator("name", mode="after")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError(f"expected a plain file-name prefix; got {value!r}")
        return value

    def resolved(self, default_name: str) -> Config:
        """Fill in the derived defaults, so that every value is explicit."""
        spec = backbones.get(self.model.backbone)
        data = self.data
        if data.image_size is None:
            data = data.model_copy(update={"image_size": (spec.native_size, spec.native_size)})
        model = self.model
        if model.weights.startswith(RUN_PREFIX):
            # {run: NAME}: the newest finished run of that name; the resolved config names it
            from transferctl.rundir.lookup import newest_finished_run

            found = newest_finished_run(self.output.runs_dir, model.weights[len(RUN_PREFIX) :])
            model = model.model_copy(update={"weights": str(found)})
        distill = self.distill
        if distill is not None and distill.teacher.startswith(RUN_PREFIX):
            from transferctl.rundir.lookup import newest_finished_run

            name = distill.teacher[len(RUN_PREFIX) :]
            found = newest_finished_run(self.output.runs_dir, name, where="distill.teacher")
            distill = distill.model_copy(update={"teacher": str(found)})
        if model.train_batchnorm is None:
            # From scratch, BatchNorm must learn its statistics; on pretrained weights the
            # Keras recipe keeps it frozen and in inference mode.
            model = model.model_copy(update={"train_batchnorm": model.weights == "none"})
        return self.model_copy(
            update={
                "name": self.name or default_name,
                "data": data,
                "model": model,
                "distill": distill,
            }
        )

    @property
    def image_size(self) -> tuple[int, int]:
        assert self.data.image_size is not None, "call resolved() first"
        return self.data.image_size


def _resolve(path: Path, info: ValidationInfo) -> Path:
    path = path.expanduser()
    if not path.is_absolute():
        base_dir = (info.context or {}).get("base_dir")
        path = (Path(base_dir) if base_dir else Path.cwd()) / path
    return path.resolve()
