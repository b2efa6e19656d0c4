"""Knowledge distillation (`distill: {teacher, temperature, alpha}`): a student learns its teacher.

The teacher and the students are frozen, randomly initialised VGG16 bodies with a trained head
(VGG has no BatchNorm, so random features keep the colour; the backbone costs one pass): the
teacher learns the colour folder, the students learn from it on a copy whose class folders are
renamed in a cycle, so that every training label is wrong.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import make_image_folder, tiny_config, write_config
from transferctl.cli import app

CLASSES = ("red", "green", "blue")
FROZEN_VGG = {"backbone": "vgg16", "weights": "none", "freeze": "all"}


def _finetune(config_path: Path) -> Path:
    result = CliRunner().invoke(app, ["finetune", str(config_path), "--quiet"])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The teacher's folder; the students' train/ with every class wrong, test/ right."""
    root = tmp_path_factory.mktemp("distill")
    teacher = make_image_folder(root / "teacher", CLASSES, per_class=24, seed=0)
    source = make_image_folder(root / "source", CLASSES, per_class=24, seed=1)
    student = root / "student"
    for index, name in enumerate(CLASSES):  # red's images in green/, green's in blue/, ...
        shutil.copytree(source / name, student / "train" / CLASSES[(index + 1) % len(CLASSES)])
    make_image_folder(student / "test", CLASSES, per_class=12, seed=2)
    return {"root": root, "teacher": teacher, "student": student}


@pytest.fixture(scope="module")
def teacher_run(folders: dict[str, Path]) -> Path:
    root = folders["root"]
    config = tiny_config(
        folders["teacher"],
        name="teacher",
        model=FROZEN_VGG,
        data={"validation_split": 0.0},
        train={"phases": [{"name": "head", "epochs": 5, "learning_rate": 1.0e-2}]},
        output={"runs_dir": str(root / "runs")},
    )
    return _finetune(write_config(root / "teacher.yaml", config))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "epochs", "changes", "outputs"),
    [
        ("features", 10, {}, "cached"),  # the head on cached features, teacher outputs beside
        ("augmented", 3, {"data": {"augment": {"flip": "horizontal"}}}, "every batch"),
    ],
)
def test_a_student_on_wrong_labels_learns_the_right_classes_from_its_teacher(
    folders: dict[str, Path],
    teacher_run: Path,
    mode: str,
    epochs: int,
    changes: dict,
    outputs: str,
) -> None:
    config = _student_config(folders, teacher_run, mode, epochs, changes)
    run = _finetune(config)
    _assert_learned_from_the_teacher(run, teacher_run, mode, outputs)

    if mode == "features":  # model.keras is the plain student, loadable without transferctl
        check = (
            "import sys, keras, numpy\n"
            "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
            "assert not [name for name in sys.modules if name.startswith('transferctl')]\n"
            "print(model.name, model.predict(numpy.zeros((1, 32, 32, 3)), verbose=0).shape)\n"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", check, str(run / "model.keras")],
            capture_output=True,
            text=True,
            cwd=run.parent,
            check=False,
        )
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        assert loaded.stdout.split()[-3:] == ["transferctl_classifier", "(1,", "3)"]


