"""YAML read with bounds checked before any Python object is built.

`yaml.safe_load` runs no code, but a 331-byte file of nested aliases ("billion laughs") stands
for 10^9 values: PyYAML shares them, and whatever walks the result afterwards (merging,
validating, printing an error) expands them, for minutes and gigabytes. So the composer here
counts, for every node, the size it has with every alias expanded (values, characters, depth),
and stops at the first node over a bound, naming its line; self-referencing aliases are refused.
A config has about a hundred values; the bounds leave room for long class lists.

Example:
    data = load_text(text, source="configs/demo.yaml")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from transferctl.errors import UserError
from transferctl.files import NotReadable, paths, read_regular

MAX_BYTES = 2**20  # a config file or a --set value
MAX_VALUES = 100_000  # scalars, lists and mappings, with every alias expanded
MAX_CHARS = 4 * 2**20  # characters of all scalars, with every alias expanded
MAX_DEPTH = 32  # lists and mappings inside each other


class InvalidYAML(UserError):
    """Text that is not YAML (a syntax error); the bounds are `UserError`s of their own."""


class _Bound(yaml.YAMLError):
    """A bound passed while composing: what, where, and what to do."""

    def __init__(self, problem: str, mark: Any, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark
        self.fix = fix


class BoundedLoader(yaml.SafeLoader):
    """A `SafeLoader` whose composer measures each node as if every alias were expanded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        # id(node) -> (values, characters, depth) expanded; nodes stay alive in the tree
        self._sizes: dict[int, tuple[int, int, int]] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._sizes:
                raise _Bound(
                    f"the alias *{event.anchor} refers to a value that contains it",
                    event.start_mark,
                    "write the values out",
                )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Bound(
                    f"lists and mappings nested more than {MAX_DEPTH} deep",
                    self.peek_event().start_mark,
                    "a config nests a few levels; check that this is the right file",
                )
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._measure(node)
        return node

    def _measure(self, node: Any) -> None:
        if isinstance(node, yaml.ScalarNode):
            size = (1, len(node.value), 1)
        else:
            children = (
                [item for pair in node.value for item in pair]
                if isinstance(node, yaml.MappingNode)
                else list(node.value)
            )
            sizes = [self._sizes[id(child)] for child in children]
            size = (
                1 + sum(values for values, _, _ in sizes),
                sum(chars for _, chars, _ in sizes),
                1 + max((depth for _, _, depth in sizes), default=0),
            )
        values, chars, depth = size
        if values > MAX_VALUES:
            problem = f"too large: more than {MAX_VALUES:,} values with its aliases expanded"
        elif chars > MAX_CHARS:
            problem = f"too large: more than {MAX_CHARS:,} characters with its aliases expanded"
        elif depth > MAX_DEPTH:
            problem = f"lists and mappings nested more than {MAX_DEPTH} deep through aliases"
        else:
            self._sizes[id(node)] = size
            return
        raise _Bound(problem, node.start_mark, "write the values out, without aliases")


def load_text(text: str, source: str) -> Any:
    """The value of one YAML document, within the bounds; `source` names it in errors."""
    if len(text) > MAX_BYTES:
        raise UserError(
            source,
            f"too long: {len(text):,} characters (the limit is {MAX_BYTES:,})",
            "a config is a few kilobytes; check that this is the right file",
        )
    try:
        loader = BoundedLoader(text)
    except yaml.reader.ReaderError as error:  # a control character: refused before parsing
        raise _unprintable(text, error, source) from None
    try:
        return loader.get_single_data()
    except RecursionError:
        raise UserError(source, "invalid YAML: nested too deeply", "fix the YAML") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source} line {mark.line + 1} column {mark.column + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        if isinstance(error, _Bound):
            raise UserError(where, problem, error.fix) from None
        raise InvalidYAML(where, f"invalid YAML: {problem}", "fix the YAML syntax") from None
    finally:
        loader.dispose()


def _unprintable(text: str, error: yaml.reader.ReaderError, source: str) -> UserError:
    """A character YAML does not allow (a control character), named by its line and column."""
    before = text[: error.position]
    line = before.count("\n") + 1
    column = error.position - (before.rfind("\n") + 1) + 1
    escape = f"\\x{error.character:02x}" if error.character < 256 else f"\\u{error.character:04x}"
    return UserError(
        f"{source} line {line} column {column}",
        f"a control character U+{error.character:04X} is not allowed in YAML",
        f'remove it, or write it as an escape inside double quotes ("{escape}")',
    )


def load_file(path: Path) -> Any:
    """The value of a YAML file: a regular file of at most `MAX_BYTES`, UTF-8, within bounds."""
    if not path.exists():
        raise UserError(str(path), f"config file {paths.missing(path)}", "check the path")
    if path.is_dir():
        raise UserError(str(path), "expected a YAML file, got a folder", "pass the config file")
    try:
        data = read_regular(path, limit=MAX_BYTES)
    except NotReadable as error:
        raise UserError(str(path), error.reason, "pass a YAML config file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            str(path), f"cannot read the file ({error})", "save it as UTF-8 text"
        ) from None
    return load_text(text, str(path))
