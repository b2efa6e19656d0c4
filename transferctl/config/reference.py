"""The config reference (docs/config.md), rendered from the schema: every key, by dotted path.

The schema's models hold each key's type, bounds, default and description (the field's
docstring), so the reference is written once, there, and this module only renders it; a test
checks that the committed page is what `render()` makes. Reads no TensorFlow.

    python -m transferctl.config.reference docs/config.md           # write the page
    python -m transferctl.config.reference --check docs/config.md   # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from transferctl.config.fields import FREEZE_CHOICES, Freeze, Section
from transferctl.config.loader import dump_config
from transferctl.config.schema import Config

REGENERATE = "make reference"  # the command that rewrites the page; the stale-page test names it

# The docs page that explains a section at length (link, title), linked from its heading.
GUIDES = {
    "data": ("data.md", "Data sources and doctor"),
    "model": ("transfer-methods.md", "Transfer methods"),
    "train": ("transfer-methods.md", "Transfer methods"),
    "output": ("run-directory.md", "The run directory"),
    "runtime": ("distribution.md", "Distribution and multi-worker"),
    "pretrain": ("transfer-methods.md#unsupervised-pretraining", "Unsupervised pretraining"),
    "distill": ("transfer-methods.md#distillation", "Distillation"),
}

INTRODUCTION = """\
A config is one YAML file. Every key is optional unless marked *required*; unknown keys are
errors, each named by its dotted path. Relative paths (`data.path`, a weights file) are read from
the config file's folder; `output.runs_dir` is relative to where you run the command.

