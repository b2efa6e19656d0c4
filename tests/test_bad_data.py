"""Bad data: every kind of bad file is left out and listed (skip) or stops before training (fail);
unusual modes and EXIF rotations are converted, not dropped; `class_weight: balanced` trains."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.conftest import COLORS, make_image_folder, tiny_config, write_config
from transferctl.data import audit, pipeline
from transferctl.data.bundle import balanced_class_weights
from transferctl.data.examples import Examples

MACOS_RESOURCE_FORK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 64


def noisy(color: str, size: tuple[int, int] = (40, 32), seed: int = 0) -> np.ndarray:
    """uint8 RGB [height, width, 3] of one class colour with noise; size is (width, height)."""
    rng = np.random.default_rng(seed)
    base = np.array(COLORS[color], dtype=np.float32)
    return np.clip(base + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)


def asymmetric(size: tuple[int, int] = (48, 32)) -> np.ndarray:
    """A picture that looks different under every flip and rotation; size is (width, height)."""
    width, height = size
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([rows * 255 // height, cols * 255 // width, np.zeros_like(rows)], axis=-1)
    pixels[: height // 3, : width // 4] = (255, 255, 255)  # a white block near the top left
    return pixels.astype(np.uint8)


def with_orientation(pixels: np.ndarray, orientation: int, path: Path, **save: Any) -> Path:
    exif = Image.Exif()
    exif[audit.ORIENTATION_TAG] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **save)
    return path


def salt(root: Path) -> tuple[dict[str, str], list[Path]]:
    """Add every kind of bad file and unusual mode to a red/green/blue folder.

    Returns the bad entries (path -> a word of the expected reason) and the usable extras.
    """
    red, green, blue = root / "red", root / "green", root / "blue"
    encoded = io.BytesIO()
    Image.fromarray(noisy("green")).save(encoded, "PNG")
    png = encoded.getvalue()
    bad = {
        red / "zz_empty.jpg": "empty file",
        green / "zz_truncated.png": "truncated image",
        blue / "zz_text.jpg": "not an image (looks like text)",
        red / "notes.txt": "not an image (looks like text)",
        green / "zz_scan.tiff": "unsupported format TIFF",
        blue / "zz_alpha.webp": "WebP with transparency",
        blue / "._zz_photo.jpg": "hidden file",
        root / "yellow": "class folder without usable images: class dropped",
    }
    (red / "zz_empty.jpg").write_bytes(b"")
    (green / "zz_truncated.png").write_bytes(png[: len(png) // 2])
    (blue / "zz_text.jpg").write_text("this is not a picture\n" * 20)
    (red / "notes.txt").write_text("where these photos came from\n")
    Image.fromarray(noisy("green")).save(green / "zz_scan.tiff")
    translucent = Image.fromarray(noisy("blue")).convert("RGBA")
    translucent.putalpha(128)
    translucent.save(blue / "zz_alpha.webp")
    (blue / "._zz_photo.jpg").write_bytes(MACOS_RESOURCE_FORK)
    (root / "yellow").mkdir()

    extras = [
        red / "zz_png_named.jpg",
        green / "zz_still.webp",
        red / "zz_gray.png",
        green / "zz_rgba.png",
        blue / "zz_cmyk.jpg",
        red / "zz_16bit.png",
        green / "zz_palette.png",
        blue / "zz_exif.jpg",
    ]
    (red / "zz_png_named.jpg").write_bytes(_png(noisy("red")))
    Image.fromarray(noisy("green")).save(green / "zz_still.webp", lossless=True)
    Image.fromarray(noisy("red")).convert("L").save(red / "zz_gray.png")
    Image.fromarray(noisy("green")).convert("RGBA").save(green / "zz_rgba.png")
    Image.fromarray(noisy("blue")).convert("CMYK").save(blue / "zz_cmyk.jpg")
    wide = noisy("red")[..., 0].astype(np.uint16) * 257
    Image.fromarray(wide).save(red / "zz_16bit.png")
    Image.fromarray(noisy("green")).convert("P").save(green / "zz_palette.png")
    with_orientation(noisy("blue"), 6, blue / "zz_exif.jpg", quality=95)
    return {str(path): reason for path, reason in bad.items()}, extras


def _png(pixels: np.ndarray) -> bytes:
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, "PNG")
    return encoded.getvalue()


@pytest.fixture(scope="module")
def salted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list[Path]]:
    root = make_image_folder(tmp_path_factory.mktemp("salted") / "colors", per_class=16)
    bad, extras = salt(root)
    return root, bad, extras


# ----------------------------------------------------------------------------------------------
# The audit, directly (fast)
# ----------------------------------------------------------------------------------------------


def test_audit_names_every_bad_file_and_keeps_the_unusual_modes(
    salted: tuple[Path, dict[str, str], list[Path]],
) -> None:
    root, bad, extras = salted
    found = audit.audit_folder(root)
    skipped = dict(found.skipped())
    assert set(skipped) == set(bad)
    for path, reason in bad.items():
        assert reason in skipped[path], (path, skipped[path])
    usable = {f.path for f in found.usable()}
    assert {str(path) for path in extras} <= usable
    assert len(usable) == 3 * 16 + len(extras)
    assert found.kept_classes() == ["blue", "green", "red"]
    assert found.dropped_classes() == ["yellow"]
    (warned,) = found.warnings()
    assert (warned.path, warned.warning) == (
        str(root / "red" / "zz_png_named.jpg"),
        "content is PNG but named .jpg",
    )
    by_path = {f.path: f for f in found.files}
    assert by_path[str(root / "blue" / "zz_exif.jpg")].orientation == 6
    assert {by_path[str(path)].mode for path in extras} >= {"L", "RGBA", "CMYK", "I;16", "P"}
    first = str(root / "blue" / "zz_alpha.webp")  # blue/._zz_photo.jpg sorts first: hidden
    assert found.first_failure() == (first, skipped[first])


def test_audit_agrees_with_tensorflow_on_what_it_decodes(tmp_path: Path) -> None:
    """Files Pillow reads but TensorFlow does not are bad; every usable one decodes in TF."""
    tf = pytest.importorskip("tensorflow")
    pixels = noisy("red")
    encoded = {
        "ok_rgb.bmp": _save(pixels, "BMP"),
        "ok_gray.bmp": _save(pixels, "BMP", mode="L"),
        "ok.gif": _save(pixels, "GIF"),
        "ok_progressive.jpg": _save(pixels, "JPEG", progressive=True),
        "bad_palette.bmp": _save(pixels, "BMP", mode="P"),
        "bad_1bit.bmp": _save(pixels, "BMP", mode="1"),
        "bad_tiff.png": _save(pixels, "TIFF"),
        "bad_no_iend.png": _save(pixels, "PNG")[:-12],
        "bad_cut.jpg": _save(pixels, "JPEG")[:-2],
        "bad_cut.gif": _save(pixels, "GIF")[:-40],
        "bad_junk.jpg": b"\xff\xd8\xff\xe0 not really a JPEG",
    }
    for name, data in encoded.items():
        (tmp_path / name).write_bytes(data)
    for name, data in encoded.items():
        report = audit.inspect_file(tmp_path / name, webp=audit.tensorflow_reads_webp())
        assert report.usable == name.startswith("ok"), (name, report.reason)
        if report.usable:
            tf.io.decode_image(data, channels=3, expand_animations=False)  # must not raise


def _save(pixels: np.ndarray, fmt: str, mode: str = "RGB", **options: Any) -> bytes:
    encoded = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(encoded, fmt, **options)
    return encoded.getvalue()


def test_unusual_modes_decode_to_the_right_colours(
    salted: tuple[Path, dict[str, str], list[Path]],
) -> None:
    tf = pytest.importorskip("tensorflow")
    root, _, _ = salted
    for name, tolerance in (
        ("red/zz_gray.png", 0),
        ("green/zz_rgba.png", 0),
        ("green/zz_palette.png", 0),
        ("red/zz_png_named.jpg", 0),
        ("green/zz_still.webp", 0),
        ("blue/zz_cmyk.jpg", 12),  # JPEG's own loss
    ):
        path = root / name
        decoded = pipeline.decode(tf.io.read_file(str(path))).numpy().astype(int)
        expected = np.asarray(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(decoded - expected).mean() <= tolerance, name
    # Pillow clips 16-bit grey to 255 when converting; TensorFlow scales it, as it should.
    path = root / "red" / "zz_16bit.png"
    decoded = pipeline.decode(tf.io.read_file(str(path))).numpy().astype(int)
    wide = np.asarray(Image.open(path)).astype(int)
    assert np.abs(decoded - (wide // 257)[..., None]).max() <= 1


def test_exif_orientation_is_undone_like_pillow(tmp_path: Path) -> None:
    """Every EXIF orientation, through the folder audit and the tf.data pipeline."""
    pytest.importorskip("tensorflow")
    pixels = asymmetric()
    files = [
        with_orientation(pixels, orientation, tmp_path / f"o{orientation}.{extension}")
        for orientation in range(1, 9)
        for extension in ("png", "jpg")
    ]
    reports = [audit.inspect_file(path, webp=False) for path in files]
    assert [r.orientation for r in reports] == [o for o in range(1, 9) for _ in range(2)]
    upright = [
        np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")) for path in files
    ]
    for size in {image.shape[:2] for image in upright}:  # the upright size: resizing is a no-op
        chosen = [index for index, image in enumerate(upright) if image.shape[:2] == size]
        examples = Examples(
            labels=np.zeros(len(chosen), np.int32),
            paths=np.asarray([str(files[index]) for index in chosen]),
            orientation=np.asarray([reports[index].orientation for index in chosen], np.uint8),
        )
        (images, _), *_ = pipeline.make_dataset(examples, size, len(chosen), 2)
        for image, index in zip(np.asarray(images), chosen, strict=True):
            difference = np.abs(image - upright[index].astype(np.float32)).mean()
            tolerance = 1e-3 if files[index].suffix == ".png" else 6.0  # JPEG's own loss
            assert difference <= tolerance, (files[index].name, difference)


def test_a_file_broken_after_the_audit_is_dropped_not_fatal(tmp_path: Path) -> None:
    """The pipeline's safety net: training data never stops an epoch on an unreadable file."""
    pytest.importorskip("tensorflow")
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.png")
        paths[-1].write_bytes(_png(noisy("red", seed=index)))
    paths[1].write_bytes(paths[1].read_bytes()[:50])  # damaged since the audit
    examples = Examples(labels=np.zeros(3, np.int32), paths=np.asarray([str(p) for p in paths]))
    dataset = pipeline.make_dataset(examples, (32, 32), 8, 2, skip_unreadable=True)
    (images, labels), *_ = dataset
    assert images.shape == (2, 32, 32, 3) and labels.shape == (2, 2)


