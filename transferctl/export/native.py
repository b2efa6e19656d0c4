"""Converters' native chatter (TFLite's MLIR passes, tf2onnx's C++ logs) kept off the terminal.

The TFLite converter and the LiteRT interpreter print from C++ straight to file descriptors 1
and 2 ("fully_quantize: 0, inference_type: 6, ..."), which Python cannot filter. The output is
captured while they run, dropped when they succeed and replayed on stderr when they fail, so a
real error keeps its explanation. `--debug` lets everything through.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

from transferctl.errors import debug_enabled


@contextlib.contextmanager
def captured_native_output() -> Iterator[None]:
    if debug_enabled():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {descriptor: os.dup(descriptor) for descriptor in (1, 2)}
    with tempfile.TemporaryFile() as capture:
        for descriptor in saved:
            os.dup2(capture.fileno(), descriptor)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for descriptor, original in saved.items():
                os.dup2(original, descriptor)
                os.close(original)
            if failed:
                capture.seek(0)
                text = capture.read().decode("utf-8", "replace").strip()
                if text:
                    print(text, file=sys.stderr)
