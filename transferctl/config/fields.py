"""The value types the config's sections share: bounded numbers, freeze specs, paths, run names.

`Section` is the base of every section: unknown keys are errors, values are frozen, defaults are
validated too, and each field's docstring is its description, which `config/reference.py`
renders into the config reference (docs/config.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationInfo

from transferctl.files import paths

PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")

RUN_PREFIX = "run:"  # `weights: {run: NAME}` before it is resolved to a run directory
RUN_KINDS = ("finetune", "pretrain")  # `{run: NAME, kind: ...}`

Fraction = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
ImageSide = Annotated[int, Field(gt=0, le=4096)]
LayerDecay = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]


class Section(BaseModel):
    """A config section: unknown keys are errors; a field's docstring is its description."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, so that an error line quoting it stays readable."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_path(path: Path, info: ValidationInfo) -> Path:
    """An absolute path; a relative one is read from the config file's folder (`base_dir`)."""
    path = path.expanduser()
    if not path.is_absolute():
        base_dir = (info.context or {}).get("base_dir")
        path = (Path(base_dir) if base_dir else Path.cwd()) / path
    return paths.resolved(path)


def run_reference(value: Any, expected: str) -> Any:
    """`{run: NAME}` as a `run:NAME` marker and `{run: NAME, kind: KIND}` as `run:NAME:KIND`
    (a name has no `:`), resolved once `output.runs_dir` is known.

    Any other mapping is an error saying what was `expected`; other values pass unchanged.
    """
    if not isinstance(value, dict):
        return value
    name, kind = value.get("run"), value.get("kind")
    if not set(value) <= {"run", "kind"} or not isinstance(name, str) or not name:
        raise ValueError(f"expected {expected}; got {shorten(repr(value))}")
    if not PLAIN_NAME.fullmatch(name):
        raise ValueError(
            f"`run` expects a run's name (letters, digits, `_`, `.`, `-`); got "
            f"{shorten(repr(name))}; a run directory is given as the path itself"
        )
    if "kind" not in value:
        return RUN_PREFIX + name
    if kind not in RUN_KINDS:
        raise ValueError(f"`kind` expects one of {', '.join(RUN_KINDS)}; got {shorten(repr(kind))}")
    return f"{RUN_PREFIX}{name}:{kind}"


def split_run_reference(marker: str) -> tuple[str, str | None]:
    """A `run:NAME[:KIND]` marker's name and kind (None: not given)."""
    name, _, kind = marker[len(RUN_PREFIX) :].partition(":")
    return name, kind or None


# ----------------------------------------------------------------------------------------------
# Freezing: all | none | {first: N} | {until: LAYER_NAME} | {last_trainable: N} | {regex: ...}
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


def parse_freeze(value: Any) -> Freeze:
    """A freeze spec as users write it (`all`, `{first: 10}`, ...) -> `Freeze`."""
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
            return Freeze(mode="regex", value=_layer_pattern(inner))
    raise ValueError(f"expected one of {FREEZE_CHOICES}; got {value!r}")


def _layer_pattern(inner: Any) -> str:
    if not isinstance(inner, str) or not inner:
        raise ValueError(f"`regex` expects a pattern of layer names; got {inner!r}")
    try:
        re.compile(inner)
    except re.error as error:
        raise ValueError(f"`regex` {inner!r} is not a valid pattern ({error})") from None
    return inner


def _freeze_to_yaml(value: Freeze) -> str | dict[str, int | str]:
    return value.to_yaml()


FreezeSpec = Annotated[Freeze, PlainSerializer(_freeze_to_yaml)]
