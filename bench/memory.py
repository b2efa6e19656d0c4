"""Peak memory against folder size: a folder of 20,000 images should train in about the memory
of 2,000 (file lists streamed, caches bounded, no whole-dataset arrays).

Writes folders of small digit images (32 px, JPEG and PNG), trains one epoch of MobileNetV3Small
from scratch at 32 px on each through `transferctl finetune` (no `limit`), and reports each run's
peak resident memory (the child's `ru_maxrss` from `wait4`) and the ratio to the smallest.

    .venv/bin/python bench/memory.py [--images 2000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, scratch_config, write_digits_folder  # noqa: E402


def peak_rss(command: list[str]) -> tuple[float, float, str]:
    """Run `command`; its peak RSS in MiB, its seconds, its stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{err.read()[-4000:]}")
        return usage.ru_maxrss / 1024, time.perf_counter() - started, out.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        for count in args.images:
            folder = write_digits_folder(work / f"digits-{count}", images=count)
            path = scratch_config(
                work / f"memory-{count}.yaml",
                folder,
                work / "runs",
                size=32,
                batch=64,
                epochs=1,
                name=f"memory-{count}",
            )
            command = [PYTHON, "-m", "transferctl", "finetune", str(path), "--quiet"]
            rss, seconds, _ = peak_rss(command)
            results.append({"images": count, "peak_rss_mib": rss, "seconds": seconds})
    base = results[0]["peak_rss_mib"]
    print("| images | peak RSS MiB | x smallest | seconds (whole command) |")
    print("|---|---|---|---|")
    for row in results:
        row["ratio"] = row["peak_rss_mib"] / base
        print(
            f"| {row['images']:,} | {row['peak_rss_mib']:.0f} | {row['ratio']:.3f} | "
            f"{row['seconds']:.1f} |"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
