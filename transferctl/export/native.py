"""Converters' native chatter (TFLite's MLIR passes, tf2onnx's C++ logs) kept off the terminal.

The TFLite converter and the LiteRT interpreter print from C++ straight to file descriptors 1
and 2 ("fully_quantize: 0, inference_type: 6, ..."), which Python cannot filter. The output is
captured while they run, dropped when they succeed and replayed on stderr when they fail, so a
real error keeps its explanation. `--debug` lets everything through.
"""

from __future__ import annotations

import contextlib

from transferctl.runtime.native import STDERR, STDOUT, native_output


def captured_native_output() -> contextlib.AbstractContextManager[None]:
    """Both output descriptors captured while a converter runs; replayed only if it fails."""
    return native_output(streams=(STDOUT, STDERR), replay="on failure")