`--set KEY=VALUE` overrides any key by the dotted path shown here (list indices as numbers:
`--set train.phases.0.epochs=1`); values are read as YAML scalars (`--set data.image_size=[96,96]`,
`--set model.freeze=none`). Layers apply in order: the defaults, then the file, then each `--set`.
`transferctl validate CONFIG` prints the resolved config, every default filled in, or the errors;
the run directory's `config.yaml` holds the same and reloads to the same run.
"""


@dataclass(frozen=True)
class Key:
    """One config key as the reference shows it."""

    path: str  # dotted, list items as `N`: train.phases.N.epochs
    shown_type: str
    default: str  # YAML text, or `required`
    description: str
    section: type[BaseModel] | None  # the section this key opens, if it is one


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[Key]:
    """Every key under `model`, depth first, in the order the schema declares them.

    Raises:
        ValueError: a field has no docstring (every key must say what it does).
    """
    for name, info in model.model_fields.items():
        path = prefix + name
        if not info.description:
            raise ValueError(f"{model.__name__}.{name} ({path}) has no docstring")
        section, is_list = _section_in(info.annotation)
        yield Key(
            path=path,
            shown_type=_type_text(info.annotation, info.metadata),
            default="required" if info.is_required() else _default_text(info),
            description=" ".join(info.description.split()),
            section=section,
        )
        if section is not None:
            yield from config_keys(section, f"{path}.N." if is_list else f"{path}.")


def render() -> str:
    """The whole page, as Markdown."""
    lines = [
        "# Config reference",
        "",
        f"<!-- Generated from the docstrings of transferctl/config/ by `{REGENERATE}`;"
        " edit those, not this page. -->",
        "",
        INTRODUCTION,
        "## Every key with its default",
        "",
        "```yaml",
        dump_config(Config()).rstrip(),
        "```",
        "",
        "## Top level",
        "",
    ]
    for key in config_keys():
        if "." not in key.path and key.section is not None:
            lines += _section_heading(key)
        else:
            lines += _key_entry(key)
    return "\n".join(lines).rstrip() + "\n"


def _section_heading(key: Key) -> list[str]:
    assert key.section is not None
    lines = [f"## `{key.path}`", "", " ".join((key.section.__doc__ or "").split())]
    if key.default == "null":  # an optional section: what its absence means
        lines[-1] += f" {key.description}"
    if key.path in GUIDES:
        link, title = GUIDES[key.path]
        lines[-1] += f" More in [{title}]({link})."
    return [*lines, ""]


def _key_entry(key: Key) -> list[str]:
    if key.default == "required":
        default = "*required*"
    elif "\n" in key.default:
        default = "default:\n\n```yaml\n" + key.default.rstrip() + "\n```"
    else:
        default = f"default `{key.default}`"
    return [
        f"### `{key.path}` {{#{key.path}}}",
        "",
        f"{key.shown_type} · {default}",
        "",
        key.description,
        "",
    ]


# ----------------------------------------------------------------------------------------------
# types and defaults as text
# ----------------------------------------------------------------------------------------------


def _section_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The section a field holds (directly, optionally, or as list items), and whether a list."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation, False
    origin = get_origin(annotation)
    for arg in get_args(annotation):
        found, is_list = _section_in(arg)
        if found is not None:
            return found, is_list or origin is list
    return None, False


def _type_text(annotation: Any, constraints: Sequence[Any] = (), plural: bool = False) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return _type_text(base, [*constraints, *extra], plural)
    if origin in (Union, types.UnionType):
        kinds = [arg for arg in get_args(annotation) if arg is not type(None)]
        text = " or ".join(_type_text(kind, constraints, plural) for kind in kinds)
        return f"{text}, or `null`" if len(kinds) < len(get_args(annotation)) else text
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        return f"list of {_type_text(item, plural=True)}{_bounds(constraints)}"
    if origin is tuple:
        return "[" + ", ".join(_type_text(item) for item in get_args(annotation)) + "]"
    if annotation is Freeze:
        return " | ".join(f"`{choice}`" for choice in FREEZE_CHOICES.split(", "))
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return "mappings (their keys below)" if plural else "mapping (its keys below)"
    if annotation is bool:
        return "`true` | `false`"
    names = {int: "whole number", float: "number", str: "text", Path: "path"}
    plurals = {int: "whole numbers", float: "numbers", str: "text values", Path: "paths"}
    name = (plurals if plural else names).get(annotation, str(annotation))
    return name + _bounds(constraints)


# pydantic keeps a field's bounds as small objects with one attribute each (annotated_types)
BOUND_SYMBOLS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _bounds(constraints: Sequence[Any]) -> str:
    """`(> 0, <= 4096)` from the constraint objects of a field (or of its inner types)."""
    found: list[str] = []
    for item in constraints:
        for inner in item.metadata if isinstance(item, FieldInfo) else [item]:
            found += _bound(inner)
    return f" ({', '.join(found)})" if found else ""


def _bound(item: Any) -> list[str]:
    found = []
    for attribute, symbol in BOUND_SYMBOLS:
        value = getattr(item, attribute, None)
        if value is not None:
            found.append(f"{symbol} {value}" if isinstance(value, int) else f"{symbol} {value:g}")
    count = getattr(item, "min_length", None)
    if count is not None:
        found.append(f"at least {count} item" + ("s" if count != 1 else ""))
    return found


def _default_text(info: FieldInfo) -> str:
    """The default as YAML: one line when short, else a block."""
    # the field's own metadata (a serializer, bounds) with its type, as pydantic dumps the field
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    plain = adapter.dump_python(info.get_default(call_default_factory=True), mode="json")
    text = yaml.safe_dump(plain, default_flow_style=True, sort_keys=False, width=10_000)
    text = text.removesuffix("\n...\n").strip()
    if len(text) <= 90:
        return text
    return yaml.safe_dump(plain, default_flow_style=None, sort_keys=False, width=90)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the page, or with `--check` compare it: 0 when current, 1 when stale."""
    parser = argparse.ArgumentParser(prog="python -m transferctl.config.reference")
    parser.add_argument("page", type=Path, help="the Markdown page, e.g. docs/config.md")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    arguments = parser.parse_args(argv)
    page: Path = arguments.page
    text = render()
    if not arguments.check:
        page.write_text(text, encoding="utf-8")
        return 0
    current = page.read_text(encoding="utf-8") if page.is_file() else ""
    if current == text:
        return 0
    print(f"{page} is not what the schema renders; run `{REGENERATE}`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
