"""Hostile inputs for tests: named pipes, a decompression-bomb PNG, a YAML alias bomb, runs.

Each is small on disk and cheap to make; what they stand for is not (a FIFO blocks a reader
forever, the PNG declares 400 million pixels, the YAML a billion values).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
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


def run_measured(
    arguments: list[str], timeout: float, cwd: Path | None = None
) -> tuple[int, str, str, float]:
    """Run `python -m transferctl ARGUMENTS`; (exit code, stdout, stderr, peak RSS in MiB).

    The peak is this child's own (`os.wait4`), not the largest of every child the tests
    started. A child still running after `timeout` seconds is killed: `TimeoutError`.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "transferctl", *arguments],
            stdout=out,
            stderr=err,
            cwd=cwd,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                os.wait4(process.pid, 0)
                raise TimeoutError(
                    f"transferctl {' '.join(arguments)}: still running after {timeout} s"
                )
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return process.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss / 1024


def write_state(run: Path, state: dict) -> None:
    (run / "checkpoints" / "state.json").write_text(json.dumps(state, indent=2) + "\n")
