"""Hundreds of mutated configs: each is valid, or exits 2 with one line per mistake naming a
field path. None may produce a traceback or exit 1."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

BASE: dict[str, Any] = {
    "name": "mutant",
    "seed": 1,
    "data": {
        "source": "digits",
        "image_size": [32, 32],
        "validation_split": 0.1,
        "test_split": 0.1,
        "limit": 100,
        "batch_size": 8,
        "augment": {
            "flip": "none",
            "rotation": 0.1,
            "zoom": 0.1,
            "contrast": 0.1,
            "translate": 0.1,
        },
    },
    "model": {
        "backbone": "mobilenet_v3_small",
        "weights": "none",
        "freeze": {"last_trainable": 10},
        "train_batchnorm": True,
        "head": {"pooling": "avg", "hidden": [16], "dropout": 0.1},
    },
    "train": {
        "optimizer": "adamw",
        "lr_schedule": "cosine",
        "weight_decay": 0.01,
        "label_smoothing": 0.1,
        "mixed_precision": "off",
        "early_stopping": {"monitor": "val_loss", "patience": 2},
        "phases": [
            {"name": "head", "epochs": 1, "learning_rate": 1.0e-3},
            {"name": "tune", "epochs": 1, "learning_rate": 1.0e-4, "freeze": {"first": 5}},
        ],
    },
    "output": {"runs_dir": "runs"},
}

BAD_VALUES: list[Any] = [
    None,
    "",
    "bogus",
    -1,
    0,
    1.5,
    10**12,
    float("nan"),
    float("inf"),
    True,
    [],
    [1, 2, 3],
    {"x": 1},
    {"first": -1},
    "../../nowhere/at/all",
]

ERROR_LINE = re.compile(r"^error: (?P<where>[^:]+(?: line \d+ column \d+)?): (?P<what>.+)$")
TOP_LEVEL = {"name", "seed", "data", "model", "train", "output", "config"}


def _leaves(tree: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _leaves(value, (*path, index))


def _set(tree: Any, path: tuple, value: Any) -> Any:
    tree = copy.deepcopy(tree)
    if not path:
        return value
    node = tree
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return tree


def _mutants() -> Iterator[tuple[str, Any]]:
    paths = [path for path in _leaves(BASE) if path]
    for path in paths:
        label = ".".join(str(part) for part in path)
        for value in BAD_VALUES:
            yield f"{label}={value!r}", _set(BASE, path, value)
        parent, last = path[:-1], path[-1]
        if isinstance(last, str):
            node = BASE
            for part in parent:
                node = node[part]
            renamed = {(k + "s" if k == last else k): v for k, v in node.items()}
            yield f"{label}:misspelt", _set(BASE, parent, renamed)
            removed = {k: v for k, v in node.items() if k != last}
            yield f"{label}:removed", _set(BASE, parent, removed)
    for top in ("data", "model", "train", "output"):
        yield f"{top}:extra-key", _set(BASE, (top, "surprise"), 1)
    for text in ("[1, 2]", "just a string", "a: [unclosed", "\t- tab", "{{{"):
        yield f"raw:{text}", text


MUTANTS = list(_mutants())


def test_there_are_hundreds_of_mutants() -> None:
    assert len(MUTANTS) >= 200


def test_no_mutant_produces_a_traceback(cli, tmp_path: Path) -> None:
    outcomes = {"valid": 0, "rejected": 0}
    for label, mutant in MUTANTS:
        config = tmp_path / "mutant.yaml"
        text = mutant if isinstance(mutant, str) else yaml.safe_dump(mutant)
        config.write_text(text)
        result = cli("validate", config)
        assert result.exit_code in (0, 2), f"{label}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output, label
        if result.exit_code == 0:
            outcomes["valid"] += 1
            continue
        outcomes["rejected"] += 1
        lines = result.stderr.strip().splitlines()
        assert lines, label
        for line in lines:
            match = ERROR_LINE.match(line)
            assert match, f"{label}: {line!r}"
            where = match["where"]
            named = where.split(".")[0] in TOP_LEVEL or match["what"].startswith("unknown key")
            assert named or where.startswith(str(config)), (label, line)
    assert outcomes["rejected"] >= 200, outcomes


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("seed",), -5, "seed"),
        (("data", "image_size"), [100000, 100000], "data.image_size.0"),
        (("train", "phases", 0, "learning_rate"), float("inf"), "train.phases.0.learning_rate"),
        (("data", "validation_split"), float("nan"), "data.validation_split"),
        (("model", "freeze"), {"first": 1, "until": "x"}, "model.freeze"),
        (("name",), "../escape", "name"),
    ],
)
def test_values_that_would_fail_later_are_caught_now(cli, tmp_path: Path, path, value, field):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_set(BASE, path, value)))
    result = cli("validate", config)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {field}: "), result.stderr
