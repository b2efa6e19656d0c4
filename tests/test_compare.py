"""`transferctl compare`: config differences, metrics side by side, JSON, the overlay plot."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import tiny_config


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv") as handle:
        return list(csv.DictReader(handle))


def _row(lines: list[str], name: str) -> list[str]:
    """The cells after the first of the table row named `name` (box drawn in Unicode or ASCII)."""
    for line in lines:
        cells = [cell.strip() for cell in re.split(r"[│|]", line)]
        if len(cells) > 2 and cells[1] == name:
            return cells[2:-1]
    raise AssertionError(f"no row {name!r} in:\n" + "\n".join(lines))


def _copy_run(source: Path, target: Path, **config: object) -> Path:
    """A copy of `source` whose config.yaml has `config`'s top-level keys replaced."""
    shutil.copytree(source, target)
    resolved = yaml.safe_load((target / "config.yaml").read_text())
    resolved.update(config)
    (target / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    return target


def _fake_run(folder: Path, seed: int, accuracy: float | None) -> Path:
    """A run directory written by hand: config, history, and metrics when `accuracy` is set."""
    folder.mkdir(parents=True)
    config = {**tiny_config(output={"runs_dir": str(folder.parent)}), "seed": seed}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "history.csv").write_text(
        "epoch,phase,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds\n"
        "1,head,1.5,0.5,1.4,0.55,0.002,3.0\n"
        "2,finetune,0.9,0.7,1.0,0.65,0.0005,2.5\n"
    )
    if accuracy is not None:
        metrics = {"val": {"accuracy": accuracy, "loss": 1.0, "num_examples": 10}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def seed_pair(tiny_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The real tiny run, and a copy of it that differs in seed, scores and a baseline."""
    other = _copy_run(tiny_run, tmp_path / "tiny-seed-8", seed=8)
    metrics = _metrics(other)
    metrics["val"].update(accuracy=0.5, loss=1.25)
    metrics["linear_probe"] = {"val": {"accuracy": 0.93, "loss": 0.2}, "test": 0.91}
    metrics["teacher"] = {"val": 0.97}
    (other / "metrics.json").write_text(json.dumps(metrics))
    return tiny_run, other


@pytest.mark.slow
def test_two_runs_differing_in_seed(cli, seed_pair: tuple[Path, Path]) -> None:
    first, second = seed_pair
    result = cli("compare", first, second)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert first.name in result.stdout and second.name in result.stdout
    assert _row(lines, "seed") == ["7", "8"]
    assert _row(lines, "val accuracy") == [f"{_metrics(first)['val']['accuracy']:.4f}", "0.5000"]
    assert _row(lines, "val loss") == [f"{_metrics(first)['val']['loss']:.4f}", "1.2500"]
    test_loss = f"{_metrics(first)['test']['loss']:.4f}"
    assert _row(lines, "test loss") == [test_loss, test_loss]
    assert _row(lines, "epochs") == ["2", "2"]
    assert _row(lines, "linear_probe val accuracy") == ["-", "0.9300"]
    assert _row(lines, "linear_probe test accuracy") == ["-", "0.9100"]
    assert _row(lines, "teacher val accuracy") == ["-", "0.9700"]


@pytest.mark.slow
def test_json_and_plot(cli, seed_pair: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = seed_pair
    plot = tmp_path / "plots" / "val.png"
    result = cli("compare", first, second, "--json", "--plot", plot)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["differences"] == {"seed": [7, 8]}
    one, two = document["runs"]
    assert one["run"] == first.name and one["status"] == "finished"
    assert one["val"]["accuracy"] == pytest.approx(_metrics(first)["val"]["accuracy"])
    assert one["test"]["loss"] == pytest.approx(_metrics(first)["test"]["loss"])
    assert one["epochs"] == len(_history(first)) == 2
    seconds = sum(float(row["seconds"]) for row in _history(first))
    assert one["seconds"] == pytest.approx(seconds, abs=1e-3)
    assert one["baselines"] == {}
    assert two["baselines"] == {
        "linear_probe": {"val": 0.93, "test": 0.91},
        "teacher": {"val": 0.97},
    }
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        assert 800 <= image.size[0] <= 1600 and 400 <= image.size[1] <= 900
    assert f"wrote {plot}" in result.stderr


@pytest.mark.slow
def test_an_unfinished_run_is_a_marked_row(cli, tiny_run: Path, tmp_path: Path) -> None:
    unfinished = _copy_run(tiny_run, tmp_path / "killed")
    (unfinished / "metrics.json").unlink()
    state = json.loads((unfinished / "checkpoints" / "state.json").read_text())
    (unfinished / "checkpoints" / "state.json").write_text(json.dumps({**state, "finished": False}))
    history = (unfinished / "history.csv").read_text().splitlines()
    (unfinished / "history.csv").write_text("\n".join(history[:2]) + "\n")  # one epoch done

    result = cli("compare", tiny_run, unfinished)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    lines = result.stdout.splitlines()
    assert _row(lines, "status") == ["finished", "unfinished"]
    assert _row(lines, "val accuracy")[1] == "-"
    assert _row(lines, "epochs") == ["2", "1"]
    assert _row(lines, "last val accuracy")[1] == f"{float(history[1].split(',')[5]):.4f}"

    result = cli("compare", tiny_run, unfinished, "--json")
    run = json.loads(result.stdout)["runs"][1]
    assert run["status"] == "unfinished" and run["val"] == {} and run["epochs"] == 1
    assert run["last_val_accuracy"] == pytest.approx(float(history[1].split(",")[5]))


def test_paths_that_are_not_runs_exit_2_naming_them(cli, tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "runs" / "a", seed=1, accuracy=0.8)
    missing = tmp_path / "nowhere"
    result = cli("compare", run, missing)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {missing}: not a transferctl run (no config.yaml); ")
    assert "does not exist" in result.stderr

    result = cli("compare", run, tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'runs'}: not a transferctl run ")
    assert f"it holds 1 run(s); pass them, e.g. {tmp_path / 'runs'}/*" in result.stderr

    result = cli("compare", run)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: RUN_DIR: compare needs at least 2 runs; got 1")

    result = cli("compare", run, run, "--plot", tmp_path / "curves.svg")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --plot: expected a .png file")


@pytest.mark.parametrize("damaged", ["metrics.json", "config.yaml"])
def test_a_damaged_file_exits_2_naming_it(cli, tmp_path: Path, damaged: str) -> None:
    good = _fake_run(tmp_path / "good", seed=1, accuracy=0.8)
    bad = _fake_run(tmp_path / "bad", seed=2, accuracy=0.7)
    (bad / damaged).write_text('{"val": {"accuracy": 0.7' if damaged == "metrics.json" else "a: [")
    result = cli("compare", good, bad)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {bad / damaged}: damaged ")
    assert "Traceback" not in result.output


def test_compare_never_imports_tensorflow(tmp_path: Path) -> None:
    first = _fake_run(tmp_path / "first", seed=1, accuracy=0.8)
    second = _fake_run(tmp_path / "second", seed=2, accuracy=None)  # unfinished
    plot = tmp_path / "val.png"
    probe = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from transferctl.cli import app\n"
        f"r = CliRunner().invoke(app, ['compare', {str(first)!r}, {str(second)!r}, "
        f"'--plot', {str(plot)!r}, '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "runs = json.loads(r.stdout)['runs']\n"
        "assert [run['status'] for run in runs] == ['finished', 'unfinished'], runs\n"
        "r = CliRunner().invoke(app, ['compare', '--help'])\n"
        "assert r.exit_code == 0 and '--plot' in r.output, r.output\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert plot.is_file()


def test_many_runs_on_an_80_column_terminal_stay_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """12 runs do not fit 80 columns side by side: they come in several tables, each within
    the width, every run's accuracy whole (no column squeezed to a character)."""
    from rich.console import Console

    from transferctl.commands import compare

    runs = [_fake_run(tmp_path / f"run-{seed:02d}", seed, 0.5 + seed / 100) for seed in range(12)]

    def terminal(*args: object, **kwargs: object) -> Console:
        return Console(force_terminal=True, width=80, color_system=None, highlight=False)

    monkeypatch.setattr(compare, "Console", terminal)
    compare.run(runs, None, False)
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    titles = [line for line in lines if line.startswith("12 runs")]
    assert len(titles) > 1, lines
    for seed in range(12):
        assert any(f"run-{seed:02d}" in line for line in lines), seed
        assert any(f"{0.5 + seed / 100:.4f}" in line for line in lines), seed
