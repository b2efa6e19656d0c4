"""RESULTS.md and its plots, from the finished runs' metrics.json (no TensorFlow).

Every number in RESULTS.md is read from a run directory; the verdicts ("helps", "does not
help", "mixed") are computed from the same numbers, seed by seed, so they follow the data.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from results import modern

if TYPE_CHECKING:
    from results.run import Run

# where a row's number comes from in metrics.json
TEST = "test"  # what the run reached on the test split
PROBE = "probe"  # the linear probe on its frozen backbone's features (`linear_probe`)
TEACHER = "teacher"  # its teacher on the same test split (`teacher`)


@dataclass(frozen=True)
class Row:
    label: str
    kind: str  # the runs' `Run.kind`
    metric: str = TEST


NEW_CLASSES = (
    Row("from scratch (no source)", "scratch"),
    Row("linear probe on the source's frozen features", "frozen", PROBE),
    Row("frozen source backbone, head trained from a random start", "frozen"),
    Row("fine-tuned: every layer, random head", "finetune"),
    Row("LP-FT: probe-started head, then every layer", "lpft"),
)
KNOWN_CLASSES = tuple(
    Row(row.label, f"known-{row.kind}", row.metric) for row in NEW_CLASSES
)  # fmt: skip
DISTILLATION = (
    Row("teacher: every training label (~500 images), from scratch", "teacher"),
    Row("student on its 25 labels alone (= from scratch)", "scratch"),
    Row("student distilled from the teacher (T = 4, alpha = 0.9)", "distilled"),
)
AUTOENCODER = (
    Row("from scratch (no pretraining)", "scratch"),
    Row("linear probe on the autoencoder's encoder", "ae-frozen", PROBE),
    Row("frozen encoder, head trained from a random start", "ae-frozen"),
    Row("LP-FT from the encoder", "ae-lpft"),
    Row("(for reference) LP-FT from the labelled source 0-4", "lpft"),
)
# model.freeze.first -> the last frozen layer of MobileNetV3Small (`transferctl backbones --layers`)
DEPTH_NAMES = {
    0: "none (every layer fine-tuned)",
    35: "#34 expanded_conv_2_add (stride 8)",
    80: "#79 expanded_conv_5_add (stride 16)",
    109: "#108 expanded_conv_7_add",
    139: "#138 expanded_conv_9_add (stride 32)",
    157: "all 157 (only the head trains)",
}


def depth_kind(depth: int) -> str:
    return "finetune" if depth == 0 else f"depth-{depth}"


class Table:
    """Per kind and metric: the value of each seed, read from the runs' metrics.json."""

    def __init__(self, runs: Sequence[Run], folders: Mapping[str, Path]) -> None:
        self.seeds = sorted({run.seed for run in runs})
        self.values: dict[tuple[str, str], dict[int, float]] = {}
        for run in runs:
            folder = folders.get(run.name)
            if folder is None:
                continue
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            found = {
                TEST: metrics.get("test", {}).get("accuracy"),
                PROBE: metrics.get("linear_probe", {}).get("test", {}).get("accuracy"),
                TEACHER: metrics.get("teacher", {}).get("test", {}).get("accuracy"),
            }
            found[modern.TTA] = modern.tta_accuracy(folder)
            for metric, value in found.items():
                if value is not None:
                    self.values.setdefault((run.kind, metric), {})[run.seed] = 100.0 * value

    def get(self, row: Row) -> dict[int, float]:
        return self.values.get((row.kind, row.metric), {})

    def has(self, rows: Sequence[Row]) -> bool:
        return any(self.get(row) for row in rows)


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def markdown_table(table: Table, rows: Sequence[Row], first: str = "method") -> list[str]:
    seeds = table.seeds
    lines = [
        f"| {first} | mean ± std | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
    ]
    for row in rows:
        values = table.get(row)
        cells = [f"{values[seed]:.1f}" if seed in values else "–" for seed in seeds]
        lines.append(f"| {row.label} | {mean_std(list(values.values()))} | {' | '.join(cells)} |")
    return lines


