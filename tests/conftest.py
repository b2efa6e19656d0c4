"""Shared fixtures: generated image folders and tiny real runs, all through the real CLI."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from transferctl.cli import app

# Two xdist workers share two cores: each TensorFlow (this process's, and those of the
# subprocesses the tests start, which inherit the environment) gets one thread for its ops
# instead of one per core, so the workers do not oversubscribe the CPU. Set before TensorFlow
# is imported; a value the caller set wins.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Ctrl-C is what several tests check (exit 130 and the resume command). A shell that starts the
# suite in the background without job control (`make test &` in a script, nohup) ignores SIGINT,
# and an ignored SIGINT is inherited: Python then never raises KeyboardInterrupt on a real
# SIGINT. Restore Python's own handler; the processes the tests start get the default
# disposition back when they exec.
signal.signal(signal.SIGINT, signal.default_int_handler)

COLORS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def interrupt_after_commit(patch: pytest.MonkeyPatch, when: Callable[[Any], bool]) -> None:
    """Ctrl-C right after a checkpoint commit whose state satisfies `when`, as a user's Ctrl-C
    would arrive then. Epoch checkpoints commit in a background thread; the KeyboardInterrupt is
    raised in the main thread once that commit is done, before training goes on: a Ctrl-C sent
    from the committing thread landed, on a loaded machine, after the next epoch had committed."""
    from transferctl.train import checkpoint

    commit_state, commit, save = checkpoint._commit, checkpoint.commit, checkpoint.save
    due = threading.Event()

    def commit_then_mark(folder: Path, state: Any) -> None:
        commit_state(folder, state)
        if when(state):
            due.set()

    def interrupt_if_due() -> None:
        checkpoint.wait()
        if due.is_set():
            due.clear()
            raise KeyboardInterrupt

    def commit_then_interrupt(*args: Any, **kwargs: Any) -> None:
        commit(*args, **kwargs)
        interrupt_if_due()

    def save_then_interrupt(*args: Any, **kwargs: Any) -> None:
        save(*args, **kwargs)
        interrupt_if_due()

    patch.setattr(checkpoint, "_commit", commit_then_mark)
    patch.setattr(checkpoint, "commit", commit_then_interrupt)
    patch.setattr(checkpoint, "save", save_then_interrupt)


def make_image_folder(
    root: Path,
    classes: Sequence[str] = ("red", "green", "blue"),
    per_class: int = 24,
    seed: int = 0,
    formats: Sequence[str] = ("png", "jpg"),
) -> Path:
    """Class sub-folders of small noisy images whose colour tells the class; sizes vary."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array(COLORS.get(name, rng.integers(0, 255, 3)), dtype=np.float32)
        for item in range(per_class):
            height, width = rng.integers(24, 48, size=2)
            noise = rng.normal(0, 30, size=(height, width, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            extension = formats[(index + item) % len(formats)]
            Image.fromarray(pixels).save(folder / f"{name}_{item:03d}.{extension}")
    return root


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_config(
    data_path: Path | None = None, *, backbone: str = "mobilenet", **sections: dict
) -> dict:
    """A config that trains in seconds: MobileNet (v1) from scratch at 32x32.

    MobileNet, not MobileNetV3Small: with 86 layers of plain ops to V3Small's 157 (hard-swish,
    squeeze-excite), tracing a training step, which is most of a tiny run, costs about a third
    less (a 3-epoch digits run: 22.6 s against 31.3 s on one core). Tests whose numbers come
    from V3Small's structure pass `backbone="mobilenet_v3_small"`."""
    config: dict = {
        "seed": 7,
        "data": {"image_size": [32, 32], "batch_size": 16, "augment": {"flip": "none"}},
        "model": {
            "backbone": backbone,
            "weights": "none",
            "freeze": "none",
            "head": {"hidden": [], "dropout": 0.0},
        },
        "train": {
            "phases": [
                {"name": "head", "epochs": 1, "learning_rate": 2.0e-3},
                {
                    "name": "finetune",
                    "epochs": 1,
                    "learning_rate": 5.0e-4,
                    "freeze": {"last_trainable": 30},
                },
            ]
        },
    }
    if data_path is not None:
        config["data"].update({"source": "folder", "path": str(data_path)})
    else:
        config["data"].update({"source": "digits", "limit": 300})
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


@pytest.fixture(scope="session", autouse=True)
def _session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Session fixtures (tiny_run...) never write the user's cache: a session tmp dir."""
    folder = tmp_path_factory.mktemp("transferctl_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFERCTL_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def _test_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own cache dir, in os.environ so subprocesses inherit it."""
    folder = tmp_path / "transferctl_cache"
    monkeypatch.setenv("TRANSFERCTL_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli(runner: CliRunner) -> Callable[..., object]:
    """Invoke transferctl with arguments; returns click's Result."""

    def invoke(*args: str) -> object:
        return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)

    return invoke


def _shared_root(factory: pytest.TempPathFactory) -> Path:
    """The folder every xdist worker of this test session sees: the parent of the workers' own
    base folders (popen-gw0, popen-gw1), or the base folder itself without xdist."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(factory: pytest.TempPathFactory, key: str, make: Callable[[Path], Path]) -> Path:
    """What `make(folder)` returns, made once per test session into a folder every xdist worker
    sees: the first worker to ask makes it while holding a file lock, the others wait on the
    lock and reuse it (a trained run costs its training once, not once per worker). What
    `make` returns must be inside `folder`; a failed attempt is made again by the next asker."""
    root = _shared_root(factory)
    folder, done = root / key, root / f"{key}.made"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if done.is_file():
            return Path(done.read_text(encoding="utf-8"))
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        made = make(folder)
        done.write_text(str(made), encoding="utf-8")
        return made


def worker_copy(factory: pytest.TempPathFactory, key: str, run: Path) -> Path:
    """A copy of the shared `run` for this worker alone, at the same place under the worker's
    own folder: tests write into their session run (eval/, export/), and a copy keeps two
    workers from writing into one folder at once."""
    shared = _shared_root(factory) / key
    if factory.getbasetemp() == shared.parent:  # no xdist: the run is this session's alone
        return run
    mine = factory.mktemp(key, numbered=False)
    shutil.copytree(shared, mine, dirs_exist_ok=True)
    return mine / run.relative_to(shared)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour folder (3 classes of 24 images), made once per session for every worker;
    tests read it, never change it."""
    return made_once(tmp_path_factory, "images", lambda root: make_image_folder(root / "colors"))


TINY_RUN_BACKBONE = "mobilenet_v3_small"


def _train_tiny_run(work: Path, image_folder: Path) -> Path:
    # MobileNetV3Small: the exports' parity gates and predict's answers need a model whose
    # classes are clearly apart after two short epochs, which V3Small reaches and MobileNet
    # does not (its dynamic-range TFLite file then agreed on 94% of top-1)
    config = tiny_config(
        image_folder,
        backbone=TINY_RUN_BACKBONE,
        data={"validation_split": 0.25, "test_split": 0.15},
        output={"runs_dir": str(work / "runs")},
    )
    config_path = write_config(work / "colors.yaml", config)
    result = CliRunner().invoke(app, ["finetune", str(config_path), "--quiet"])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> Path:
    """A finished run on the colour folder (3 classes), trained once per test session (whichever
    xdist worker needs it first), then copied for each worker."""
    run = made_once(tmp_path_factory, "tiny_run", lambda work: _train_tiny_run(work, image_folder))
    return worker_copy(tmp_path_factory, "tiny_run", run)


# The files that take longest (`pytest --durations=0`, summed per file), longest first.
LONGEST_FILES = (
    "test_reliability.py",
    "test_portable.py",
    "test_multi_worker.py",
    "test_feature_cache.py",
    "test_tracking.py",
    "test_export.py",
    "test_tune.py",
    "test_kept.py",
    "test_weights_file.py",
    "test_distribution.py",
    "test_hostile.py",
    "test_distill.py",
    "test_hub.py",
    "test_report.py",
    "test_recipe.py",
    "test_lora.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, in LONGEST_FILES's order, then the others as collected:
    `--dist loadfile` hands whole files to the workers in this order (with
    `--no-loadscope-reorder`), so the last ones handed out, which decide when the suite ends,
    are short."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
