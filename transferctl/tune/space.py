"""The search space: checked against the config before any training, sampled per trial.

Every key of `search.space` must be a config key, and every bound must give a valid config: the
config is loaded once with each dimension at each of its ends (each choice for `choice`), the
other keys as the file has them, so that `{log_uniform: [1e-6, 10]}` on a learning rate, or a
freeze spec naming no layer, is refused now, naming `search.space.KEY`, not after an hour of
trials. A trial's values are Optuna's `suggest_*` of each dimension, applied to the config as
`--set` would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferctl.config.loader import load_config
from transferctl.config.search import Dimension, Search
from transferctl.errors import ConfigErrors, UserError, quote

GRID_MAX_INTS = 1000  # an `int` dimension under the grid sampler: every value is a grid point


def check_space(config_path: Path, overrides: Sequence[str], search: Search) -> None:
    """Load the config with each dimension at each end (see the module doc).

    Raises:
        UserError: a key that is no config key, or an end that makes the config invalid,
            named `search.space.KEY`.
    """
    if search.sampler == "grid":
        grid_values(search.space)  # every dimension must be a list of points
    for key, dimension in search.space.items():
        for value in ends(dimension):
            try:
                load_config(config_path, overrides, values={"search": None, key: value})
            except ConfigErrors as errors:
                raise _space_error(key, value, errors.errors[0]) from None
            except UserError as error:
                raise _space_error(key, value, error) from None


def ends(dimension: Dimension) -> list[Any]:
    """The values a dimension can take at its ends: lo and hi, or every choice."""
    if dimension.choice is not None:
        return list(dimension.choice)
    bounds = getattr(dimension, dimension.kind)
    return [bounds[0], bounds[1]]


def _space_error(key: str, value: Any, error: UserError) -> UserError:
    where = f"search.space.{key}"
    if error.where == key or error.where.startswith(f"{key}."):
        what = f"{quote(value)} is not a valid value: {error.what}"
    else:
        what = f"with {key} = {quote(value)}, {error.where}: {error.what}"
    return UserError(where, what, "change the range, or the key (a dotted config key)")


def suggest(trial: Any, space: dict[str, Dimension]) -> dict[str, Any]:
    """One value per key, from Optuna's `trial` (a choice's index for mapping choices)."""
    values: dict[str, Any] = {}
    for key, dimension in space.items():
        if dimension.log_uniform is not None:
            values[key] = trial.suggest_float(key, *dimension.log_uniform, log=True)
        elif dimension.uniform is not None:
            values[key] = trial.suggest_float(key, *dimension.uniform)
        elif dimension.int is not None:
            values[key] = trial.suggest_int(key, *dimension.int)
        else:
            assert dimension.choice is not None
            values[key] = _choose(trial, key, dimension.choice)
    return values


def _choose(trial: Any, key: str, choices: list[Any]) -> Any:
    """A choice; mappings and lists are chosen by index (Optuna stores plain values only)."""
    if all(_plain(choice) for choice in choices):
        return trial.suggest_categorical(key, choices)
    return choices[trial.suggest_categorical(key, list(range(len(choices))))]


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def grid_values(space: dict[str, Dimension]) -> dict[str, list[Any]]:
    """The grid sampler's points per key: the choices (their indices for mappings), or every
    whole number of an `int` range.

    Raises:
        UserError: a float range, which has no points to enumerate.
    """
    grid: dict[str, list[Any]] = {}
    for key, dimension in space.items():
        if dimension.choice is not None:
            choices = dimension.choice
            plain = all(_plain(choice) for choice in choices)
            grid[key] = list(choices) if plain else list(range(len(choices)))
        elif dimension.int is not None and dimension.int[1] - dimension.int[0] < GRID_MAX_INTS:
            grid[key] = list(range(dimension.int[0], dimension.int[1] + 1))
        else:
            raise UserError(
                f"search.space.{key}",
                f"{dimension.kind} has no points for search.sampler: grid",
                "list the values as {choice: [...]}, or use sampler: tpe or random",
            )
    return grid


def chosen(params: dict[str, Any], space: dict[str, Dimension]) -> dict[str, Any]:
    """A trial's values as the config got them: a mapping choice's index (what Optuna stores)
    replaced by the choice itself."""
    values = dict(params)
    for key, dimension in space.items():
        choices = dimension.choice
        if key in values and choices is not None and not all(map(_plain, choices)):
            values[key] = choices[values[key]]
    return values


def shown(values: dict[str, Any], space: dict[str, Dimension]) -> dict[str, Any]:
    """The values a trial used, as a person reads them: a key's last part when no other key
    ends the same, numbers to 4 significant digits."""
    result = {}
    for key, value in values.items():
        tail = key.rsplit(".", 1)[-1]
        label = tail if _unique_tail(tail, space) else key
        result[label] = float(f"{value:.4g}") if isinstance(value, float) else value
    return result


def _unique_tail(name: str, space: dict[str, Dimension]) -> bool:
    return sum(key.rsplit(".", 1)[-1] == name for key in space) == 1