def verdict(table: Table, method: Row, baseline: Row) -> str:
    """`method` against `baseline`, seed by seed (the same labelled images and splits)."""
    ours, theirs = table.get(method), table.get(baseline)
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return f"{method.label} vs {baseline.label}: not measured"
    differences = [ours[seed] - theirs[seed] for seed in seeds]
    ahead = sum(difference > 0 for difference in differences)
    if ahead == len(seeds):
        word = "**helps**"
    elif ahead == 0:
        word = "**does not help**"
    else:
        word = "**mixed**"
    mean = statistics.mean(differences)
    return (
        f"{method.label} vs {baseline.label}: {word}: {mean:+.1f} points on average "
        f"({mean_std([ours[seed] for seed in seeds])} vs "
        f"{mean_std([theirs[seed] for seed in seeds])}), ahead in {ahead} of {len(seeds)} seeds"
    )


def findings(table: Table) -> list[str]:
    """One bullet per comparison, under the heading of its part; parts not measured are left out."""
    scratch, finetune, lpft = NEW_CLASSES[0], NEW_CLASSES[3], NEW_CLASSES[4]
    depths = [Row(f"{depth} layers frozen", depth_kind(depth)) for depth in DEPTH_NAMES]
    parts = [
        ("(a) new classes 5-9", [*((row, scratch) for row in NEW_CLASSES[1:]), (lpft, finetune)]),
        (
            "(a2) the source's classes 0-4",
            [
                *((row, KNOWN_CLASSES[0]) for row in KNOWN_CLASSES[1:]),
                (KNOWN_CLASSES[4], KNOWN_CLASSES[3]),
            ],
        ),
        ("(b) freeze depth, against fine-tuning every layer", [(r, depths[0]) for r in depths[1:]]),
        ("(c) distillation", [(DISTILLATION[2], DISTILLATION[1])]),
        (
            "(d) autoencoder pretraining",
            [
                *((row, AUTOENCODER[0]) for row in AUTOENCODER[1:4]),
                (AUTOENCODER[3], AUTOENCODER[4]),
            ],
        ),
    ]
    finetune_row = Row("fine-tuned", "finetune")
    modern_rows = [Row(f"+ {part}", f"recipe-{part}") for part in modern.RECIPE]
    modern_rows += [
        Row("LoRA rank 4", "lora"),
        Row("fine-tuned with --tta", "finetune", modern.TTA),
    ]
    parts.append(
        (
            "(e) the recipe and LoRA, against fine-tuning",
            [(row, finetune_row) for row in modern_rows],
        )
    )
    lines = []
    for title, pairs in parts:
        measured = [(one, other) for one, other in pairs if table.get(one) and table.get(other)]
        if measured:
            lines += ["", f"**{title}**", ""]
            lines += [f"- {verdict(table, one, other)}." for one, other in measured]
    return lines


# ----------------------------------------------------------------------------------------------
# plots: matplotlib's Agg canvas on a Figure (no pyplot state)
# ----------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def methods_plot(table: Table, path: Path) -> None:
    """Every method's test accuracy: a dot per seed, the mean as a bar with its std; one
    coloured group per part, its title in bold above it."""
    groups = [
        ("(a) new classes 5-9, from the source 0-4", NEW_CLASSES),
        ("(a2) the source's classes 0-4", KNOWN_CLASSES),
        ("(c) distillation", DISTILLATION),
        ("(d) autoencoder pretraining, 5-9", AUTOENCODER[1:4]),
    ]
    shown = [(index, title, group) for index, (title, group) in enumerate(groups)]
    shown = [(index, title, group) for index, title, group in shown if table.has(group)]
    lines: list[tuple[str, Row | None, str]] = []  # (label, row or None for a title, colour)
    for index, title, group in shown:
        lines.append((title, None, f"C{index}"))
        lines += [(row.label, row, f"C{index}") for row in group]
    figure = _figure(9.0, 0.36 * len(lines) + 1.2)
    axes = figure.add_subplot()
    count = len(lines)
    for place, (_, row, color) in enumerate(lines):
        values = list(table.get(row).values()) if row is not None else []
        if not values:
            continue
        position = count - 1 - place
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        axes.barh(position, statistics.mean(values), xerr=spread, color=color, alpha=0.35,
                  capsize=3)  # fmt: skip
        axes.plot(values, [position] * len(values), "o", color=color, markersize=4)
    axes.set_yticks(range(count), [label for label, _, _ in reversed(lines)], fontsize=8)
    for tick, (_, row, _) in zip(axes.get_yticklabels(), reversed(lines), strict=True):
        if row is None:
            tick.set_fontweight("bold")
    axes.set_xlabel("test accuracy (%): bar = mean ± std over seeds, dots = seeds")
    axes.set_xlim(0, 100)
    axes.axvline(20, color="0.5", linestyle=":", linewidth=1)
    axes.set_ylim(-1.0, count - 0.4)
    axes.text(20.5, -0.8, "chance", fontsize=7, color="0.4")
    axes.set_title("digits, 5 labelled images per class: test accuracy by method", fontsize=10)
    figure.savefig(str(path), format="png")


