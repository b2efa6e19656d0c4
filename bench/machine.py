"""transferctl against the machine: the compiled train step alone, the input pipeline alone,
and training from a folder of JPEG files, in images per second, side by side.

- step: `model.fit` on one in-memory batch repeated (the compiled train function, no input work);
- pipeline: `DataBundle.training()` on the folder (read, decode, resize, augment, batch,
  prefetch) with no model, first epoch (decoding) and later epochs (decoded images cached);
- transferctl: `model.fit(DataBundle.training())`, the same model, the same folder.
Each is timed over its second epoch (the first traces, and fills the decode cache), `--repeats`
times, alternating. MobileNetV2 from scratch (BatchNorm training), 96 px, batch 32.

    .venv/bin/python bench/machine.py [--images 640] [--size 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import spread, write_digits_folder  # noqa: E402

from transferctl import runtime  # noqa: E402
from transferctl.config import backbones
from transferctl.config.schema import Augment, Data, Freeze, Head, Train  # noqa: E402
from transferctl.data import load_data  # noqa: E402
from transferctl.model.classifier import build_classifier  # noqa: E402
from transferctl.model.freezing import apply_freeze  # noqa: E402
from transferctl.train.loop import compile_model  # noqa: E402


def timed_fit(model, dataset, images: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    return images / (time.perf_counter() - started)


def timed_pipeline(dataset) -> float:  # type: ignore[no-untyped-def]
    count, started = 0, time.perf_counter()
    for images, _ in dataset:
        count += int(images.shape[0])
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tf = runtime.tf()
    runtime.set_seed(0)
    size = (args.size, args.size)
    with tempfile.TemporaryDirectory() as temp:
        folder = write_digits_folder(Path(temp) / "digits", side=args.size, images=args.images)
        data = load_data(
            Data(
                source="folder",
                path=folder,
                image_size=size,
                batch_size=args.batch,
                validation_split=0.0,
                test_split=0.0,
                augment=Augment(flip="horizontal"),
            ),
            seed=0,
        )
        model, backbone = build_classifier(
            backbones.get("mobilenet_v2"), size, "none", Head(hidden=[]), data.num_classes
        )
        apply_freeze(model, backbone, Freeze(mode="none"), True, "model.freeze")
        compile_model(model, Train(), 1e-3, 1000, data.num_classes)
        count = data.count("train")
        images = tf.random.uniform((args.batch, *size, 3), 0, 255)
        labels = tf.one_hot(tf.zeros(args.batch, tf.int32), data.num_classes)
        steps = -(-count // args.batch)
        in_memory = tf.data.Dataset.from_tensors((images, labels)).repeat(steps)
        training = data.training()
        first_pipeline = timed_pipeline(data.training())  # decodes every file
        timed_fit(model, in_memory, steps * args.batch)  # traces
        timed_fit(model, training, count)  # fills the decode cache
        rates: dict[str, list[float]] = {"step": [], "transferctl": [], "pipeline": []}
        for _ in range(args.repeats):
            rates["step"].append(timed_fit(model, in_memory, steps * args.batch))
            rates["transferctl"].append(timed_fit(model, training, count))
            rates["pipeline"].append(timed_pipeline(training))
    result = {name: spread(values) for name, values in rates.items()}
    result["pipeline_first_epoch"] = first_pipeline
    ratios = [t / s for t, s in zip(rates["transferctl"], rates["step"], strict=True)]
    result["transferctl_over_step"] = spread(ratios)
    feed = [p / s for p, s in zip(rates["pipeline"], rates["step"], strict=True)]
    result["pipeline_over_step"] = spread(feed)
    print(
        f"MobileNetV2 from scratch, {args.size} px, batch {args.batch}, {count} JPEG/PNG files, "
        f"{args.repeats} repeats (images/s, median (min-max))"
    )
    print("| measured | images/s |")
    print("|---|---|")
    for name, label in (
        ("step", "train step alone (in-memory tensors)"),
        ("transferctl", "transferctl training from the folder"),
        ("pipeline", "input pipeline alone, later epochs (decode cache)"),
    ):
        r = result[name]
        print(f"| {label} | {r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f}) |")
    print(f"| input pipeline alone, first epoch (decoding every file) | {first_pipeline:.1f} |")
    r, f = result["transferctl_over_step"], result["pipeline_over_step"]
    print(f"transferctl / step: {r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})")
    print(f"pipeline / step: {f['median']:.1f} ({f['min']:.1f}-{f['max']:.1f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
