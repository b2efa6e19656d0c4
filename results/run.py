"""Results anyone can rerun: every transfer method of transferctl on real digits, several seeds.

`make results` runs this script. It trains every run of the plan below through the real CLI
(`transferctl finetune` / `transferctl pretrain`, one subprocess each, on the configs in this
folder with `--set seed=N --set name=...`), then writes `results/RESULTS.md` and its plots from
the runs' metrics.json files.

Runs go to `results/runs/` (`output.runs_dir` of every config here). A run that already finished
with the same resolved config is reused, an unfinished one is resumed (`--resume`), so a rerun
after a crash or Ctrl-C continues where it stopped; a run whose config changed since is trained
again (the newest finished run of a name is the one `{run: NAME}` finds).

Example:
    python results/run.py --dry-run          # the planned runs and their status; trains nothing
    python results/run.py                    # train what is missing, then write RESULTS.md
    python results/run.py --report-only      # only RESULTS.md and the plots, from finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `results` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import modern, report  # noqa: E402

RESULTS = Path(__file__).resolve().parent
REPO = RESULTS.parent
RUNS_DIR = Path("results/runs")  # every config's output.runs_dir, relative to the repository
SEEDS = (1, 2, 3)
DEPTHS = tuple(report.DEPTH_NAMES)  # model.freeze.first of the depth sweep
KNOWN_CLASSES = "[0, 1, 2, 3, 4]"  # the source's own classes, for the few-label target of part a2
TIMINGS = "timings.json"  # per run: wall and CPU seconds of the commands that trained it
INVOCATIONS = "invocations.json"  # per invocation that trained: wall time, load, commit


@dataclass(frozen=True)
class Run:
    """One `transferctl` command of the plan, named uniquely (`<kind>-s<seed>`)."""

    name: str
    kind: str  # the method, e.g. "lpft"; the tables group runs by it
    seed: int
    config: str  # relative to the repository
    sets: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # names of runs that must finish first
    verb: str = "finetune"

    def arguments(self, runs_dir: Path | None = None) -> list[str]:
        """The command line after `transferctl`; `runs_dir` overrides every config's."""
        sets = [f"seed={self.seed}", f"name={self.name}", *self.sets]
        if runs_dir is not None:
            sets.append(f"output.runs_dir={runs_dir}")
        return [self.verb, self.config, *(part for item in sets for part in ("--set", item))]

    def command(self, runs_dir: Path | None = None) -> str:
        return shlex.join(["transferctl", *self.arguments(runs_dir)])


def plan(seeds: Sequence[int] = SEEDS, known: bool = True) -> list[Run]:
    """Every run, the ones others start from first (the scheduler takes them in this order)."""
    runs: list[Run] = []
    for seed in seeds:
        runs += [
            Run(f"source-s{seed}", "source", seed, "results/source.yaml"),
            Run(f"teacher-s{seed}", "teacher", seed, "results/teacher.yaml"),
            Run(f"autoencoder-s{seed}", "autoencoder", seed, "results/autoencoder.yaml",
                verb="pretrain"),
        ]  # fmt: skip
    for seed in seeds:
        source = f"source-s{seed}"
        from_source = (f"model.weights.run={source}",)
        runs += [
            Run(f"scratch-s{seed}", "scratch", seed, "results/scratch.yaml"),
            Run(f"frozen-s{seed}", "frozen", seed, "results/frozen.yaml", from_source, (source,)),
            Run(f"lpft-s{seed}", "lpft", seed, "results/lpft.yaml", from_source, (source,)),
        ]
        for depth in DEPTHS:  # depth 0 is plain fine-tuning: part a's `finetune`
            kind = "finetune" if depth == 0 else f"depth-{depth}"
            runs.append(
                Run(f"{kind}-s{seed}", kind, seed, "results/finetune.yaml",
                    (*from_source, f"model.freeze.first={depth}"), (source,))
            )  # fmt: skip
        teacher, encoder = f"teacher-s{seed}", f"autoencoder-s{seed}"
        from_encoder = (f"model.weights.run={encoder}",)
        runs += [
            Run(f"distilled-s{seed}", "distilled", seed, "results/distilled.yaml",
                (f"distill.teacher.run={teacher}",), (teacher,)),
            Run(f"ae-frozen-s{seed}", "ae-frozen", seed, "results/frozen.yaml", from_encoder,
                (encoder,)),
            Run(f"ae-lpft-s{seed}", "ae-lpft", seed, "results/lpft.yaml", from_encoder,
                (encoder,)),
        ]  # fmt: skip
        runs += [
            Run(f"recipe-{part}-s{seed}", f"recipe-{part}", seed, "results/finetune.yaml",
                (*from_source, *sets), (source,))
            for part, sets in modern.RECIPE.items()
        ]  # fmt: skip
        runs.append(
            Run(f"lora-s{seed}", "lora", seed, "results/finetune.yaml",
                (*from_source, *modern.LORA), (source,))
        )  # fmt: skip
        if known:
            classes = f"data.classes={KNOWN_CLASSES}"
            runs += [
                Run(f"known-{kind}-s{seed}", f"known-{kind}", seed, f"results/{kind}.yaml",
                    (classes, *(from_source if kind != "scratch" else ())),
                    (source,) if kind != "scratch" else ())
                for kind in ("scratch", "frozen", "finetune", "lpft")
            ]  # fmt: skip
    return runs