def depth_plot(table: Table, path: Path) -> None:
    """Test accuracy against the number of backbone layers frozen (Yosinski et al. 2014)."""
    figure = _figure(7.5, 4.2)
    axes = figure.add_subplot()
    depths, means, spreads = [], [], []
    for depth in DEPTH_NAMES:
        values = table.get(Row("", depth_kind(depth)))
        if not values:
            continue
        depths.append(depth)
        means.append(statistics.mean(values.values()))
        spreads.append(statistics.stdev(values.values()) if len(values) > 1 else 0.0)
        axes.plot([depth] * len(values), list(values.values()), "o", color="C0", alpha=0.4,
                  markersize=4)  # fmt: skip
    axes.errorbar(depths, means, yerr=spreads, color="C0", marker="s", capsize=3,
                  label="freeze {first: N}, the rest fine-tuned (mean ± std)")  # fmt: skip
    for row, color, style in (
        (NEW_CLASSES[0], "C3", "--"),
        (NEW_CLASSES[1], "C2", ":"),
        (NEW_CLASSES[4], "C1", "-."),
    ):
        values = table.get(row)
        if values:
            axes.axhline(statistics.mean(values.values()), color=color, linestyle=style,
                         label=f"{row.label} (mean)")  # fmt: skip
    axes.set_xlabel("backbone layers frozen, from the input (of 157)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_xticks(list(DEPTH_NAMES))
    axes.legend(fontsize=7, loc="best")
    axes.set_title("digits 0-4 -> 5-9, 5 labels per class: how deep to freeze", fontsize=10)
    figure.savefig(str(path), format="png")


# ----------------------------------------------------------------------------------------------
# the machine, and RESULTS.md
# ----------------------------------------------------------------------------------------------


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict[str, Any]:
    """The computer: cores, CPU model, memory, OS and Python."""
    memory = "?"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _versions(folders: Mapping[str, Path]) -> str:
    for folder in folders.values():
        try:
            env = json.loads((folder / "env.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return (
            f"TensorFlow {env.get('tensorflow')}, Keras {env.get('keras')}, "
            f"NumPy {env.get('numpy')}, transferctl {env.get('transferctl')}"
        )
    return "unknown (no finished run)"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def _invocations(invocations: Sequence[Mapping[str, Any]], planned: int) -> list[str]:
    """The invocations that trained, as a table; a load above the core count inflates times."""
    if not invocations:
        return ["No invocation recorded (the runs were trained before results/run.py logged it)."]
    lines = [
        "Every `make results` (`results/run.py`) invocation that trained, oldest first. A load "
        "average (1, 5, 15 min) above the number of cores means other work shared the machine, "
        "and the times are inflated by it.",
        "",
        f"| date | commit | wall time | CPU time | runs trained / reused / failed (of {planned}) "
        "| at a time | load before | load after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in invocations:
        loads = [
            ", ".join(f"{value:.1f}" for value in item.get(key) or ())
            for key in ("load_before", "load_after")
        ]
        lines.append(
            f"| {item.get('date')} | {item.get('commit')} | "
            f"{_minutes(float(item.get('wall_seconds', 0.0)))} | "
            f"{_minutes(float(item.get('cpu_seconds', 0.0)))} | {item.get('trained')} / "
            f"{item.get('reused')} / {item.get('failed')} | {item.get('jobs')} | "
            f"{loads[0]} | {loads[1]} |"
        )
    return lines


def write(
    out: Path,
    runs: Sequence[Run],
    folders: Mapping[str, Path],
    *,
    timings: Mapping[str, Mapping[str, float]],
    invocations: Sequence[Mapping[str, Any]],
    commands: Mapping[str, str],
) -> None:
    """RESULTS.md, methods.png and depth.png in `out`.

    Args:
        timings: per run name, `wall` and `cpu` seconds of the commands that trained it (every
            attempt, resumes included).
        invocations: every `results/run.py` invocation that trained, oldest first (`date`,
            `commit`, `wall_seconds`, `trained`, `reused`, `failed`, `jobs`, `load_before`,
            `load_after`).
    """
    table = Table(runs, folders)
    computer = machine()
    out.mkdir(parents=True, exist_ok=True)
    methods_plot(table, out / "methods.png")
    depth_plot(table, out / "depth.png")
    seeds = ", ".join(map(str, table.seeds))
    depth_rows = [Row(f"{depth}: {name}", depth_kind(depth)) for depth, name in DEPTH_NAMES.items()]
    wall_total = sum(timings.get(name, {}).get("wall", 0.0) for name in commands)
    cpu_total = sum(timings.get(name, {}).get("cpu", 0.0) for name in commands)
    lines = [
        "# Results: transfer learning on real digits, several seeds",
        "",
        f"Written by `make results` (`results/run.py`) on {now()}; every number below "
        "is read from a run directory under `results/runs/`. Do not edit by hand: rerun.",
        "",
        "**Setup.** scikit-learn's handwritten digits (real 8x8 scans, upscaled to 32x32), "
        "MobileNetV3Small (0.9M parameters). Each seed carves the same three splits in every "
        "config: test 30% (269 images of digits 5-9, 270 of 0-4), validation 20% of the rest "
        "(125/126), training the remainder; a few-label target keeps **5 labelled images per "
        "class** of its training split (`data.per_class: 5`, 25 images, drawn by seed). Numbers "
        "are **test accuracy in %**: mean ± standard deviation over seeds "
        f"{seeds} (sample std), then each seed. The seed picks the splits, the labelled images "
        "and the initialisation; every seed has its own source, teacher and autoencoder run. "
        "Chance is 20%. As in every transferctl run, the validation split (125 labelled "
        "images) picks each phase's best epoch, stops early and chooses the probe's "
        "regularisation: few labels to train on, not to select with. Every config sets "
        "`train.deterministic: true`: without it, the augmentation's random draws in a "
        "parallel map follow thread timing, and a rerun's source runs (and every number "
        "downstream of them) moved by up to 15 points per seed on one earlier rerun; with "
        "it, the same seed gives the same losses to the last digit on this machine and "
        "versions, at no measurable cost here.",
        "",
        "The source: digits 0-4 with every training label (about 500 images), MobileNetV3Small "
        "from scratch, light augmentation (`results/source.yaml`).",
        "",
        "## (a) New classes: digits 0-4 -> 5-9, 5 labels per class",
        "",
        *markdown_table(table, NEW_CLASSES),
        "",
        "Configs: `scratch.yaml`, `frozen.yaml` (the probe is its metrics.json `linear_probe`), "
        "`finetune.yaml`, `lpft.yaml`; the transfer runs start from the seed's source run "
        "(`--set model.weights.run=source-sN`). Plot: [methods.png](methods.png).",
        "",
    ]
    if table.has(KNOWN_CLASSES):
        lines += [
            "## (a2) The source's own classes: digits 0-4, 5 labels per class",
            "",
            "The same configs with `--set data.classes=[0, 1, 2, 3, 4]`: the target is the "
            "source's task, with 5 labels per class, and the source was trained on every "
            "training label of the same split (the target's 25 images among them; never a test "
            "image). It shows what transfer gives when the source's features are already the "
            "right ones (an upper bound), and whether fine-tuning keeps them.",
            "",
            *markdown_table(table, KNOWN_CLASSES),
            "",
        ]
    lines += [
        "## (b) How deep to freeze (Yosinski et al. 2014, in miniature)",
        "",
        "`finetune.yaml` with `--set model.freeze.first=N`: backbone layers 0..N-1 keep the "
        "source's weights frozen, the layers above start from the source and are fine-tuned, "
        "with a random head (one phase, Adam 1e-3, BatchNorm frozen). N = 0 is part (a)'s "
        "fine-tuning; at N = 157 only the head trains (on standardised cached features). "
        "Plot: [depth.png](depth.png).",
        "",
        *markdown_table(table, depth_rows, first="layers frozen (last frozen layer)"),
        "",
        "![test accuracy against frozen depth](depth.png)",
        "",
        "## (c) Distillation",
        "",
        "The teacher (`teacher.yaml`) learns digits 5-9 from every training label of the seed's "
        "split; the student is the few-label scratch model (25 labelled images, "
        "`distilled.yaml` = `scratch.yaml` plus `distill: {teacher: {run: teacher}, "
        "temperature: 4.0, alpha: 0.9}`), trained on the teacher's softened outputs for its "
        "25 images: the student sees no other image, the teacher only adds what it thinks of "
        "those 25.",
        "",
        *markdown_table(table, DISTILLATION),
        "",
        "## (d) Autoencoder pretraining, then few labels",
        "",
        "`transferctl pretrain results/autoencoder.yaml`: MobileNetV3Small as the encoder of a "
        "denoising autoencoder on every training image of digits 5-9 with "
        "the labels ignored (the test and validation images are carved out first, as in the "
        "target configs, so the encoder never sees them). Then the few-label target from the "
        "encoder: `frozen.yaml` and `lpft.yaml` with `--set model.weights.run=autoencoder-sN`.",
        "",
        *markdown_table(table, AUTOENCODER),
        "",
        "![test accuracy by method](methods.png)",
        "",
        *modern.section(table, runs, folders),
        "## What helps and what does not",
        "",
        "Computed from the tables, seed by seed (each comparison uses the same splits and the "
        "same labelled images): **helps** = ahead in every seed, **does not help** = ahead in "
        "none, **mixed** otherwise.",
        *findings(table),
        "",
        "## The machine and the time",
        "",
        f"{computer['cores']} cores ({computer['cpu']}), {computer['memory']} memory, no GPU; "
        f"{computer['platform']}, Python {computer['python']}; {_versions(folders)}.",
        "",
        *_invocations(invocations, len(runs)),
        "",
        f"Each run's commands (every attempt, resumes included; the table below) took "
        f"{_minutes(wall_total)} of wall time one after another and {_minutes(cpu_total)} of "
        "CPU time (user + system) in all. CPU time depends far less on the load than wall "
        f"time does: on "
        f"{computer['cores']} idle cores, running two at a time, the whole plan needs at least "
        f"about {_minutes(cpu_total / max(1, computer['cores'] or 1))} of wall time (CPU time / "
        "cores; the startup of each command is not all parallel, so somewhat more).",
        "",
        "## The commands",
        "",
        "Run from the repository root (`make results` does it all; `results/run.py --dry-run` "
        "lists these with their status). Each run's folder is `results/runs/<name>-<time>/`.",
        "",
        "| run | wall s | CPU s | command |",
        "|---|---|---|---|",
    ]
    for run in runs:
        spent = timings.get(run.name, {})
        shown = [f"{spent[key]:.0f}" if key in spent else "–" for key in ("wall", "cpu")]
        lines.append(f"| {run.name} | {shown[0]} | {shown[1]} | `{commands[run.name]}` |")
    missing = [run.name for run in runs if run.name not in folders]
    if missing:
        lines += ["", f"**Missing** (not finished): {', '.join(missing)}."]
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
