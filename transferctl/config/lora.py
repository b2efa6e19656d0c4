"""`model.lora`: low-rank adapters on the backbone (applied by `model/lora.py`)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator

from transferctl.config.fields import PositiveFinite, Section


class Lora(Section):
    """Low-rank adapters (LoRA, Hu et al. 2021) on the backbone's Dense and EinsumDense layers
    (or its convolutions), through Keras's own `layer.enable_lora(rank)`: in the backbone layers
    a phase's freeze spec trains, only the adapters train (with the head); model.keras and every
    export hold them merged into the kernels, as plain layers."""

    rank: Annotated[int, Field(gt=0)] = 8
    """The adapters' rank r: a kernel W [in, out] computes as W + (alpha / r) * A [in, r] @ B
    [r, out], and only A and B train."""
    alpha: PositiveFinite | None = None
    """The scale's numerator; null: the rank (a scale of 1)."""
    target: str = "auto"
    """`auto`: every Dense and EinsumDense layer in the backbone (a ViT's attention projections
    and MLP), or every Conv1D/2D/3D layer of a backbone with none (a CNN; Keras has no LoRA for
    depthwise convolutions); else a regular expression matched (`re.search`) against the paths
    of both kinds, e.g. `query|value`."""

    @field_validator("target", mode="after")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if value != "auto":
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"expected auto or a regular expression; {error}") from None
        return value
