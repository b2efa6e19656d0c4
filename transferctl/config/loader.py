"""YAML file + `--set` overrides -> one validated, frozen `Config`.

Layers, in a fixed order (as TF Model Garden does): the defaults, then the file, then each
`--set KEY=VALUE`. Mappings merge key by key; lists are replaced whole. Every mistake becomes a
one-line error naming the dotted field path, the value received and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from transferctl.config.checks import run_checks, run_resolved_checks
from transferctl.config.schema import Config
from transferctl.errors import ConfigErrors, UserError, quote
from transferctl.files import bounded_yaml

CONFIG_FILE_NAME = "config.yaml"


def load_config(
    path: Path | str, overrides: Sequence[str] = (), values: Mapping[str, Any] | None = None
) -> Config:
    """Read, override, validate and resolve a config file.

    Example:
        config = load_config("configs/demo.yaml", ["train.phases.0.epochs=1"])

    Args:
        path: the YAML file.
        overrides: `KEY=VALUE` strings; KEY a dotted path (list indices as numbers), VALUE
            parsed as a YAML scalar.
        values: KEY -> a Python value, applied after `overrides` (a tune trial's sample).
    """
    path = Path(path)
    raw = read_yaml(path)
    merged = _merge(Config().model_dump(mode="python", exclude_none=False), raw)
    overridden: set[str] = set()
    for text in overrides:
        key, value = parse_override(text)
        apply_override(merged, key, value)
        overridden.add(key)
    for key, value in (values or {}).items():
        apply_override(merged, key, value)
        overridden.add(key)
    try:
        config = Config.model_validate(merged, context={"base_dir": path.parent.resolve()})
    except ValidationError as error:
        raise ConfigErrors(
            [_to_user_error(item, path, overridden) for item in error.errors()]
        ) from None
    problems = run_checks(config)
    if problems:
        raise ConfigErrors(problems)
    resolved = config.resolved(default_name=path.stem)
    problems = run_resolved_checks(resolved)
    if problems:
        raise ConfigErrors(problems)
    return resolved


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (safe and bounded: `bounded_yaml`); an empty file is
    an empty mapping."""
    data = bounded_yaml.load_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            str(path),
            f"expected a mapping of config keys at the top level; got {type(data).__name__}",
            "see configs/demo.yaml for the layout",
        )
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`train.phases.0.epochs=1` -> ("train.phases.0.epochs", 1)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(
            f"--set {text}", "expected KEY=VALUE", "for example --set train.phases.0.epochs=1"
        )
    if not value.strip():
        return key, None
    try:
        parsed = bounded_yaml.load_text(value, f"--set {key}")
    except bounded_yaml.InvalidYAML:
        parsed = value  # not YAML (e.g. an unbalanced quote in a name): the text itself
    return key, parsed


def apply_override(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set `value` at dotted `key` in `tree`, creating mappings on the way."""
    parts = key.split(".")
    node: Any = tree
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit():
                raise UserError(
                    where, f"{quote(part)} is not a list index", "use a number, e.g. .0."
                )
            index = int(part)
            if index >= len(node):
                raise UserError(
                    where,
                    f"index {index} is out of range (the list has {len(node)} items)",
                    "set the whole list in the config file to add items",
                )
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), dict | list):
                    node[part] = {}
                node = node[part]
        else:
            parent = ".".join(parts[:depth])
            raise UserError(
                parent,
                f"is a single value, it has no key {quote(part)}",
                f"use --set {parent}=VALUE",
            )


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ----------------------------------------------------------------------------------------------
# pydantic errors -> one line each, in the user's terms
# ----------------------------------------------------------------------------------------------

_EXPECTED = {
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a text value",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "path_type": "expected a path",
}


def _to_user_error(item: Any, path: Path, overridden: set[str]) -> UserError:
    location = [str(part) for part in item["loc"] if part not in ("tuple",)]
    # pydantic names the branch of a union in the location (e.g. 'int'); drop type names
    location = [part for part in location if not _is_type_tag(part)]
    field = ".".join(location) or "config"
    kind = item["type"]
    got = item.get("input")
    ctx = item.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(location[:-1])
        what = f"unknown key; expected one of {', '.join(allowed)}"
    elif kind == "missing":
        what = "required key is missing"
    elif kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        what = f"expected one of {expected.replace(' or ', ', ')}; got {quote(got)}"
    elif kind == "value_error":
        what = str(ctx.get("error", item["msg"]))
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
        bound = " and ".join(f"{words.get(key, key)} {value}" for key, value in ctx.items())
        what = f"expected a number {bound}; got {quote(got)}"
    elif kind == "too_short":
        what = f"expected at least {ctx.get('min_length')} item(s); got {quote(got)}"
    elif kind in _EXPECTED:
        what = f"{_EXPECTED[kind]}; got {quote(got)}"
    else:
        what = f"{item['msg'][0].lower()}{item['msg'][1:]}; got {quote(got)}"
    source = f"--set {field}=..." if _overridden(field, overridden) else str(path)
    return UserError(field, what, f"fix it in {source}")


def _is_type_tag(part: str) -> bool:
    return part in ("int", "float", "str", "bool", "list", "dict", "none") or part.startswith(
        ("function-", "tuple[", "list[", "constrained-")
    )


def _overridden(field: str, overridden: set[str]) -> bool:
    return any(field == key or field.startswith(key + ".") for key in overridden)


def _allowed_keys(location: list[str]) -> list[str]:
    model: Any = Config
    for part in location:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def dump_config(config: Config) -> str:
    """The resolved config as YAML, every default filled in; `load_config` reads it back."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists of mappings as dotted keys (list indices as numbers).

    Lists of plain values stay one value: `data.image_size` is `[224, 224]`.
    """
    if isinstance(tree, Mapping) and tree:
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(tree, list) and tree and all(isinstance(item, Mapping) for item in tree):
        flat = {}
        for index, value in enumerate(tree):
            flat.update(flatten(value, f"{prefix}{index}."))
        return flat
    return {prefix.rstrip("."): tree}
