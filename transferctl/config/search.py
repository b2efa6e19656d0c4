"""The `search:` section (`transferctl tune`) and the `tracking:` section (MLflow).

`search.space` maps a dotted config key (as `--set` writes it: `train.phases.1.learning_rate`,
`model.head.dropout`) to one dimension: `{log_uniform: [lo, hi]}`, `{uniform: [lo, hi]}`,
`{int: [lo, hi]}` or `{choice: [...]}` (a choice may be a mapping, e.g. a freeze spec). The
shapes are checked here; that every key is a config key and every bound gives a valid config
is checked by `transferctl.tune.space` (it needs the loader), before any training.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from transferctl.config.fields import PositiveFinite, Section

KINDS = ("log_uniform", "uniform", "int", "choice")
Finite = Annotated[float, Field(allow_inf_nan=False)]
Whole = Annotated[int, Field(strict=True)]  # named here: the field `int` shadows it in the class
MAX_TRIALS = 10_000


class Dimension(Section):
    """One key's range: exactly one of the four kinds."""

    log_uniform: tuple[PositiveFinite, PositiveFinite] | None = None
    """[lo, hi], sampled on a log scale (learning rates): 0 < lo < hi."""
    uniform: tuple[Finite, ...] | None = None
    """[lo, hi], sampled uniformly: lo < hi."""
    int: tuple[Whole, ...] | None = None
    """[lo, hi], a whole number from lo to hi, both included."""
    choice: list[Any] | None = Field(default=None, min_length=1, max_length=1000)
    """The values to choose from (numbers, strings, mappings such as a freeze spec)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"expected exactly one of {', '.join(KINDS)}; got "
                + (", ".join(given) if given else "none")
            )
        bounds = getattr(self, given[0])
        if given[0] != "choice" and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise ValueError(f"{given[0]}: expected [lo, hi] with lo < hi; got {list(bounds)}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)


class Search(Section):
    """`transferctl tune`: an Optuna study over `space`; every trial is a run directory."""

    space: dict[str, Dimension] = Field(min_length=1, max_length=100)
    """Dotted config key -> its range (see the module doc)."""
    trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = 20
    """How many trials finish (completed or pruned); `--trials` overrides it."""
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    """What a trial is judged by, each epoch (for pruning) and at its end: val_accuracy is
    maximised, val_loss minimised."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    """How trials pick values: Optuna's TPE, random, or every combination of the `choice`
    (and `int`) dimensions (`grid`)."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    """Stop a trial whose metric at an epoch is worse than the median of earlier trials at the
    same epoch (`median`), by successive halving (`hyperband`), or never."""
    storage: str | None = None
    """null: `study.db` (SQLite) in the tune directory; or a database URL that several
    machines share (Optuna's RDB storage), e.g. `postgresql://user:pass@host/db`."""


class MLflow(Section):
    """Where MLflow records runs."""

    uri: str | None = None
    """The tracking URI (`sqlite:///mlflow.db`, `http://host:5000`, a folder); null: the
    MLFLOW_TRACKING_URI environment variable, else MLflow's default (MLflow 3:
    `sqlite:///mlflow.db` in the current folder)."""
    experiment: str | None = None
    """The MLflow experiment; null: the config's name."""


class Tracking(Section):
    """Experiment tracking (an optional extra: `pip install 'transferctl[mlflow]'`)."""

    mlflow: MLflow | None = None
    """Log each run to MLflow: params, every epoch's metrics, the final metrics, artifacts."""
