"""The progress display on narrow terminals, and native lines kept off it."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

METRICS = "loss 0.8312 accuracy 0.6800 val_loss 0.7001 val_accuracy 0.7100"


def _rendered(width: int) -> list[str]:
    from transferctl.train.progress import progress_bars

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    progress = progress_bars(console)
    progress.start()
    epochs = progress.add_task("[bold]finetune[/] epochs", total=5, metrics=METRICS)
    batches = progress.add_task("  batches", total=120, metrics="loss 0.8312 accuracy 0.6800")
    progress.update(epochs, advance=2)
    progress.update(batches, advance=37)
    progress.refresh()
    progress.stop()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", out.getvalue()).replace("\r", "\n")
    lines = [line for line in plain.splitlines() if line.strip()]
    # the last frame drawn: its epoch line and its batch line
    return [
        next(line for line in reversed(lines) if name in line) for name in ("epochs", "batches")
    ]


@pytest.mark.parametrize("width", [80, 60])
def test_narrow_terminals_keep_the_bar_n_of_n_and_the_eta(width: int) -> None:
    epoch_line, batch_line = _rendered(width)
    for line, done in ((epoch_line, "2/5"), (batch_line, "37/120")):
        assert len(line.rstrip()) <= width, line
        assert "━" in line and done in line and "eta" in line, line
        assert re.search(r"\d:\d\d:\d\d", line), line  # the elapsed time
    assert epoch_line.startswith("finetune epochs")
    if width == 80:
        assert "loss 0.8312" in epoch_line  # what is left of the line shows metrics
    else:
        assert "loss" not in epoch_line  # metrics go first


def test_a_wide_terminal_shows_the_metrics_whole() -> None:
    epoch_line, _ = _rendered(160)
    assert METRICS in epoch_line


def test_tensorflow_native_lines_never_reach_a_training_runs_stderr(tmp_path: Path) -> None:
    """Native lines written to descriptor 2 during training are dropped as they come (a
    TensorFlow log line) or passed through (anything else); Python's own lines pass."""
    code = (
        "import os, sys\n"
        "from transferctl.runtime.native import native_stderr_filtered\n"
        "with native_stderr_filtered():\n"
        "    os.write(2, b'E0000 00:00:1796.1 42 grappler.cc:1] NodeDef mentions attribute\\n')\n"
        "    os.write(2, b'a native line that is not a TF log\\n')\n"
        "    print('python line', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "TRANSFERCTL_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environment
    )
    assert done.returncode == 0, done.stderr
    assert "NodeDef" not in done.stderr
    lines = done.stderr.splitlines()
    assert set(lines) == {"a native line that is not a TF log", "python line", "after"}
    assert lines[-1] == "after"