@pytest.mark.slow
def test_a_killed_distilled_run_resumes(folders: dict[str, Path], teacher_run: Path, cli) -> None:
    """Through the image pipeline (no feature cache), the teacher's outputs beside the images."""
    changes = {"train": {"feature_cache": "off"}}
    config = _student_config(folders, teacher_run, "images", 3, changes)
    run = folders["root"] / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "transferctl", "finetune", str(config), "--run-dir", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while _epochs(run) < 1:  # epoch 1 committed, epoch 2 under way
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training did not get there in time"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "model.keras").exists() and _epochs(run) < 3

    result = cli("finetune", config, "--run-dir", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert _epochs(run) == 3
    _assert_learned_from_the_teacher(run, teacher_run, "images", "cached")


def _epochs(run: Path) -> int:
    if not (run / "history.csv").is_file():
        return 0
    with open(run / "history.csv", newline="") as handle:
        return len(list(csv.DictReader(handle)))


def _student_config(
    folders: dict[str, Path], teacher_run: Path, mode: str, epochs: int, changes: dict
) -> Path:
    root = folders["root"]
    config = tiny_config(
        folders["student"],
        name=f"student-{mode}",
        seed=8,  # another random backbone than the teacher's
        model=FROZEN_VGG,
        data={"validation_split": 0.0},
        train={"phases": [{"name": "head", "epochs": epochs, "learning_rate": 1.0e-2}]},
        distill={"teacher": str(teacher_run), "alpha": 1.0},
        output={"runs_dir": str(root / "runs")},
    )
    for section, values in changes.items():
        config[section].update(values)
    return write_config(root / f"student-{mode}.yaml", config)


def _assert_learned_from_the_teacher(run: Path, teacher_run: Path, mode: str, outputs: str) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    chance = 1 / len(CLASSES)
    student, teacher = metrics["test"]["accuracy"], metrics["teacher"]["test"]["accuracy"]
    assert teacher >= 0.9 > chance + 0.5
    assert student >= 0.9, (student, teacher)  # the test split is labelled right
    assert abs(student - teacher) <= 0.1
    assert metrics["teacher"]["test"]["num_examples"] == metrics["test"]["num_examples"] == 36
    (phase,) = metrics["training"]["phases"]
    assert phase["distill"] == {
        "teacher": str(teacher_run),
        "temperature": 4.0,
        "alpha": 1.0,
        "teacher_outputs": outputs,
    }
    assert phase["feature_cache"]["used"] is (mode == "features")
    with open(run / "history.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert float(last["accuracy"]) <= 0.2  # against the wrong training labels: it ignored them


def _fake_run(path: Path, labels: list[str], name: str = "teacher") -> Path:
    """A finished run as far as validate looks: config.yaml, labels.txt, model.keras, state."""
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"name": name}))
    (path / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    (path / "model.keras").write_bytes(b"PK not read before the classes are checked")
    (path / "checkpoints" / "state.json").write_text(json.dumps({"finished": True}))
    return path


def test_a_teacher_with_other_classes_exits_2_naming_distill_teacher(
    cli, tmp_path: Path, image_folder: Path
) -> None:
    other = _fake_run(tmp_path / "runs" / "teacher-20260101-120000", ["red", "green", "cyan"])
    runs = tmp_path / "student-runs"
    config = write_config(
        tmp_path / "student.yaml",
        tiny_config(image_folder, distill={"teacher": str(other)}, output={"runs_dir": str(runs)}),
    )
    expected = (
        f"error: distill.teacher: the run {other.resolve()} learned other classes than this "
        "data has: it never learned 'blue'; it learned 'cyan', which the data does not have; "
        "pick a teacher trained on the same classes (its labels.txt), or set data.classes to them\n"
    )
    for command in ("validate", "finetune"):
        result = cli(command, config)
        assert result.exit_code == 2, result.output
        assert result.stderr == expected
    assert not runs.exists()  # finetune stopped before creating a run


def test_the_teacher_may_be_named_and_the_section_is_checked(cli, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    digits = [str(digit) for digit in range(10)]
    named = _fake_run(runs / "big-20260101-120000", list(reversed(digits)), name="big")
    config = tiny_config(distill={"teacher": {"run": "big"}}, output={"runs_dir": str(runs)})
    result = cli("validate", write_config(tmp_path / "named.yaml", config))
    assert result.exit_code == 0, result.output  # the same classes in another order will do
    assert yaml.safe_load(result.stdout)["distill"] == {
        "teacher": str(named.resolve()),
        "temperature": 4.0,
        "alpha": 0.9,
    }
    default = cli("validate", write_config(tmp_path / "plain.yaml", tiny_config()))
    assert yaml.safe_load(default.stdout)["distill"] is None

    wrong = {
        "missing": ({"teacher": {"run": "nobody"}}, "no finished finetune run named 'nobody' in"),
        "no_dir": ({"teacher": "nowhere"}, f"{tmp_path / 'nowhere'} does not exist"),
        "alpha": ({"teacher": str(named), "alpha": 1.5}, "expected a number at most 1.0; got 1.5"),
        "temperature": ({"teacher": str(named), "temperature": 0}, "greater than 0"),
    }
    for key, (section, message) in wrong.items():
        config = tiny_config(distill=section, output={"runs_dir": str(runs)})
        result = cli("validate", write_config(tmp_path / f"{key}.yaml", config))
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: distill."), result.stderr
        assert message in result.stderr


def test_the_distiller_loss_is_the_formula_and_its_weights_round_trip(tmp_path: Path) -> None:
    from transferctl import runtime
    from transferctl.train import distill

    keras, tf = runtime.keras(), runtime.tf()
    rng = np.random.default_rng(0)

    def student() -> object:
        keras.utils.set_random_seed(1)
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(3, activation="softmax", dtype="float32")(inputs)
        return keras.Model(inputs, outputs)

    teacher = distill.Teacher(
        None, tmp_path, temperature=2.0, alpha=0.7, image_size=(1, 1), order=None
    )
    model = distill.Distiller(student(), teacher)
    model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy())
    x = rng.normal(size=(8, 4)).astype(np.float32)
    taught = rng.normal(size=(8, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[np.arange(8) % 3]

    predicted = model((tf.constant(x), tf.constant(taught)))
    loss = float(model.compute_loss((x, taught), labels, predicted, training=True))
    probabilities = np.asarray(predicted, np.float64)

    def softened(logits: np.ndarray) -> np.ndarray:
        exp = np.exp(logits / 2.0 - (logits / 2.0).max(-1, keepdims=True))
        return exp / exp.sum(-1, keepdims=True)

    p, q = softened(taught.astype(np.float64)), softened(np.log(probabilities))
    kl = (p * np.log(p / q)).sum(-1).mean()
    cross_entropy = -(labels * np.log(probabilities)).sum(-1).mean()
    assert loss == pytest.approx(0.7 * 4.0 * kl + 0.3 * cross_entropy, rel=1e-4)
    # scoring (validation) is the compiled loss alone, on the true labels
    scored = float(model.compute_loss((x, taught), labels, predicted, training=False))
    assert scored == pytest.approx(cross_entropy, rel=1e-4)

    dataset = tf.data.Dataset.from_tensor_slices(((x, taught), labels)).batch(4)
    model.fit(dataset, epochs=2, verbose=0)
    model.save_weights(str(tmp_path / "distiller.weights.h5"))
    again = distill.Distiller(student(), teacher)
    again.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy())
    again.optimizer.build(again.trainable_variables)
    again.load_weights(str(tmp_path / "distiller.weights.h5"))
    for before, after in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(again.optimizer.iterations.numpy()) == 4  # the optimizer state came back too
    assert [w.shape for w in model.get_weights()] == [(4, 3), (3,)]  # the student's, nothing more