# ----------------------------------------------------------------------------------------------
# the state of a run on disk: finished with the same config (reuse), unfinished (resume), or none
# ----------------------------------------------------------------------------------------------


@dataclass
class Status:
    state: str  # "finished", "unfinished", "stale" (finished, config changed), "new", "waiting"
    folder: Path | None = None


def status(run: Run, runs_dir: Path, override: Path | None) -> Status:
    """Compare the run's folders of that name with the config the command would resolve."""
    from transferctl.config.loader import dump_config, load_config
    from transferctl.errors import UserError
    from transferctl.rundir import lookup as found_runs

    folders = sorted(
        (folder for folder in runs_dir.glob(f"{run.name}-*") if folder.is_dir()),
        key=lambda folder: folder.name,
    )
    folders = [folder for folder in folders if found_runs.run_name(folder) == run.name]
    try:
        wanted = dump_config(load_config(REPO / run.config, run.arguments(override)[3::2]))
    except UserError:
        if not run.needs:
            raise
        return Status("waiting")  # a run it starts from is not there yet
    state = "new"
    for folder in reversed(folders):  # newest first
        try:
            saved = (folder / "config.yaml").read_text(encoding="utf-8")
        except OSError:
            continue
        if saved != wanted:
            state = "stale"
            continue
        if found_runs.is_finished(folder):
            return Status("finished", folder)
        return Status("unfinished", folder)
    return Status(state)


# ----------------------------------------------------------------------------------------------
# running the plan: at most `jobs` commands at a time, each after the runs it starts from
# ----------------------------------------------------------------------------------------------


@dataclass
class Progress:
    started: float = field(default_factory=time.monotonic)
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # of the commands it ran

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        print(f"[{minutes:02d}:{seconds:02d}] {text}", flush=True)