def test_balanced_class_weights_are_sklearns() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray([0] * 30 + [1] * 6 + [2] * 12)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert balanced_class_weights(labels, 3) == pytest.approx(dict(enumerate(expected)))
    assert balanced_class_weights(np.asarray([0, 0, 2]), 3)[1] == 1.0  # no labels: neutral


# ----------------------------------------------------------------------------------------------
# Through the CLI (the slow ones train)
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_skip_trains_on_a_salted_folder_and_lists_exactly_the_bad_files(
    salted: tuple[Path, dict[str, str], list[Path]], cli: Callable[..., Any], tmp_path: Path
) -> None:
    root, bad, extras = salted
    config = tiny_config(
        root,
        data={"validation_split": 0.25, "test_split": 0.15},
        output={"runs_dir": str(tmp_path / "runs")},
    )
    config["train"]["phases"] = config["train"]["phases"][:1]
    result = cli("finetune", write_config(tmp_path / "salted.yaml", config))
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    listed = dict(line.split("\t", 1) for line in (run / "bad_files.txt").read_text().splitlines())
    assert set(listed) == set(bad)
    assert f"skipped {len(bad)} unusable file(s)" in result.stderr
    assert (run / "labels.txt").read_text().split() == ["blue", "green", "red"]

    from transferctl.config.loader import load_config
    from transferctl.data import load_data

    resolved = load_config(run / "config.yaml")
    data = load_data(resolved.data, resolved.seed)
    assert sum(data.count(split) for split in ("train", "val", "test")) == 3 * 16 + len(extras)
    used = set().union(*(data.examples[split].paths.tolist() for split in data.examples))
    assert {str(path) for path in extras} <= used
    assert f"train {data.count('train')}, val {data.count('val')}, test {data.count('test')}" in (
        result.stderr
    )


