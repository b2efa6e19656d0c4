"""What resuming needs, in `checkpoints/`, committed atomically after every epoch.

Weights (model and optimizer state, as Keras 3 `save_weights` stores both) go to files named by
epoch; `state.json` names the current ones and is replaced last, so it is the commit point: a
kill at any moment leaves the previous consistent state or the new one, never a mix. Older
weight files are removed only after the new state is committed.

Measured on Keras 3.15.1: `BackupAndRestore` and `ModelCheckpoint` write in place, and random
kills left corrupt `.weights.h5` files in 3 of 6 runs; hence this module.

Every commit also records the sha256 of what resuming relies on (config.yaml, labels.txt and
the weight files the state names), and `verify_run_files` checks them before a resume: a file
cut short, emptied, edited or deleted since is an error naming it, never a silent repair.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from transferctl import files
from transferctl.errors import UserError
from transferctl.rundir import layout as rundir

STATE_MAX_BYTES = 64 * 2**20


@dataclass
class TrainState:
    """Where training stands: the start of epoch `epochs_done` (0-based) of phase `phase_index`."""

    phase_index: int = 0
    phase_start_epoch: int = 0
    epochs_done: int = 0
    steps_done: int = 0  # batches already trained in epoch `epochs_done` (step checkpoints)
    phase_stopped: bool = False  # early stopping ended this phase
    weights: str | None = None  # file in checkpoints/ (model + optimizer)
    best_weights: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None  # 0-based global epoch
    early_stopping_wait: int = 0
    early_stopping_best: float | None = None
    finished: bool = False
    phases_done: list[dict[str, Any]] = field(default_factory=list)
    # the kept epoch and its weights file (`train/kept.py`), None before a phase has ended
    kept: dict[str, Any] | None = None
    # sha256 of the files resuming relies on, by path in the run directory; {} in state files
    # written before checksums were recorded (those resume with existence checks only)
    checksums: dict[str, str] = field(default_factory=dict)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "bool": (bool,),
    "str | None": (str, type(None)),
    "float | None": (int, float, type(None)),
    "int | None": (int, type(None)),
    "list[dict[str, Any]]": (list,),
    "dict[str, str]": (dict,),
    "dict[str, Any] | None": (dict, type(None)),
}


def load_state(folder: Path) -> TrainState | None:
    """The committed state, None when there is none yet; a damaged file is a `UserError`."""
    wait()
    path = folder / rundir.STATE
    if not path.exists() and not path.is_symlink():
        return None
    try:
        data = files.read_json(path, limit=STATE_MAX_BYTES)
    except files.NotReadable as error:
        raise damaged_state(path, error.reason) from None
    if not isinstance(data, dict):
        raise damaged_state(path, "not a JSON object")
    for item in fields(TrainState):
        if item.name not in data:
            continue
        value = data[item.name]
        expected = _FIELD_TYPES.get(str(item.type), (object,))
        wrong_bool = isinstance(value, bool) and bool not in expected
        if wrong_bool or not isinstance(value, expected):
            raise damaged_state(path, f"{item.name} is {json.dumps(value)[:80]}")
    checksums = data.get("checksums", {})
    if not all(isinstance(v, str) for v in checksums.values()):
        raise damaged_state(path, "checksums are not text")
    known = {key: value for key, value in data.items() if key in TrainState.__dataclass_fields__}
    return TrainState(**known)


def is_finished(run_dir: Path, state: TrainState | None) -> bool:
    """Whether the run finished (`rundir.is_finished`, the one definition), for a caller that
    holds its loaded `state`: a state that is not finished settles it without reading a file."""
    return state is not None and state.finished and rundir.is_finished(run_dir)


def damaged_state(path: Path, reason: str) -> UserError:
    return UserError(
        str(path),
        f"the run's training state is damaged ({reason})",
        "restore the file from a backup, or train again into a new folder; the run cannot be "
        "resumed safely",
    )


def verify_run_files(
    run_dir: Path,
    state: TrainState | None,
    *,
    check_config: bool = True,
    check_labels: bool = True,
) -> None:
    """Before a resume: what the run relies on is there, not empty, and (where `state` has
    checksums) byte for byte what the last checkpoint recorded; else a `UserError` naming it.

    Args:
        run_dir: the run directory.
        state: its committed state (`load_state`); None before the first checkpoint.
        check_config: False when config.yaml is about to be replaced (`--force` with a config).
        check_labels: False for a run without classes (`transferctl pretrain`).
    """
    wait()
    sums = state.checksums if state is not None else {}
    if check_config:
        _verify(run_dir, rundir.CONFIG, sums, CONFIG_FIX)
    if state is None:
        return
    if check_labels:
        _verify(run_dir, rundir.LABELS, sums, LABELS_FIX)
    for name in weights_files(state):
        _verify(run_dir, f"{rundir.CHECKPOINTS}/{name}", sums, WEIGHTS_FIX)


def weights_files(state: TrainState) -> list[str]:
    """The weights files in checkpoints/ that `state` relies on: the last epoch's, the span's
    best and the kept model's."""
    kept = (state.kept or {}).get("weights")
    names = (state.weights, state.best_weights, kept if isinstance(kept, str) else None)
    return list(dict.fromkeys(name for name in names if name is not None))


CONFIG_FIX = (
    "restore it, or resume with the config the run was trained with: "
    "transferctl finetune CONFIG --resume RUN_DIR --force"
)
LABELS_FIX = (
    "restore it (the class names, one per line, in index order), or train again into a new folder"
)
WEIGHTS_FIX = "restore it from a backup, or train again into a new folder"


