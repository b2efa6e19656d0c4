"""The life of a run directory, the same for every stage that trains one (finetune, pretrain,
and any later one, such as a search trial): opening it, training under the distribution's one
scope, finishing it.

A stage is a `Stage`: what its runs are (their kind, the lock's wording, whether they have
labels, how a run of another kind is refused) and its own part of training, `train(opening)`.
`Stage.start` opens a new run (the folder writable, `--run-dir` new or empty); `Stage.resume`
reopens an unfinished one (`reopen`: a run of the stage's kind, one trainer at a time (the run
lock), leftovers of a killed writer removed, checksums verified, a finished run left as it is,
a changed config refused without `--force`). Both are multi-worker entries (`stages/worker.py`).
The stage's `train` then gets an `Opening`, whose methods do the rest in order:

    def _train(opening):
        on = opening.prepare()  # precision, seed, a resumed run's global batch
        data, model = ...
        path = opening.directory(model.count_params(), data.bad_files, on)  # env.json: kind
        with opening.interrupted(path):  # Ctrl-C: exit 130 and the resume command
            result = ...  # the epochs, through train/driver.py
        opening.save_model(path, model)  # model.keras
        return opening.finish(path, metrics, result)  # metrics.json, curves.png, finished
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from transferctl import files, runtime
from transferctl.config.loader import dump_config, flatten, load_config
from transferctl.config.schema import Config
from transferctl.data import DataBundle
from transferctl.distribute import strategy as distribution
from transferctl.errors import Interrupted, UserError
from transferctl.files import paths
from transferctl.labels import HELD_OUT
from transferctl.rundir import layout as rundir
from transferctl.rundir import lock as runlock
from transferctl.stages import worker
from transferctl.train import checkpoint, listeners
from transferctl.train.checkpoint import TrainState
from transferctl.train.driver import TrainResult


@dataclass
class RunResult:
    """A trained run: its directory and metrics.json; `already_finished` when resuming it found
    it finished (nothing trained)."""

    run_dir: Path
    metrics: dict[str, Any]
    already_finished: bool = False


def _as_is(config: Config) -> Config:
    return config


@dataclass(frozen=True)
class Stage:
    """A stage that trains runs: what its runs are, and its own part of training (`train`).
    Its `start` and `resume` are the stage's entries (`finetune = STAGE.start`).

    Example (`stages/pretrain.py`):
        STAGE = lifecycle.Stage(
            rundir.PRETRAIN, TRAINING, labels=False, check=_check_kind, train=_train
        )
        pretrain, resume = STAGE.start, STAGE.resume
    """

    kind: str  # rundir.FINETUNE | rundir.PRETRAIN: env.json's `kind`, the command that resumes
    activity: str  # what the run lock says holds the run ("a finetune is training it")
    labels: bool  # the run has labels.txt (a resume verifies it)
    check: Callable[[Path, str], None]  # refuse a run of another kind (a UserError at `where`)
    train: Callable[[Opening], RunResult]  # under the distribution's scope; ends with `finish`
    complete: Callable[[Config], Config] = _as_is  # the config with the stage's defaults filled
    # the option a refused config change names; None: the one that named the run
    config_option: str | None = None

    @worker.entry  # under TF_CONFIG: join the cluster, write where this worker should
    @runlock.releases_locks
    def start(
        self,
        config: Config,
        *,
        run_dir: Path | None = None,
        console: Console | None = None,
        unsafe: bool = False,
    ) -> RunResult:
        """Train `config` (resolved) into a new run directory and leave it complete.

        Args:
            run_dir: a new or empty folder. Defaults to `output.runs_dir/<name>-<timestamp>`.
            unsafe: allow `.keras` weights that run code (Lambda layers).
        """
        if run_dir is None:
            rundir.check_writable(config.output.runs_dir)
        else:
            rundir.check_writable(run_dir, where="--run-dir")
            rundir.check_available(run_dir)
        return self._train(self.complete(config), None, run_dir, console, unsafe)

    @worker.entry
    @runlock.releases_locks
    def resume(
        self,
        run_dir: Path,
        *,
        config: Config | None = None,
        force: bool = False,
        console: Console | None = None,
        unsafe: bool = False,
    ) -> RunResult:
        """Continue an unfinished run of this stage where its last checkpoint left it; a
        finished run is left as it is (`already_finished`).

        Args:
            config: the config the caller asks for; when it differs from the run's own,
                resuming is refused (naming the changed keys) unless `force`, and then it is used.
            force: accept a changed config.
        """
        opened = reopen(run_dir, config, force, console, self)
        if isinstance(opened, RunResult):
            return opened
        return self._train(opened.config, opened.state, opened.run_dir, console, unsafe)

    def _train(
        self,
        config: Config,
        state: TrainState | None,
        run_dir: Path | None,
        console: Console | None,
        unsafe: bool,
    ) -> RunResult:
        spread = distribution.setup(config.runtime, config.data.batch_size)  # before TF's devices
        with spread.scope():
            return self.train(Opening(self, config, state, run_dir, console, unsafe, spread))


@dataclass
class Opening:
    """A run as a stage's `train` gets it, under the distribution's scope: new (`state` None)
    or resumed, and what opens its directory, guards its training and finishes it."""

    stage: Stage
    config: Config
    state: TrainState | None  # None: a new run (or one killed before its first checkpoint)
    run_dir: Path | None  # None: a new folder in output.runs_dir
    console: Console | None
    unsafe: bool
    spread: distribution.Distribution

    @property
    def has_checkpoint(self) -> bool:
        """Whether the model starts from a checkpoint (else from the configured weights)."""
        return self.state is not None and self.state.weights is not None

    def prepare(self) -> runtime.Device:
        """The precision policy, the seed and determinism; a resumed run keeps its global
        batch (`distribution.check_resume`)."""
        config = self.config
        on = runtime.prepare(
            config.train.mixed_precision, config.seed, deterministic=config.train.deterministic
        )
        if self.has_checkpoint and self.run_dir is not None:
            distribution.check_resume(self.run_dir / rundir.ENV, self.spread)
        return on

    def directory(
        self, parameters: int, bad_files: list[tuple[str, str]], on: runtime.Device
    ) -> Path:
        """The run directory to train in: a resumed run's own; else a new one (or an unfinished
        one without a checkpoint yet: started again) with its config.yaml, env.json and
        bad_files.txt, once the disk has room for `parameters`."""
        config, run_dir = self.config, self.run_dir
        if self.state is not None:
            assert run_dir is not None
            listeners.started(run_dir, config)
            return run_dir
        target = config.output.runs_dir if run_dir is None else run_dir
        check_disk_space(target, parameters, "--run-dir" if run_dir else None)
        if run_dir is not None and (run_dir / rundir.CONFIG).is_file():
            path = run_dir.resolve()  # resumed before its first checkpoint: start it again
        else:
            path = rundir.create(config.output.runs_dir, config.name or "run", run_dir)
        rundir.write_text(path / rundir.CONFIG, dump_config(config))
        rundir.write_json(path / rundir.ENV, environment(on, config, self.spread, self.stage.kind))
        if bad_files:
            listed = "".join(f"{file}\t{why}\n" for file, why in bad_files)
            rundir.write_text(path / rundir.BAD_FILES, listed)
        listeners.started(path, config)
        return path

    @contextlib.contextmanager
    def interrupted(self, path: Path) -> Iterator[None]:
        """A Ctrl-C in the block as `Interrupted`: exit 130, naming the command that resumes."""
        try:
            yield
        except KeyboardInterrupt:
            from transferctl.train.progress import stop_progress

            stop_progress()  # the error line below the bars, not on them
            raise Interrupted(path, self.stage.kind) from None

    def save_model(self, path: Path, model: Any) -> None:
        """model.keras, written atomically, before the final metrics are measured on it."""
        with rundir.atomic_path(path / rundir.MODEL, suffix=".keras") as temporary:
            model.save(str(temporary))

    def finish(self, path: Path, metrics: dict[str, Any], result: TrainResult) -> RunResult:
        """metrics.json (with what training did this session), curves.png, then the run marked
        finished: the last step, so that a kill before it leaves a run that resumes."""
        metrics["training"] = {
            "epochs": len(result.history),
            "seconds_this_session": round(result.seconds, 2),
            "phases": result.phases,
        }
        rundir.write_json(path / rundir.METRICS, metrics)
        from transferctl.rundir.curves import write_run_curves

        write_run_curves(path, self.console)  # a failure to draw only warns
        state = checkpoint.load_state(path / rundir.CHECKPOINTS) or TrainState()
        state.finished = True
        keep = self.config.train.keep_checkpoints
        if not keep:
            # nothing resumes a finished run: its weights files go; state.json stays, the
            # run's finished mark
            state.weights = state.best_weights = state.kept = None
        checkpoint.commit(path / rundir.CHECKPOINTS, state)
        if not keep:
            checkpoint.drop_all_but_state(path / rundir.CHECKPOINTS)
        listeners.finished(path, metrics)
        return RunResult(run_dir=path, metrics=metrics)


@dataclass
class Reopened:
    """An unfinished run to train on: its directory, the config to train with, its state."""

    run_dir: Path
    config: Config
    state: TrainState | None


def reopen(
    run_dir: Path, config: Config | None, force: bool, console: Console | None, stage: Stage
) -> Reopened | RunResult:
    """An unfinished run, locked and verified, to go on training; or, for a finished one, its
    result (nothing is trained again). `config`, `force`: as `Stage.resume`."""
    where = "--run-dir" if config is not None else "--resume"
    run_dir = paths.resolved_for(run_dir, where)
    if not (run_dir / rundir.CONFIG).is_file() and not (run_dir / rundir.CHECKPOINTS).is_dir():
        raise UserError(
            "--resume", f"{run_dir} is not a transferctl run (no config.yaml)", "check the path"
        )
    stage.check(run_dir, where)
    state = _locked_state(run_dir, where, stage)
    finished = checkpoint.is_finished(run_dir, state)
    replaced = force and config is not None and not finished  # config.yaml is rewritten
    checkpoint.verify_run_files(
        run_dir, None if finished else state, check_config=not replaced, check_labels=stage.labels
    )
    wanted = stage.complete(config) if config is not None else None
    if replaced and wanted is not None:
        saved = wanted
    else:
        saved = stage.complete(load_config(run_dir / rundir.CONFIG))
    changed = changed_keys(saved, wanted) if wanted is not None else []
    if finished:
        if changed:
            raise UserError(
                where,
                f"{run_dir} holds a finished run whose config differs in {', '.join(changed)}; "
                "runs are never overwritten",
                "pass a new or empty --run-dir, or drop it to create a new run",
            )
        return RunResult(run_dir, _read_json(run_dir / rundir.METRICS), already_finished=True)
    if changed and not force:
        raise UserError(
            stage.config_option or where,
            f"the config differs from the run's own in {', '.join(changed)}",
            "resume without a config to keep the run's, or pass --force to use the new one",
        )
    chosen = wanted if wanted is not None and force else saved
    checkpoint.forget_pending_config()
    if replaced and state is not None and state.weights is not None:
        # written once the checkpoint has loaded into the new config's model
        checkpoint.record_config_once_it_fits(run_dir, dump_config(chosen), state)
    else:
        checkpoint.record_config(run_dir, dump_config(chosen), state)
    if console is not None:
        console.print(f"resuming {run_dir} at {_resume_point(state)}", highlight=False)
    return Reopened(run_dir, chosen, state)


def _locked_state(run_dir: Path, where: str, stage: Stage) -> TrainState | None:
    """The run's committed state; for an unfinished run, as of taking its lock (one trainer at
    a time) and removing what a killed writer left, before anything of it is trusted."""
    state = checkpoint.load_state(run_dir / rundir.CHECKPOINTS)
    if not checkpoint.is_finished(run_dir, state):
        runlock.acquire(run_dir, where, stage.activity)
        rundir.remove_leftovers(run_dir)
        state = checkpoint.load_state(run_dir / rundir.CHECKPOINTS)
    return state


def _resume_point(state: TrainState | None) -> str:
    if state is None or state.weights is None:
        return "the start"
    point = f"epoch {state.epochs_done + 1}"
    return point + (f", step {state.steps_done + 1}" if state.steps_done else "")


def changed_keys(before: Config, after: Config) -> list[str]:
    """Dotted keys whose values differ, ignoring where runs are written."""
    old, new = flatten(before.model_dump(mode="json")), flatten(after.model_dump(mode="json"))
    ignored = ("output.", "name")
    return sorted(
        key
        for key in set(old) | set(new)
        if old.get(key) != new.get(key) and not key.startswith(ignored)
    )


def check_disk_space(target: Path, parameters: int, where: str | None = None) -> None:
    """A run keeps the model and up to three checkpoints (weights + optimizer slots).

    Args:
        where: the option that named `target`. Defaults to `output.runs_dir`.
    """
    where = where or "output.runs_dir"
    probe = target
    while not probe.exists():
        probe = probe.parent
    needed = parameters * 4 * 10 + 50 * 2**20
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise UserError(
            where,
            f"only {free / 2**20:.0f} MiB free on {probe}; this run needs about "
            f"{needed / 2**20:.0f} MiB",
            f"free some space or point {where} elsewhere",
        )


def environment(
    on: runtime.Device, config: Config, spread: distribution.Distribution, kind: str
) -> dict[str, Any]:
    """env.json: the run's kind (`rundir.KINDS`), versions, device, distribution, and more."""
    tf = runtime.tf()
    return {
        "kind": kind,
        **runtime.versions(),
        "device": {"kind": on.kind, "names": list(on.names)},
        "distribution": spread.record(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "precision_policy": runtime.keras().mixed_precision.global_policy().name,
        "seed": config.seed,
        "deterministic": config.train.deterministic,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "tf_build": {k: str(v) for k, v in tf.sysconfig.get_build_info().items()},
        "command_line": sys.argv,
        "cwd": str(Path.cwd()),
    }


def held_out_scores(
    model: Any, data: DataBundle, batches: Callable[[Any], Any] = _as_is
) -> dict[str, Any]:
    """The final model's scores on val and test (those the data has), inference mode, each
    with `num_examples`; `batches` turns a split's (images, labels) into what `model` scores."""
    metrics: dict[str, Any] = {}
    for split in HELD_OUT:
        if data.has(split):
            scores = model.evaluate(batches(data.plain(split)), verbose=0, return_dict=True)
            metrics[split] = {name: float(value) for name, value in scores.items()}
            metrics[split]["num_examples"] = data.count(split)
    return metrics


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        found = files.read_json(path)
    except files.NotReadable as error:
        raise UserError(str(path), error.reason, "restore it, or train the run again") from None
    return found if isinstance(found, dict) else {}