def execute(runs: list[Run], runs_dir: Path, override: Path | None, jobs: int) -> Progress:
    """Train every run that is not finished; returns what was trained, reused and failed."""
    progress = Progress()
    logs = runs_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    timings = _read_timings(runs_dir)
    cpu_before = _children_cpu()
    done: set[str] = set()
    pending = list(runs)
    active: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    try:
        while pending or active:
            for run in [run for run in pending if set(run.needs) <= done]:
                if len(active) >= jobs:
                    break
                if any(need in progress.failed for need in run.needs):
                    pending.remove(run)
                    progress.failed.append(run.name)
                    progress.say(f"skipped {run.name}: a run it starts from failed")
                    continue
                found = status(run, runs_dir, override)
                pending.remove(run)
                if found.state == "finished":
                    done.add(run.name)
                    progress.reused.append(run.name)
                    continue
                arguments = run.arguments(override)
                if found.state == "unfinished" and found.folder is not None:
                    arguments = [run.verb, "--resume", str(found.folder)]
                    progress.say(f"resuming {run.name} ({found.folder.name})")
                else:
                    progress.say(f"training {run.name}: {run.command(override)}")
                with (logs / f"{run.name}.log").open("ab") as log:
                    child = subprocess.Popen(
                        [sys.executable, "-m", "transferctl", *arguments, "--quiet"],
                        cwd=REPO,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                active[run.name] = (child, time.monotonic())
            for name, (child, began) in list(active.items()):
                if child.poll() is None:
                    continue
                del active[name]
                seconds = time.monotonic() - began
                # poll() reaped it: the children's CPU time grew by exactly this child's
                cpu_now = _children_cpu()
                cpu, cpu_before = cpu_now - cpu_before, cpu_now
                progress.cpu_seconds += cpu
                spent = timings.setdefault(name, {"wall": 0.0, "cpu": 0.0})
                spent["wall"] += seconds  # every attempt counts, a failed one too
                spent["cpu"] += cpu
                _write_timings(runs_dir, timings)
                if child.returncode == 0:
                    done.add(name)
                    progress.trained.append(name)
                    progress.say(f"finished {name} in {seconds:.0f} s ({cpu:.0f} s of CPU)")
                else:
                    progress.failed.append(name)
                    progress.say(
                        f"FAILED {name} (exit {child.returncode}); see {logs / f'{name}.log'}"
                    )
            time.sleep(0.5)
    except KeyboardInterrupt:
        for child, _ in active.values():
            child.wait()  # the children got the Ctrl-C too: they save and exit 130
        raise
    return progress


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read_timings(runs_dir: Path) -> dict[str, dict[str, float]]:
    """Per run name: `wall` and `cpu` seconds of every command that trained it."""
    found = _read_json(runs_dir / TIMINGS, {})
    return {
        name: dict(spent) if isinstance(spent, dict) else {"wall": float(spent), "cpu": 0.0}
        for name, spent in found.items()
    }


def _write_timings(runs_dir: Path, timings: dict[str, dict[str, float]]) -> None:
    _write_json(runs_dir / TIMINGS, timings)


def _record(runs_dir: Path, invocation: dict[str, object]) -> None:
    _write_json(runs_dir / INVOCATIONS, [*_read_json(runs_dir / INVOCATIONS, []), invocation])


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


def _commit() -> str:
    """The checkout's commit, and whether tracked files of transferctl or results/ differ."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "transferctl",
                "results",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not commit:
        return "unknown (not a git checkout)"
    return f"{commit} with uncommitted changes" if changed else commit


def finished_runs(runs: list[Run], runs_dir: Path, override: Path | None) -> dict[str, Path]:
    """The run folder of every planned run that finished with its current config."""
    folders = {}
    for run in runs:
        found = status(run, runs_dir, override)
        if found.state == "finished" and found.folder is not None:
            folders[run.name] = found.folder
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list the runs; train nothing")
    parser.add_argument("--report-only", action="store_true", help="only write RESULTS.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument(
        "--no-known", action="store_true", help="leave out part a2 (the source's own classes)"
    )
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="instead of results/runs (sets output.runs_dir)"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where RESULTS.md and the plots go"
    )
    args = parser.parse_args(argv)
    runs = plan(args.seeds, known=not args.no_known)
    runs_dir = REPO / (args.runs_dir or RUNS_DIR)
    override = args.runs_dir.resolve() if args.runs_dir is not None else None
    if args.dry_run:
        for run in runs:
            found = status(run, runs_dir, override)
            print(f"{found.state:10} {run.name:18} {run.command(override)}")
        print(f"{len(runs)} runs; seeds {' '.join(map(str, args.seeds))}; runs in {runs_dir}")
        return 0
    invocation: dict[str, object] = {
        "date": report.now(),
        "commit": _commit(),
        "jobs": args.jobs,
        "load_before": os.getloadavg(),
    }
    started = time.monotonic()
    progress = Progress()
    if not args.report_only:
        progress = execute(runs, runs_dir, override, max(1, args.jobs))
        invocation.update(
            wall_seconds=time.monotonic() - started,
            load_after=os.getloadavg(),
            trained=len(progress.trained),
            reused=len(progress.reused),
            failed=len(progress.failed),
            cpu_seconds=progress.cpu_seconds,
        )
        _record(runs_dir, invocation)
    folders = finished_runs(runs, runs_dir, override)
    if not args.report_only:
        modern.evaluate_with_tta(runs, folders)
    report.write(
        args.out,
        runs,
        folders,
        timings=_read_timings(runs_dir),
        invocations=_read_json(runs_dir / INVOCATIONS, []),
        commands={run.name: run.command(override) for run in runs},
    )
    missing = [run.name for run in runs if run.name not in folders]
    print(f"wrote {args.out / 'RESULTS.md'} ({len(folders)} of {len(runs)} runs)")
    if missing:
        print(f"missing: {' '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
