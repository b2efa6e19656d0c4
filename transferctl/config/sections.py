"""The config's sections other than `train`: data, model, output, runtime, distill, pretrain.

Each field's docstring is its description in the config reference (docs/config.md, rendered by
`config/reference.py`); the defaults are written here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from transferctl.config import backbones, hub
from transferctl.config.fields import (
    RUN_PREFIX,
    Fraction,
    Freeze,
    FreezeSpec,
    ImageSide,
    PositiveFinite,
    Section,
    parse_freeze,
    resolve_path,
    run_reference,
)
from transferctl.config.lora import Lora
from transferctl.rundir import layout

# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


class RandAugment(Section):
    """RandAugment (Cubuk et al. 2019) as `keras.layers.RandAugment`: each batch, `ops` of its
    11 operations (shear, translate, rotate, brightness, colour, contrast, sharpness,
    posterize, solarize, auto-contrast, equalize) are drawn and applied in turn."""

    ops: Annotated[int, Field(gt=0, le=11)] = 2
    """How many operations are applied to each batch, one after another."""
    magnitude: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.5
    """How strong each operation may be, from 0 to 1 (each image draws its strength between 0
    and this)."""


class Augment(Section):
    """Train-only augmentation, as Keras preprocessing layers (validation and test images are
    never augmented). Any augmentation turns the feature cache off for a frozen phase. The
    recipe's augmentations (`randaugment`, `erasing`, `mixup`, `cutmix`): docs/recipe.md."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"
    """Random flips. Digits and text are not mirror-symmetric: use `none` for them, and in a
    feature-extraction phase (frozen backbone), which uses the feature cache only when nothing
    is augmented."""
    rotation: Fraction = 0.0
    """Random rotation, as a fraction of a full turn either way (0.05: up to 18 degrees); 0: off."""
    zoom: Fraction = 0.0
    """Random zoom in or out, as a fraction of the image's size; 0: off."""
    contrast: Fraction = 0.0
    """Random contrast change, as a fraction; 0: off."""
    translate: Fraction = 0.0
    """Random shift, as a fraction of the height and of the width; 0: off."""
    randaugment: RandAugment | None = None
    """RandAugment, e.g. `{ops: 2, magnitude: 0.5}` (`true`: those defaults); null: off."""
    erasing: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0
    """Random erasing (`keras.layers.RandomErasing`): the probability that an image gets one
    random rectangle (14-57% of its height and of its width) filled with noise; 0: off."""
    mixup: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False)] = 0.0
    """MixUp (`keras.layers.MixUp`): each image is blended with another of its batch, and so
    are their one-hot labels, by a weight drawn from Beta(alpha, alpha); this is alpha (0.2
    is usual); 0: off. Training accuracy is then against each mixed label's larger share."""
    cutmix: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0
    """CutMix (`keras.layers.CutMix`): a rectangle of another image of the batch is pasted in,
    and the labels mixed by area, the share drawn from Beta(alpha, alpha); this is alpha (1.0
    is usual, at most 1); 0: off. With `mixup` too, each batch gets one of the two, at random."""

    @field_validator("randaugment", mode="before")
    @classmethod
    def _randaugment_switch(cls, value: Any) -> Any:
        # `randaugment: true` switches it on with its defaults, `false` off
        if value is True:
            return {}
        return None if value is False else value


class Data(Section):
    """The images: where they come from, how they are split, batched and augmented."""

    source: Literal["cifar10", "cifar100", "folder", "digits"] = "digits"
    """`digits`: scikit-learn's scanned handwritten digits (8x8, shipped with it, works offline);
    `cifar10` and `cifar100` come through Keras's download and cache; `folder`: your images, at
    `data.path`."""
    path: Path | None = None
    """`folder` only: a folder of class sub-folders, or of `train/` [`val/`] [`test/`] each holding
    them. Relative to the config file's folder."""
    image_size: tuple[ImageSide, ImageSide] | None = None
    """`[height, width]` the images are resized to (one number: a square); null: the backbone's
    native size. At least the backbone's minimum size (`transferctl backbones`)."""
    validation_split: Fraction = 0.1
    """The share of the training images held out for validation when the source has no
    validation set (stratified, drawn by `seed`). With `test_split`, below 0.9 in all."""
    test_split: Fraction = 0.0
    """The share of the training images held out for testing when the source has no test set
    (a folder without `test/`, digits)."""
    limit: Annotated[int, Field(gt=0)] | None = None
    """At most this many images per split, for smoke runs; applied after `classes` and
    `per_class`."""
    batch_size: Annotated[int, Field(gt=0)] = 32
    """Images per step on each replica: `fit` gets `batch_size` x replicas
    (`runtime.distribution`)."""
    augment: Augment = Augment()
    """Train-only augmentation."""
    on_bad_file: Literal["skip", "fail"] = "skip"
    """A folder's unreadable files (empty, truncated, undecodable, not an image): `skip` leaves
    them out and lists them in the run's `bad_files.txt`; `fail` stops before training, naming
    the first one."""
    classes: Annotated[list[str], Field(min_length=2)] | None = None
    """A subset of the source's classes, labelled in this order (e.g. `[5, 6, 7, 8, 9]` for
    digits, Keras's names for CIFAR, sub-folder names for a folder); null: all. An unknown name
    is an error listing the source's classes."""
    per_class: Annotated[int, Field(gt=0)] | None = None
    """At most this many training images per class, drawn by `seed` after validation and test
    are carved (few-label runs; the held-out splits stay whole)."""

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
        path = resolve_path(value, info)
        if not path.exists():
            raise ValueError(f"folder not found: {path}")
        if not path.is_dir():
            raise ValueError(f"expected a folder of class sub-folders; got the file {path}")
        return path


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------


