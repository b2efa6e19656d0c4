"""`make bench`: run the benches side by side and write bench/RESULTS.md.

Every figure in RESULTS.md comes from this one invocation: the machine and its load, the exact
commands, and for each comparison the ratio measured in the same run (alternating the two
sides, median/min/max over the repeats). Timings on a shared machine are noisy: compare ratios,
not seconds across runs.

    .venv/bin/python bench/report.py [--repeats 3] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, machine  # noqa: E402

HERE = Path(__file__).resolve().parent


def run(command: list[str]) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return done.stdout, time.perf_counter() - started


def shown(command: list[str]) -> str:
    """The command as a user types it from the repository root."""
    parts = [".venv/bin/python"]
    for part in command[1:]:
        parts.append(f"bench/{Path(part).name}" if part.endswith(".py") else part)
    return " ".join(parts)


def rule_of_thumb(rows: list[dict]) -> str:
    """One line a user can apply: milliseconds per image at each size, linear in the count."""
    small = min(row["size"] for row in rows)
    count = max(rows, key=lambda row: row["images"])
    sizes = sorted({row["size"] for row in rows})
    cost = {}
    for size in sizes:
        at = [row for row in rows if row["size"] == size]
        row = max(at, key=lambda entry: entry["images"])
        cost[size] = 1000 * row["per_epoch"] / row["images"]
    per_size = ", ".join(f"{cost[size]:.1f} ms at {size} px" for size in sizes)
    return (
        f"Rule of thumb on this machine: an epoch costs about {per_size} per image, linear in "
        f"the image count ({count['images']:,} images at {small} px: "
        f"{count['per_epoch']:.0f} s/epoch); a GPU or more cores divide these."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    before = machine()
    sections = []

    versus = [PYTHON, str(HERE / "versus_plain.py"), "--repeats", str(args.repeats)]
    output, seconds = run(versus)
    found = json.loads(output.strip().splitlines()[-1])
    table = "\n".join(output.strip().splitlines()[:-1])
    rows = []
    for tool in ("plain", "transferctl"):
        for index, entry in enumerate(found["runs"][tool]):
            epochs = ", ".join(f"{value:.2f}" for value in entry["seconds"])
            rows.append(
                f"| {tool} | {index + 1} | {epochs} | {entry['later']:.2f} | "
                f"{entry['final_val_accuracy']:.4f} |"
            )
    sections.append(
        "## transferctl against the plain Keras script\n\n"
        f"    {shown(versus)}\n\n"
        "Same folder (scikit-learn digits as 1,797 JPEG/PNG files, 32 px, 10 classes), "
        "MobileNetV2 from scratch (BatchNorm training), 64 px, batch 32, 4 epochs, 80/20 split; "
        "the two alternate. Seconds per epoch: median of epochs 2-4; transferctl's from "
        "history.csv: wall time from one epoch's row to the next (training, BatchNorm statistics "
        "over a fixed sample of 256 training images, validation, TensorBoard, history, and the "
        "previous epoch's checkpoint: its copy out of the model, written and committed in the "
        "background while the epoch trains); the pass over up to 4,096 images for the saved "
        "model runs once at the phase's end, after the last epoch's row. The plain script has "
        "no statistics pass (hence its accuracy).\n\n"
        f"{table}\n\n"
        "| tool | run | seconds per epoch | median epochs 2-4 | final val accuracy |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + f"\n\n(bench took {seconds:.0f} s)\n"
    )

    against = [PYTHON, str(HERE / "machine.py"), "--images", "640", "--size", "96"]
    output, seconds = run(against)
    sections.append(
        "## Against the machine: train step alone, input pipeline alone, transferctl\n\n"
        f"    {shown(against)}\n\n"
        + "\n".join(output.strip().splitlines()[:-1])
        + f"\n\n(bench took {seconds:.0f} s)\n"
    )

    memory = [PYTHON, str(HERE / "memory.py"), "--images", "2000", "20000"]
    output, seconds = run(memory)
    sections.append(
        "## Memory: peak RSS against folder size (one epoch, MobileNetV3Small, 32 px)\n\n"
        f"    {shown(memory)}\n\n"
        + "\n".join(output.strip().splitlines()[:-1])
        + f"\n\n(bench took {seconds:.0f} s)\n"
    )

    batchnorm = [PYTHON, str(HERE / "batchnorm_statistics.py"), "--epochs", "3", "--samples"]
    batchnorm += ["64", "256", "1024"]
    output, seconds = run(batchnorm)
    sections.append(
        "## BatchNorm statistics: Keras moving averages against exact recomputation\n\n"
        f"    {shown(batchnorm)}\n\n```\n{output.strip()}\n```\n"
        "The pass before each validation measures the statistics on a fixed sample of 256 "
        "training images (the table's N=256), at twice the training batch; the pass for the "
        "saved model at the end of each phase on up to 4,096.\n"
    )

    scaling = [PYTHON, str(HERE / "scaling.py"), "--epochs", "2"]
    output, seconds = run(scaling)
    sections.append(
        "## Scaling with work\n\n"
        f"    {shown(scaling)}\n\n"
        "MobileNetV3Small from scratch, batch 32, through `transferctl finetune`; seconds per "
        "epoch from history.csv (training on 90%, validation on 10%, checkpoint), epoch 2 of 2; "
        "images/s counts the training images. 16,000 images are measured at 32 px only (at "
        "224 px one epoch would take minutes, past make bench's budget).\n\n"
        + "\n".join(output.strip().splitlines()[:-1])
        + "\n\n"
        + rule_of_thumb(json.loads(output.strip().splitlines()[-1])["rows"])
        + f"\n\n(bench took {seconds:.0f} s)\n"
    )

    after = machine()
    header = (
        "# Bench results\n\n"
        f"Written by `make bench` (bench/report.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
        f"Machine: {before['cores']} cores ({before['cpu']}), {before['memory_gib']} GiB memory, "
        f"GPU: {', '.join(before['gpus']) or 'none'}; Python {before['python']}, "
        f"TensorFlow {before['tensorflow']}, Keras {before['keras']}. Load average (1/5/15 min) "
        f"before: {before['load_average']}, after: {after['load_average']} (shared with other "
        "jobs: compare the ratios measured side by side, not seconds across runs).\n"
    )
    args.out.write_text(header + "\n" + "\n".join(sections))
    print(args.out)


if __name__ == "__main__":
    main()
