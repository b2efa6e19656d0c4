"""The demo's table, from runs: the three demo configs for each of its seeds, through the CLI.

`make demo-table` runs this script. For each seed it trains `configs/demo/source.yaml`, then
`target.yaml` from that source and `scratch.yaml` (each `--set seed=N`, named per seed, into
`results/demo-runs/`), and writes the table of their test accuracy between the
`<!-- demo-table -->` markers of README.md and docs/results.md, so the numbers the docs show are
always those of the configs as they are. A finished run of the same name is reused (delete
`results/demo-runs/` after changing a config or the code).

Example:
    python results/demo.py                  # train what is missing, then write the table
    python results/demo.py --report-only    # only the table, from finished runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = Path("results/demo-runs")
SEEDS = (42, 1, 2)  # 42: the configs' own
START, END = "<!-- demo-table -->", "<!-- /demo-table -->"
PAGES = (REPO / "README.md", REPO / "docs" / "results.md")


def transferctl() -> list[str]:
    return [sys.executable, "-m", "transferctl"]


def train(config: str, name: str, seed: int, *sets: str) -> Path:
    """The finished run `name` (trained now unless a finished one exists): its directory."""
    found = sorted((REPO / RUNS).glob(f"{name}-*"))
    finished = [run for run in found if (run / "metrics.json").is_file()]
    if finished:
        return finished[-1]
    command = [*transferctl(), "finetune", config, "--quiet", "--set", f"seed={seed}"]
    command += ["--set", f"name={name}", "--set", f"output.runs_dir={RUNS}"]
    for setting in sets:
        command += ["--set", setting]
    print("$", " ".join(command[2:]), flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    return REPO / done.stdout.strip().splitlines()[-1]


def seed_row(seed: int, report_only: bool) -> dict[str, float]:
    """Test accuracy (%) of the target, its linear probe and the scratch run for one seed."""
    names = {kind: f"demo-{kind}-s{seed}" for kind in ("source", "target", "scratch")}
    if report_only:
        runs = {kind: sorted((REPO / RUNS).glob(f"{name}-*"))[-1] for kind, name in names.items()}
    else:
        runs = {"source": train("configs/demo/source.yaml", names["source"], seed)}
        runs["target"] = train(
            "configs/demo/target.yaml",
            names["target"],
            seed,
            f"model.weights.run={names['source']}",
        )
        runs["scratch"] = train("configs/demo/scratch.yaml", names["scratch"], seed)
    target = json.loads((runs["target"] / "metrics.json").read_text())
    scratch = json.loads((runs["scratch"] / "metrics.json").read_text())
    return {
        "target": 100 * target["test"]["accuracy"],
        "probe": 100 * target["linear_probe"]["test"]["accuracy"],
        "scratch": 100 * scratch["test"]["accuracy"],
    }


def table(rows: dict[int, dict[str, float]]) -> str:
    lines = [
        "| seed | target (transfer, LP-FT) | linear probe on the source's features | scratch |",
        "|---|---|---|---|",
    ]
    for seed, row in rows.items():
        label = f"{seed} (the default)" if seed == SEEDS[0] else str(seed)
        lines.append(
            f"| {label} | {row['target']:.1f}% | {row['probe']:.1f}% | {row['scratch']:.1f}% |"
        )
    cells = []
    for key in ("target", "probe", "scratch"):
        values = [row[key] for row in rows.values()]
        cells.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}%")
    lines.append(f"| mean ± std | {' | '.join(cells)} |")
    gains = ", ".join(f"{row['target'] - row['scratch']:+.1f}" for row in rows.values())
    probe = ", ".join(f"{row['probe'] - row['scratch']:+.1f}" for row in rows.values())
    today = dt.datetime.now(dt.UTC).date().isoformat()
    lines.append("")
    lines.append(
        f"Target minus scratch, per seed: {gains} points; the probe minus scratch: {probe}. "
        f"Written by `make demo-table` (results/demo.py) on {today}."
    )
    return "\n".join(lines)


def write(text: str) -> None:
    for page in PAGES:
        content = page.read_text(encoding="utf-8")
        if START not in content or END not in content:
            sys.exit(f"{page}: no {START} ... {END} markers to write the table between")
        before, rest = content.split(START, 1)
        _, after = rest.split(END, 1)
        page.write_text(f"{before}{START}\n{text}\n{END}{after}", encoding="utf-8")
        print(f"wrote the table into {page.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="only the table, from runs")
    arguments = parser.parse_args()
    rows = {seed: seed_row(seed, arguments.report_only) for seed in SEEDS}
    text = table(rows)
    print(text)
    write(text)


if __name__ == "__main__":
    main()
