"""Hostile inputs for tests: named pipes, a decompression-bomb PNG, a YAML alias bomb, runs.

Each is small on disk and cheap to make; what they stand for is not (a FIFO blocks a reader
forever, the PNG declares 400 million pixels, the YAML a billion values).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# "billion laughs": nine levels of nine aliases, 331 bytes standing for 9^9 values
ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
name: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def make_fifo(path: Path) -> Path:
    """A named pipe at `path` that nobody writes to: opening it for reading blocks forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def make_png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid grayscale PNG of `side` x `side` black pixels: ~390 KB on disk for 20000."""
    row = b"\0" * (side + 1)  # filter byte 0, then the pixels
    packer = zlib.compressobj(9)
    chunks = [packer.compress(row) for _ in range(side)]
    data = b"".join(chunks) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def save_image(path: Path, color: tuple[int, int, int] = (200, 40, 40), side: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((side, side, 3), color, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


# Started by the test process, this small program starts transferctl and reports its peak RSS.
# Measuring through it matters: Linux keeps a forked child's pre-exec high-water mark in
# ru_maxrss, so a child forked straight from a pytest worker that has imported TensorFlow
# would report the worker's ~1 GB; forked from this small process, it reports its own.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "transferctl", *sys.argv[2:]])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(
    arguments: list[str], timeout: float, cwd: Path | None = None
) -> tuple[int, str, str, float]:
    """Run `python -m transferctl ARGUMENTS`; (exit code, stdout, stderr, peak RSS in MiB).

    The peak is transferctl's own, measured by a small intermediate process (see `_MEASURE`).
    A run still going after `timeout` seconds is killed with its process group: `TimeoutError`.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as scratch,
    ):
        report = Path(scratch) / "maxrss"
        process = subprocess.Popen(
            [sys.executable, "-c", _MEASURE, str(report), *arguments],
            stdout=out,
            stderr=err,
            cwd=cwd,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise TimeoutError(
                f"transferctl {' '.join(arguments)}: still running after {timeout} s"
            ) from None
        out.seek(0)
        err.seek(0)
        peak_kib = float(report.read_text()) if report.is_file() else float("nan")
        return process.returncode, out.read().decode(), err.read().decode(), peak_kib / 1024


def write_state(run: Path, state: dict) -> None:
    (run / "checkpoints" / "state.json").write_text(json.dumps(state, indent=2) + "\n")