def test_fail_stops_at_the_first_bad_file_before_the_run_directory(
    salted: tuple[Path, dict[str, str], list[Path]], cli: Callable[..., Any], tmp_path: Path
) -> None:
    root, bad, _ = salted
    runs = tmp_path / "runs"
    config = tiny_config(root, output={"runs_dir": str(runs)})
    config_path = write_config(tmp_path / "salted.yaml", config)
    result = cli("finetune", config_path, "--set", "data.on_bad_file=fail")
    assert result.exit_code == 2
    first = min(path for path, reason in bad.items() if reason != "hidden file")
    assert result.stderr.startswith(f"error: data.path: {first}: "), result.stderr
    assert "set data.on_bad_file: skip" in result.stderr
    assert not runs.exists()


def test_too_few_images_for_the_split_names_the_class(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    root = make_image_folder(tmp_path / "few", per_class=6)
    for extra in sorted((root / "blue").iterdir())[2:]:
        extra.unlink()
    config = tiny_config(root, data={"validation_split": 0.2, "test_split": 0.2})
    result = cli("finetune", write_config(tmp_path / "few.yaml", config))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: data.path: class 'blue' has 2 image(s); ")
    assert "need at least 3 per class" in result.stderr


def test_a_single_usable_class_is_an_error_in_either_mode(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    root = make_image_folder(tmp_path / "one", classes=("red",), per_class=6)
    (root / "green").mkdir()
    (root / "green" / "broken.png").write_bytes(b"")
    config_path = write_config(tmp_path / "one.yaml", tiny_config(root))
    for policy in ("skip", "fail"):
        result = cli("finetune", config_path, "--set", f"data.on_bad_file={policy}")
        assert result.exit_code == 2
        first = {
            "skip": "has 1 class folder(s) with usable images (red); a classifier needs >= 2",
            "fail": f"{root / 'green'}: class folder without usable images; fix or remove",
        }[policy]
        assert first in result.stderr, result.stderr


@pytest.mark.slow
def test_class_weight_balanced_trains_on_an_imbalanced_folder(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    root = make_image_folder(tmp_path / "imbalanced", classes=("red", "green"), per_class=24)
    for extra in sorted((root / "green").iterdir())[6:]:
        extra.unlink()
    config = tiny_config(root, output={"runs_dir": str(tmp_path / "runs")})
    config["train"]["phases"] = config["train"]["phases"][:1]
    config_path = write_config(tmp_path / "imbalanced.yaml", config)
    result = cli("finetune", config_path, "--quiet", "--set", "train.class_weight=balanced")
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert (run / "model.keras").is_file()

    from transferctl.config.loader import load_config
    from transferctl.data import load_data

    resolved = load_config(run / "config.yaml")
    assert resolved.train.class_weight == "balanced"
    data = load_data(resolved.data, resolved.seed)
    labels = data.examples["train"].labels
    counts = np.bincount(labels, minlength=2)
    assert data.class_weights() == pytest.approx(
        {index: len(labels) / (2 * count) for index, count in enumerate(counts)}
    )
    assert data.class_weights()[0] > 1.0 > data.class_weights()[1]  # green (0) is the rare one