class Head(Section):
    """The new classifier on top of the backbone: pooling, hidden Dense layers, dropout."""

    pooling: Literal["avg", "max", "flatten"] = "avg"
    """How the backbone's feature map becomes one vector per image."""
    hidden: list[Annotated[int, Field(gt=0)]] = [256]
    """Units of each hidden Dense layer (ReLU), in order; `[]`: the classifier alone."""
    dropout: Fraction = 0.2
    """Dropout before each Dense layer of the head; 0: none."""
    init: Literal["auto", "random", "linear_probe"] = "auto"
    """`linear_probe` starts the head from a logistic regression fitted on the frozen
    backbone's features (LP-FT); `auto` does so when the first phase trains the head alone on a
    frozen backbone (and the hidden layers are at least 2 x classes wide), else `random`
    (Keras's initialisation)."""


class Model(Section):
    """The network: a backbone, its starting weights, what stays frozen, and the head."""

    backbone: str = "mobilenet_v2"
    """Any `keras.applications` model (`transferctl backbones` lists them); case and
    underscores don't matter. Or `hub:PRESET_OR_DIR`: a KerasHub backbone, by preset name
    (KerasHub's download and cache) or a local preset folder (`save_to_preset`); extra `[hub]`,
    see docs/hub.md."""
    weights: str = "imagenet"
    """Where the backbone starts: `imagenet` (Keras's download and cache), `none` (from
    scratch), a `.weights.h5` / `.h5` / `.keras` file, a finished run directory (its trained
    backbone; its head is not used), or `{run: NAME}`: the newest finished run of that name in
    `output.runs_dir`; `{run: NAME, kind: pretrain}` (or `finetune`): of that kind (needed when
    runs of both kinds carry the name). A `hub:` backbone takes `preset` (its preset's weights;
    `imagenet`, the default, means it there), `none` (the preset's architecture, random
    weights), a file or a run."""
    freeze: FreezeSpec = Freeze(mode="all")
    """Which backbone layers stay frozen, counted as in `backbone.layers`: `all`, `none`,
    `{first: N}` (layers 0..N-1), `{until: LAYER_NAME}` (every layer before it),
    `{last_trainable: N}` (all but the last N), `{regex: PATTERN}` (layers whose names match).
    A phase without its own `freeze` uses this. The head always trains."""
    train_batchnorm: bool | None = None
    """Whether BatchNorm layers train (then with exact statistics); null: true when `weights`
    is `none` (from scratch), else false (frozen, in inference mode, as the Keras guide
    recommends)."""
    head: Head = Head()
    """The classifier on top of the backbone."""
    lora: Lora | None = None
    """Low-rank adapters on the backbone, e.g. `{rank: 8, alpha: 16}`; null: none."""

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze(cls, value: Any) -> Freeze:
        return parse_freeze(value)

    @field_validator("backbone", mode="after")
    @classmethod
    def _known_backbone(cls, value: str, info: ValidationInfo) -> str:
        if hub.is_hub(value):
            return _hub_backbone(value, info)
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
        # {run: NAME} stays a marker until Config knows output.runs_dir (Config.resolved)
        return run_reference(value, "imagenet, none, a file, a run directory or {run: NAME}")

    @field_validator("weights", mode="after")
    @classmethod
    def _weights_source(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith(RUN_PREFIX):
            return value
        named = value.strip().lower()
        if hub.is_hub(str(info.data.get("backbone", ""))) and named in ("imagenet", "preset"):
            return "preset"  # the default, `imagenet`, is a KerasHub backbone's pretrained start
        if named == "preset":
            raise ValueError(
                "preset is the start of a hub: backbone; expected imagenet, none, a "
                ".weights.h5/.h5/.keras file or a transferctl run directory"
            )
        if named in ("imagenet", "none"):
            return named
        path = resolve_path(Path(value), info)
        if not path.exists():
            raise ValueError(
                f"expected imagenet, none, a .weights.h5/.h5/.keras file or a transferctl run "
                f"directory; {path} does not exist"
            )
        if path.is_dir():
            if not (path / layout.MODEL).is_file():
                raise ValueError(
                    f"{path} is not a finished transferctl run (it has no {layout.MODEL})"
                )
        elif not path.name.endswith((".h5", ".keras")):
            raise ValueError(f"expected a .weights.h5, .h5 or .keras file; got {path.name}")
        return str(path)


def _hub_backbone(value: str, info: ValidationInfo) -> str:
    """`hub:NAME` as given; `hub:FOLDER` with the folder made absolute and checked."""
    preset = hub.preset_of(value)
    if not preset:
        raise ValueError("expected hub:PRESET_NAME or hub:FOLDER (a KerasHub preset); got hub:")
    if "://" in preset:
        return hub.PREFIX + preset
    folder = resolve_path(Path(preset), info)  # a bare name: a folder beside the config first
    if not (hub.looks_like_folder(preset) or folder.is_dir()):
        return hub.PREFIX + preset
    hub.read_folder_config(folder)
    return hub.PREFIX + str(folder)


# ----------------------------------------------------------------------------------------------
# output, runtime
# ----------------------------------------------------------------------------------------------


class Output(Section):
    """Where runs go."""

    runs_dir: Path = Path("runs")
    """The folder that holds the run directories (`<name>-<UTC timestamp>/`), relative to where
    you run the command; `--run-dir` chooses one run's folder instead."""


class Runtime(Section):
    """Distribution over devices; `data.batch_size` is per replica."""

    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    """`auto`: `multi_worker` when `TF_CONFIG` names more than one worker, `mirrored` when more
    than one GPU is visible (or `TRANSFERCTL_CPU_DEVICES` splits the CPU), else `none` (one
    device, the default strategy). The global batch is `data.batch_size` x replicas."""
    lr_scaling: Literal["none", "linear"] = "none"
    """`none` keeps every configured learning rate as written: they are tuned per config for
    transfer (mostly Adam, small fine-tuning rates), and Adam's step does not grow with the
    batch the way SGD's does. `linear` multiplies them (each phase's and
    `pretrain.learning_rate`) by the number of replicas: Goyal et al. 2017's rule for SGD at
    large batch."""


# ----------------------------------------------------------------------------------------------
# distill, pretrain
# ----------------------------------------------------------------------------------------------


class Distill(Section):
    """Knowledge distillation: a finished run (the teacher) teaches the configured model, on
    `alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
    cross-entropy(labels)`."""

    teacher: str
    """A finished finetune run directory, or `{run: NAME}` (the newest finished run of that
    name in `output.runs_dir`), whose `labels.txt` holds the data's classes, in any order."""
    temperature: PositiveFinite = 4.0
    """T: both models' logits are divided by it before the softmax (softer targets)."""
    alpha: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.9
    """The weight of the teacher's term; 1.0 learns from the teacher alone."""

    @field_validator("teacher", mode="before")
    @classmethod
    def _run_by_name(cls, value: Any) -> Any:
        return run_reference(value, "a run directory or {run: NAME}")

    @field_validator("teacher", mode="after")
    @classmethod
    def _finished_run(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith(RUN_PREFIX):
            return value
        path = resolve_path(Path(value), info)
        if not path.is_dir():
            raise ValueError(
                f"expected a transferctl run directory; {path} "
                + ("is a file" if path.exists() else "does not exist")
            )
        if layout.run_kind(path) == layout.PRETRAIN:
            raise ValueError(
                f"{path} is a pretrain run, not a finetune run: its model is an encoder, not a "
                "classifier; a teacher is a run trained by transferctl finetune"
            )
        needed = (layout.MODEL, layout.LABELS)
        missing = [name for name in needed if not (path / name).is_file()]
        if missing:
            raise ValueError(
                f"{path} is not a finished transferctl run (it has no {' or '.join(missing)})"
            )
        if not layout.is_finished(path):
            raise ValueError(
                f"{path} is not a finished transferctl run (its {layout.CHECKPOINTS}/"
                f"{layout.STATE} does not say finished: it was stopped, or is being resumed); "
                "finish it with `transferctl finetune --resume`, or name another teacher"
            )
        return str(path)


class Pretrain(Section):
    """Unsupervised pretraining: the backbone encodes, a decoder reconstructs the input images."""

    objective: Literal["autoencoder"] = "autoencoder"
    """What the encoder learns from: reconstructing its input images."""
    epochs: Annotated[int, Field(gt=0)] = 20
    """Epochs of pretraining."""
    learning_rate: PositiveFinite = 1.0e-3
    """The optimizer's learning rate (`train.optimizer` and its settings apply)."""
    sparsity: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    """Adds `sparsity * mean(|code|)` to the loss (an L1 penalty on the code); 0: off."""
    noise: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """The standard deviation of Gaussian noise added to the encoder's input in training, in
    0-1 pixel units (a denoising autoencoder); 0: off."""