def _verify(run_dir: Path, name: str, sums: dict[str, str], fix: str) -> None:
    path = run_dir / name
    if not path.exists():
        raise UserError(str(path), "is missing; the run cannot be resumed without it", fix)
    try:
        digest = sha256(path)
        empty = path.stat().st_size == 0
    except (files.NotReadable, OSError) as error:
        reason = getattr(error, "reason", None) or str(error)
        raise UserError(str(path), f"cannot be read ({reason})", fix) from None
    if empty:
        raise UserError(str(path), "is empty (cut short when it was written or copied?)", fix)
    expected = sums.get(name)
    if expected is not None and digest != expected:
        raise UserError(
            str(path),
            "has changed since the last checkpoint (cut short, damaged or edited); it is not "
            "what the run was trained with",
            fix,
        )


_digests: dict[tuple[str, int, int], str] = {}


def sha256(path: Path) -> str:
    """The file's sha256 (hex), read in chunks; remembered while its size and mtime hold."""
    info = path.stat()
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    if key in _digests:
        return _digests[key]
    digest = hashlib.sha256()
    with files.open_regular(path) as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    _digests[key] = digest.hexdigest()
    return _digests[key]


def save(model: Any, folder: Path, state: TrainState, *, best_model_weights: bool = False) -> None:
    """Write the model's weights (and, if asked, as the new best), then commit `state`.

    The weights are copied out of the model here, and written and committed in a background
    thread while training goes on (the previous commit is waited for first): on 2 CPU cores the
    epoch then pays ~0.04 s for MobileNetV2's 27 MB, not 0.4 s. The first save of a model (and
    of each new optimizer) writes with Keras's own `save_weights` and waits.
    """
    from transferctl.train import weights_file  # h5py: only where weights are written

    wait()
    folder.mkdir(parents=True, exist_ok=True)
    name = (
        f"epoch-{state.epochs_done:04d}-step-{state.steps_done:06d}-phase-{state.phase_index}"
        ".weights.h5"
    )
    state.weights = name
    if best_model_weights:
        state.best_weights = name
    entries = weights_file.snapshot(model)
    if entries is None:
        with rundir.atomic_path(folder / name, suffix=".weights.h5") as temporary:
            weights_file.save(model, temporary)
        commit(folder, state)
        return
    frozen = copy.deepcopy(state)  # training goes on changing `state`

    def write_and_commit() -> None:
        try:
            with rundir.atomic_path(folder / name, suffix=".weights.h5") as temporary:
                weights_file.write(entries, temporary)
            _commit(folder, frozen)
        except BaseException as error:  # noqa: BLE001 - raised by the next wait()
            _background.error = error

    _background.thread = threading.Thread(target=write_and_commit, name="checkpoint")
    _background.thread.start()


class _Background:
    thread: threading.Thread | None = None
    error: BaseException | None = None


_background = _Background()


def wait() -> None:
    """Until the checkpoint being written in the background is committed; its error, if any."""
    thread, _background.thread = _background.thread, None
    if thread is not None:
        thread.join()
    error, _background.error = _background.error, None
    if error is not None:
        raise error


def record_config(run_dir: Path, text: str, state: TrainState | None) -> None:
    """Write the config a resume trains with, and commit its checksum with `state` at once, so
    that a kill before the next checkpoint leaves a run that still verifies."""
    path = run_dir / rundir.CONFIG
    try:
        current = files.read_regular(path).decode("utf-8")
    except (files.NotReadable, UnicodeDecodeError):
        current = None
    if current == text:
        return
    rundir.write_text(path, text)
    if state is not None:
        commit(run_dir / rundir.CHECKPOINTS, state)


# A config `--force` brings to a run with a checkpoint, written once the checkpoint has loaded
# into that config's model (`config_fits`): one whose model the checkpoint does not fit (another
# backbone, head or class count) leaves config.yaml as it was, and the run resumable.
_PENDING: list[tuple[Path, str, TrainState]] = []


def record_config_once_it_fits(run_dir: Path, text: str, state: TrainState) -> None:
    """`record_config` deferred until `config_fits` (the resumed checkpoint loaded)."""
    _PENDING[:] = [(run_dir, text, state)]


def config_pending() -> bool:
    """Whether a `--force` config waits for its checkpoint to load."""
    return bool(_PENDING)


def config_fits() -> None:
    """The resumed checkpoint loaded into the model: write a pending `--force` config."""
    if _PENDING:
        run_dir, text, state = _PENDING.pop()
        record_config(run_dir, text, state)


def forget_pending_config() -> None:
    _PENDING.clear()


def commit(folder: Path, state: TrainState) -> None:
    """Record the checksums, write `state.json` atomically, then drop unreferenced weights."""
    wait()
    _commit(folder, state)


def _commit(folder: Path, state: TrainState) -> None:
    state.checksums = _checksums(folder, state)
    rundir.write_text(folder / rundir.STATE, json.dumps(asdict(state), indent=2) + "\n")
    keep = {*weights_files(state), rundir.STATE}
    for pattern in ("epoch-*.weights.h5", f"{rundir.KEPT_WEIGHTS_PREFIX}*.weights.h5"):
        for path in folder.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def drop_all_but_state(folder: Path) -> None:
    """Every file in checkpoints/ but state.json removed (a finished run: the feature cache's
    saved backbone too)."""
    for path in folder.iterdir():
        if path.name != rundir.STATE and (path.is_file() or path.is_symlink()):
            path.unlink(missing_ok=True)


def _checksums(folder: Path, state: TrainState) -> dict[str, str]:
    run_dir = folder.parent
    names = [rundir.CONFIG, rundir.LABELS]
    names += [f"{folder.name}/{name}" for name in weights_files(state)]
    return {
        name: sha256(run_dir / name) for name in dict.fromkeys(names) if (run_dir / name).is_file()
    }
