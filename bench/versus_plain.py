"""transferctl against the plain Keras script, side by side on the same folder of digit images.

Both train MobileNetV2 from scratch (BatchNorm training) at the same size, batch and epochs on
the same folder (JPEG and PNG files), 80/20 train/validation: `bench/plain_keras.py`, then
`transferctl finetune`, alternating, `--repeats` times. Seconds per epoch: the median of epochs
2..N of each run (the first carries tracing); transferctl's from history.csv's `seconds`, which
counts everything an epoch costs (training, BatchNorm statistics, validation, TensorBoard,
history, and the previous epoch's checkpoint). Accuracy: validation accuracy at the end
(transferctl: metrics.json, the model it saves; the plain script: its last epoch). Prints a
Markdown table and one JSON line.

    .venv/bin/python bench/versus_plain.py [--repeats 2] [--size 64] [--epochs 4]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, machine, run_json, spread, write_digits_folder  # noqa: E402


def transferctl_config(folder: Path, work: Path, args: argparse.Namespace) -> Path:
    config = {
        "name": "versus-plain",
        "seed": 42,
        "data": {
            "source": "folder",
            "path": str(folder),
            "image_size": [args.size, args.size],
            "batch_size": args.batch,
            "validation_split": 0.2,
            "test_split": 0.0,
            "augment": {"flip": "none"},
        },
        "model": {
            "backbone": "mobilenet_v2",
            "weights": "none",
            "freeze": "none",
            "train_batchnorm": True,
            "head": {"hidden": [], "dropout": 0.2, "init": "random"},
        },
        "train": {"phases": [{"name": "scratch", "epochs": args.epochs, "learning_rate": 1.0e-3}]},
        "output": {"runs_dir": str(work / "runs")},
    }
    path = work / "versus-plain.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_transferctl(config: Path) -> dict:
    command = [PYTHON, "-m", "transferctl", "finetune", str(config), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"transferctl failed:\n{done.stderr[-4000:]}")
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "seconds": [float(row["seconds"]) for row in rows],
        "val_accuracy": [float(row["val_accuracy"]) for row in rows],
        "final_val_accuracy": metrics["val"]["accuracy"],
    }


def run_plain(folder: Path, args: argparse.Namespace) -> dict:
    script = str(Path(__file__).resolve().parent / "plain_keras.py")
    found = run_json(
        [PYTHON, script, str(folder), "--size", str(args.size), "--batch", str(args.batch)]
        + ["--epochs", str(args.epochs)]
    )
    found["final_val_accuracy"] = found["val_accuracy"][-1]
    return found


def later(seconds: list[float]) -> float:
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"plain": [], "transferctl": []}
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        folder = write_digits_folder(work / "digits")
        config = transferctl_config(folder, work, args)
        for repeat in range(args.repeats):
            order = ("plain", "transferctl") if repeat % 2 == 0 else ("transferctl", "plain")
            for tool in order:
                found = run_plain(folder, args) if tool == "plain" else run_transferctl(config)
                found["later"] = later(found["seconds"])
                runs[tool].append(found)
                print(f"repeat {repeat + 1} {tool}: {json.dumps(found)}", file=sys.stderr)
    ratios = [
        t["later"] / p["later"] for t, p in zip(runs["transferctl"], runs["plain"], strict=True)
    ]
    # every later epoch of every run, pooled: less at the mercy of one noisy run
    pooled = {tool: [s for run in done for s in run["seconds"][1:]] for tool, done in runs.items()}
    summary = {
        "machine": machine(),
        "settings": vars(args),
        "plain": {
            "seconds_per_epoch": spread([run["later"] for run in runs["plain"]]),
            "val_accuracy": spread([run["final_val_accuracy"] for run in runs["plain"]]),
        },
        "transferctl": {
            "seconds_per_epoch": spread([run["later"] for run in runs["transferctl"]]),
            "val_accuracy": spread([run["final_val_accuracy"] for run in runs["transferctl"]]),
        },
        "ratio": spread(ratios),
        "pooled": {
            "epochs": len(pooled["plain"]),
            "median_ratio": statistics.median(pooled["transferctl"])
            / statistics.median(pooled["plain"]),
            "fastest_ratio": min(pooled["transferctl"]) / min(pooled["plain"]),
        },
        "runs": runs,
    }
    print(
        f"MobileNetV2 from scratch, {args.size}x{args.size}, batch {args.batch}, "
        f"{args.epochs} epochs, digits folder (1,797 files), {args.repeats} run(s) each"
    )
    print("| | s/epoch, median of epochs 2-N: median (min-max) | val accuracy median (min-max) |")
    print("|---|---|---|")
    for tool in ("plain", "transferctl"):
        s, a = summary[tool]["seconds_per_epoch"], summary[tool]["val_accuracy"]
        print(
            f"| {tool} | {s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f}) | "
            f"{a['median']:.4f} ({a['min']:.4f}-{a['max']:.4f}) |"
        )
    r = summary["ratio"]
    print(f"ratio transferctl/plain: {r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})")
    p = summary["pooled"]
    print(
        f"all {p['epochs']} later epochs of each tool pooled: ratio of the medians "
        f"{p['median_ratio']:.3f}, of the fastest epochs {p['fastest_ratio']:.3f}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
