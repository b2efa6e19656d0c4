"""What the report is made of: the run's model over the held-out split, the validation split (to
fit the temperature) and the training split (its features, for the label-error probe).

The model runs once per split, as a two-output model (the head's input features and the
probabilities), a batch at a time; only those arrays are kept, never the images. The training
split is sampled down to `MAX_TRAIN_IMAGES` (by the run's seed), so the cost stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.config.schema import Config
from transferctl.data.examples import Examples
from transferctl.errors import UserError
from transferctl.evaluate import target as targets
from transferctl.model.temperature import OUTPUT_LAYER
from transferctl.rundir.model_file import classifier_problem, load_model_file
from transferctl.rundir.reading import RunFiles, open_run, read_labels

MAX_TRAIN_IMAGES = 20_000  # training images the label-error probe looks at, at most

Say = Callable[[str], None]


@dataclass
class Split:
    """One split through the model: in order, its examples, labels, probabilities, features."""

    name: str
    source: str
    examples: Examples
    identifiers: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    features: np.ndarray | None = None


@dataclass
class Collected:
    run: RunFiles
    config: Config | None  # None: the run's training data is gone (--data reports go on)
    class_names: list[str]
    held_out: Split
    validation: Split | None
    train: Split | None
    notes: list[str] = field(default_factory=list)


def collect(
    run_dir: Path, split: str | None, data: Path | None, say: Say, seed: int = 0
) -> Collected:
    """Every split the report needs, through the run's model once each."""
    if split is not None and split not in targets.PREFERRED:
        raise UserError("--split", f"expected one of {', '.join(targets.PREFERRED)}; got {split!r}")
    run = open_run(run_dir, verb="report on")
    class_names = read_labels(run.labels)
    config = (
        _own_config(run) if data is not None else targets.load_run_config(run, other_data=False)
    )
    if data is None:
        assert config is not None
        target = targets.run_split(run, config, class_names, split)
    else:
        target = targets.other_folder(
            data, targets.load_run_config(run, other_data=True), class_names, split
        )
    model = load_model_file(run.model, check_as=str(run.model))
    problem = classifier_problem(model, len(class_names))
    if problem is not None:
        raise UserError(str(run.model), f"cannot report on it: {problem}", "pass a finetune run")
    targets.check_model(model, run, target, class_names)
    both = _features_and_probabilities(run, model)
    notes = targets.count_notes(run, target)

    say(f"predicting {target.source} ({len(target.examples)} images)")
    held_out = _through(both, target, target.name, target.examples, target.dataset)
    validation = train = None
    if config is None:
        notes.append(
            "the run's training data is gone: no temperature was fitted and no label errors "
            "were looked for"
        )
        return Collected(run, None, class_names, held_out, None, None, notes)
    if target.name == "val":
        validation = held_out
    else:
        validation = _own_split(both, run, config, class_names, "val", say)
    if validation is None:
        notes.append("the run has no validation split: no temperature was fitted")
    train = _own_split(both, run, config, class_names, "train", say, sample=config.seed)
    if train is not None and train.name != "train":
        notes.append(train.name)  # the sampling, in words
        train.name = "train"
    return Collected(run, config, class_names, held_out, validation, train, notes)


def _own_config(run: RunFiles) -> Config | None:
    try:
        return targets.load_run_config(run, other_data=False)
    except UserError:
        return None


def _own_split(
    model: Any,
    run: RunFiles,
    config: Config,
    class_names: list[str],
    name: str,
    say: Say,
    sample: int | None = None,
) -> Split | None:
    from transferctl.data import load_data, pipeline

    bundle = load_data(config.data, config.seed)
    if not bundle.has(name):
        return None
    examples = bundle.examples[name]
    label = name
    if sample is not None and len(examples) > MAX_TRAIN_IMAGES:
        chosen = np.sort(
            np.random.default_rng(sample).choice(len(examples), MAX_TRAIN_IMAGES, replace=False)
        )
        label = (
            f"label errors are looked for among {MAX_TRAIN_IMAGES:,} of the "
            f"{len(examples):,} training images, chosen at random"
        )
        examples = examples.take(chosen)
    dataset = pipeline.make_dataset(
        examples,
        bundle.image_size,
        bundle.forward_batch_size,
        bundle.num_classes,
        skip_unreadable=False,
    )
    target = targets.Target(
        name=name,
        source=f"the {name} split",
        examples=examples,
        image_size=bundle.image_size,
        batch_size=bundle.forward_batch_size,
        data_path=None,
        dataset=dataset,
    )
    say(f"predicting the {name} split ({len(examples)} images)")
    return _through(model, target, label, examples, dataset, keep_features=name == "train")


def _features_and_probabilities(run: RunFiles, model: Any) -> Any:
    """The model with a second output: the input of its softmax layer (the head's features)."""
    keras = runtime.keras()
    try:
        head = model.get_layer(OUTPUT_LAYER)
    except ValueError:
        raise UserError(
            str(run.model),
            f"has no {OUTPUT_LAYER!r} layer (not a model transferctl built)",
            "pass a finetune run",
        ) from None
    return keras.Model(model.inputs, [head.input, model.output])


def _through(
    model: Any,
    target: Any,
    name: str,
    examples: Examples,
    dataset: Any,
    keep_features: bool = False,
) -> Split:
    tf = runtime.tf()
    features: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    done = 0
    batches = iter(dataset)
    while True:
        try:
            images, one_hot = next(batches)
        except StopIteration:
            break
        except tf.errors.InvalidArgumentError as error:
            raise targets.unreadable_file(target, done) from error
        hidden, probability = model.predict_on_batch(images)
        if keep_features:
            features.append(np.asarray(hidden, dtype=np.float32))
        probabilities.append(np.asarray(probability, dtype=np.float32))
        labels.append(np.argmax(np.asarray(one_hot), axis=1).astype(np.int32))
        done += len(labels[-1])
    if not labels:
        raise UserError("data", f"no images in {target.source}", "check the split or folder")
    return Split(
        name=name,
        source=target.source,
        examples=examples,
        identifiers=targets.identifiers(examples),
        labels=np.concatenate(labels),
        probabilities=np.concatenate(probabilities),
        features=np.concatenate(features) if features else None,
    )
