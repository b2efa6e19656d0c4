"""The typed, validated, frozen config: the keys users write and the rules between them.

Every section forbids unknown keys. Values are checked here, once; no other module re-checks
them. Defaults are the two-phase transfer-learning recipe of the Keras guide. Derived defaults
(run name, image size, whether BatchNorm trains) are filled in by `Config.resolved`, so the
config written to a run directory holds every value explicitly and reloads to the same run.

Relative paths (`data.path`, a weights file) resolve against the config file's folder, passed
as the validation context `base_dir`.

The sections live in `config/sections.py` and `config/training.py`, their shared value types in
`config/fields.py`; this module is the one to import them from. Each field's docstring is its
description in the config reference (docs/config.md, rendered by `config/reference.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from transferctl.config import backbones
from transferctl.config.fields import (
    FREEZE_CHOICES,
    RUN_PREFIX,
    Fraction,
    Freeze,
    FreezeSpec,
    ImageSide,
    LayerDecay,
    PositiveFinite,
    Section,
    split_run_reference,
)
from transferctl.config.search import MLflow, Search, Tracking
from transferctl.config.sections import (
    Augment,
    Data,
    Distill,
    Head,
    Lora,
    Model,
    Output,
    Pretrain,
    Runtime,
)
from transferctl.config.training import DEFAULT_PHASES, EarlyStopping, Phase, Train, Unfreeze
from transferctl.rundir import layout
from transferctl.rundir.lookup import newest_finished_run

__all__ = [
    "DEFAULT_PHASES",
    "FREEZE_CHOICES",
    "RUN_PREFIX",
    "Augment",
    "Config",
    "Data",
    "Distill",
    "EarlyStopping",
    "Fraction",
    "Freeze",
    "FreezeSpec",
    "Head",
    "ImageSide",
    "LayerDecay",
    "Lora",
    "MLflow",
    "Model",
    "Output",
    "Phase",
    "PositiveFinite",
    "Pretrain",
    "Runtime",
    "Search",
    "Section",
    "Tracking",
    "Train",
    "Unfreeze",
]


class Config(Section):
    """The whole config: one YAML file, every section optional."""

    name: str | None = None
    """The prefix of the run directory's name (`<name>-<UTC timestamp>`), and what
    `{run: NAME}` finds; null: the config file's name without its extension."""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42
    """Seeds the splits, the few-label draw, the shuffle, augmentation and initialisation."""
    data: Data = Data()
    """The images."""
    model: Model = Model()
    """The network."""
    train: Train = Train()
    """How it learns."""
    output: Output = Output()
    """Where runs go."""
    runtime: Runtime = Runtime()
    """Distribution over devices."""
    pretrain: Pretrain | None = None
    """Read by `transferctl pretrain` only; null (the default): the defaults below."""
    distill: Distill | None = None
    """Distil a finished run into this one; null (the default): no distillation."""
    search: Search | None = None
    """Read by `transferctl tune` only: the space it searches; null: no search."""
    tracking: Tracking | None = None
    """Experiment tracking (MLflow); null: none, unless MLFLOW_TRACKING_URI is set."""
    report: bool = False
    """`finetune` writes the run's report (`transferctl report`: RUN_DIR/report/index.html) when
    it finishes: one more pass of the model over the held-out, validation and training images,
    and a cross-validated probe on the training features (about 10 s for 1,800 digits)."""

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
            found = _named_run(self.output, model.weights, "model.weights")
            model = model.model_copy(update={"weights": found})
        distill = self.distill
        if distill is not None and distill.teacher.startswith(RUN_PREFIX):
            # only a finetune run can teach: its kind is the one looked for
            found = _named_run(self.output, distill.teacher, "distill.teacher", layout.FINETUNE)
            layout.require_kind(
                Path(found), layout.FINETUNE, "distill.teacher", "name a finetune run"
            )
            distill = distill.model_copy(update={"teacher": found})
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


def _named_run(output: Output, marker: str, where: str, kind: str | None = None) -> str:
    """The newest finished run named by a `run:NAME[:KIND]` marker, under `output.runs_dir`;
    `kind`: the kind to take when the marker names none."""
    name, named_kind = split_run_reference(marker)
    return str(newest_finished_run(output.runs_dir, name, where, named_kind or kind))
