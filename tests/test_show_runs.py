"""`transferctl show RUN_DIR` and `transferctl runs [RUNS_DIR]`: any run, later, as text or JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def test_show_says_what_the_run_trained_kept_and_holds(tiny_run: Path, cli: Any) -> None:
    result = cli("show", tiny_run)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{tiny_run} (finetune, finished)" in out.replace("\n", "")
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    kept = metrics["kept"]
    assert f"epoch {kept['epoch']} of phase {kept['phase']}" in out
    assert f"accuracy {metrics['val']['accuracy']:.4f}" in out
    assert "head: 1 epochs at 0.002, freeze none" in out
    assert "model.keras" in out and "checkpoints/" in out

    body = json.loads(cli("show", tiny_run, "--json").stdout)
    assert body["kind"] == "finetune" and body["status"] == "finished"
    assert body["kept"] == kept and body["files"]["model.keras"] > 0


def test_runs_lists_every_run_and_a_damaged_one_without_failing(
    tiny_run: Path, cli: Any, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(tiny_run, runs / tiny_run.name)
    unfinished = runs / "other-20260101-120000"
    shutil.copytree(tiny_run, unfinished)
    (unfinished / "metrics.json").unlink()
    state = json.loads((unfinished / "checkpoints" / "state.json").read_text())
    (unfinished / "checkpoints" / "state.json").write_text(json.dumps({**state, "finished": False}))
    damaged = runs / "broken-20260102-120000"
    damaged.mkdir()
    (damaged / "config.yaml").write_text("[not: a mapping")
    (runs / "notes.txt").write_text("not a run")

    result = cli("runs", runs)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("3 runs in ")
    assert any("other-20260101-120000" in line and "unfinished" in line for line in lines)
    assert any("broken-20260102" in line and "damaged" in line for line in lines)

    listed = json.loads(cli("runs", runs, "--json").stdout)
    assert [row["status"] for row in listed] == ["unfinished", "damaged", "finished"]
    assert listed[0]["started"] == "2026-01-01 12:00:00"
    assert "damaged config" in listed[1]["problem"]
    assert listed[2]["name"] == "colors" and listed[2]["kind"] == "finetune"
    assert listed[2]["val"]["accuracy"] > 0


def test_show_and_runs_refuse_what_is_not_there_in_one_line(cli: Any, tmp_path: Path) -> None:
    shown = cli("show", tmp_path)
    assert shown.exit_code == 2 and shown.stderr.startswith(f"error: {tmp_path}: not a ")
    listed = cli("runs", tmp_path / "nowhere")
    assert listed.exit_code == 2 and "does not exist" in listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1


def test_show_and_runs_never_import_tensorflow(tiny_run: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from transferctl.cli import app\n"
        f"assert CliRunner().invoke(app, ['show', {str(tiny_run)!r}]).exit_code == 0\n"
        f"assert CliRunner().invoke(app, ['runs', {str(tiny_run.parent)!r}]).exit_code == 0\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
