"""Knowledge distillation: a finished run (the teacher) teaches the model being trained.

Hinton et al. 2015: the student learns from the teacher's outputs softened by a temperature T,

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross-entropy(labels)

(T^2 keeps the soft term's gradients on the scale of the hard term's as T changes). The teacher
is the run's model.keras, loaded safely, frozen and called in inference mode; its classes must be
the data's (in any order: its outputs are reordered). Logits are the log-probabilities of a
softmax output (softmax ignores a constant shift), taken from the logits Keras attaches to the
softmax where it does, else from the clipped probabilities.

Without augmentation a training image never changes, so the teacher runs once over the training
split and its outputs travel with each image through the shuffled pipeline (or with each
image's cached features, `feature_cache`); with augmentation it runs on every augmented batch.

`Distiller` wraps the model a phase fits (the classifier, or its head on cached features): the
same weights (`get_weights`, `save_weights`/`load_weights` round-trip between Distillers),
validation with plain cross-entropy on the true labels (Keras scores with `training=False`),
and model.keras stays the plain classifier.

Example:
    teacher = load_teacher(config.distill, data.class_names)
    fit_model = Distiller(model, teacher)
    fit_model.compile(optimizer="adam", loss="categorical_crossentropy")
    fit_model.fit(training_dataset(data, teacher, data.seed), epochs=5)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.config.classes import teacher_class_problem
from transferctl.config.schema import Distill
from transferctl.data import DataBundle, pipeline
from transferctl.errors import TrainingFailed, UserError
from transferctl.rundir.layout import LABELS, MODEL
from transferctl.rundir.model_file import classifier_problem, load_model_file
from transferctl.rundir.reading import read_labels
from transferctl.train import feature_cache

WHERE = "distill.teacher"
EPSILON = 1e-12  # smallest probability taken as is when a softmax's logits are not at hand

keras = runtime.keras()
Model: Any = keras.Model


@dataclass
class Teacher:
    """A finished run's model, frozen, and how its outputs map onto the data's classes."""

    model: Any
    run_dir: Path
    temperature: float
    alpha: float
    image_size: tuple[int, int]
    order: list[int] | None  # the teacher's output index of each data class; None: the same
    train_outputs: np.ndarray | None = None  # log-probabilities per training image, once run

    def log_probabilities(self, images: Any) -> Any:
        """The teacher's log-probabilities (as logits) for a batch of 0-255 images, in graph."""
        tf = runtime.tf()
        if tuple(images.shape[1:3]) != self.image_size:
            images = pipeline.resize(images, self.image_size)
        outputs = log_probabilities(self.model(images, training=False))
        return outputs if self.order is None else tf.gather(outputs, self.order, axis=-1)

    def training_outputs(self, data: DataBundle) -> np.ndarray:
        """Log-probabilities for every training image, in the order of `data.plain("train")`.

        Runs the teacher once (at its own input size, from the original images); later phases
        reuse the result.
        """
        if self.train_outputs is None:
            self.train_outputs = self._run(dataclasses.replace(data, image_size=self.image_size))
        return self.train_outputs

    def _run(self, data: DataBundle) -> np.ndarray:
        tf = runtime.tf()

        @tf.function(reduce_retracing=True)
        def forward(images: Any) -> Any:
            return self.log_probabilities(images)

        batches = [np.asarray(forward(images)) for images, _ in data.plain("train")]
        return np.concatenate(batches).astype(np.float32)


def load_teacher(config: Distill, class_names: list[str]) -> Teacher:
    """The `distill.teacher` run's model, checked against the data's classes.

    Raises:
        UserError: the run learned other classes, or its model.keras cannot be loaded (naming
            `distill.teacher`).
    """
    run_dir = Path(config.teacher)
    problem = teacher_class_problem(run_dir, class_names)
    if problem is not None:
        raise problem
    path = run_dir / MODEL
    import transferctl.model.preprocess  # noqa: F401 - registers BackbonePreprocess (0.1 runs)

    model = load_model_file(
        path,
        check_as=WHERE,
        explain=lambda failure: UserError(
            WHERE,
            f"cannot load {path} ({failure.summary})",
            "pass a run directory made by `finetune` (a damaged file: train the teacher again)",
        ),
    )
    model.trainable = False
    taught = read_labels(run_dir / LABELS)
    not_one = classifier_problem(model, len(taught))
    if not_one is not None:
        raise UserError(
            WHERE,
            f"{path} is not a classifier over its labels.txt: {not_one}",
            "a teacher is a run trained by transferctl finetune",
        )
    order = [taught.index(name) for name in class_names]
    height, width = model.inputs[0].shape[1:3]
    return Teacher(
        model=model,
        run_dir=run_dir,
        temperature=config.temperature,
        alpha=config.alpha,
        image_size=(int(height), int(width)),
        order=None if order == list(range(len(taught))) else order,
    )


def log_probabilities(probabilities: Any) -> Any:
    """Log-probabilities of a softmax output: from its logits when Keras attached them, else
    from the probabilities clipped at `EPSILON` (finite, and as good as logits: a softmax of
    them gives the probabilities back)."""
    tf = runtime.tf()
    logits = getattr(probabilities, "_keras_logits", None)
    if logits is not None:
        return tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    clipped = tf.clip_by_value(tf.cast(probabilities, tf.float32), EPSILON, 1.0)
    return tf.math.log(clipped)


def soft_loss(teacher_logits: Any, student_logits: Any, temperature: float) -> Any:
    """Per example: T^2 * KL(softmax(teacher / T) || softmax(student / T))."""
    tf = runtime.tf()
    teacher = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    student = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    divergence = tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1)
    return temperature * temperature * divergence


class Distiller(Model):
    """The model a phase fits, trained on alpha * soft loss + (1 - alpha) * the compiled loss.

    Its inputs are the wrapped model's, or `(inputs, teacher_logits)` when the teacher's
    outputs travel with the data; without them, training runs the teacher on each batch (the
    wrapped model must then take images). Scoring (`evaluate`) uses the compiled loss alone.

    Args:
        student: the model a phase fits; its layers and weights are the Distiller's.
        teacher: the loaded teacher; not tracked, so its weights are not saved with the
            Distiller's.
    """

    def __init__(self, student: Any, teacher: Teacher, **kwargs: Any) -> None:
        super().__init__(name="distiller", **kwargs)
        self.student = student
        self.teacher = teacher
        self._convert_input_args = False  # as in a functional model: inputs pass as they are
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if isinstance(inputs, tuple | list):
            inputs = inputs[0]
        return self.student(inputs, training=training)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if not training:
            return loss
        tf = runtime.tf()
        if isinstance(x, tuple | list):
            taught = tf.cast(x[1], tf.float32)
        else:
            taught = tf.stop_gradient(self.teacher.log_probabilities(x))
        soft = soft_loss(taught, log_probabilities(y_pred), self.teacher.temperature)
        if sample_weight is not None:
            soft = soft * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        # under tf.distribute Keras divides each replica's loss (and the penalties) by the
        # replicas, whose gradients are then summed: the soft term must be divided the same way
        replicas = float(tf.distribute.get_strategy().num_replicas_in_sync)
        penalties = tf.add_n([tf.cast(tf.reduce_sum(p), tf.float32) for p in self.losses] or [0.0])
        penalties = penalties / replicas
        hard = tf.cast(loss, tf.float32) - penalties
        alpha = self.teacher.alpha
        return alpha * tf.reduce_mean(soft) / replicas + (1.0 - alpha) * hard + penalties

    def get_layer(self, name: str | None = None, index: int | None = None) -> Any:
        """The wrapped model's layer: code written for the classifier (BatchNorm statistics)
        works on the Distiller."""
        return self.student.get_layer(name, index)


def attach(inputs: Any, teacher: Teacher, data: DataBundle) -> None:
    """Make a phase's `PhaseInputs` distil: wrap its fit model, and give it the teacher's
    outputs per training image when they can be computed once (no augmentation).

    Raises:
        TrainingFailed: the cached features and the teacher's outputs disagree in count.
    """
    on_features = inputs.features is not None and inputs.decision.use
    augmented = feature_cache.augmentation_on(data.augment_config)
    outputs = None if augmented and not on_features else teacher.training_outputs(data)
    if outputs is not None:
        expected = inputs.features.count("train") if on_features else data.count("train")
        if outputs.shape[0] != expected:
            if on_features:
                raise TrainingFailed(
                    f"{WHERE}: the teacher saw {outputs.shape[0]} training images, the feature "
                    f"cache {expected}; a file changed while training: start again"
                )
            outputs = None  # an image failed to load this time: run the teacher per batch
    inputs.teacher_outputs = outputs
    inputs.fit_model = Distiller(inputs.fit_model, teacher)
    inputs.summary["distill"] = {
        "teacher": str(teacher.run_dir),
        "temperature": teacher.temperature,
        "alpha": teacher.alpha,
        "teacher_outputs": "cached" if outputs is not None else "every batch",
    }


def training_dataset(data: DataBundle, outputs: np.ndarray, seed: int) -> Any:
    """Shuffled training batches `((images, teacher_logits), labels)`, never augmented."""
    return pipeline.make_dataset(
        data.examples["train"],
        data.image_size,
        data.batch_size,
        data.num_classes,
        shuffle_seed=seed,
        skip_unreadable=data.audit is not None,
        extra=outputs,
    )


def teacher_metrics(teacher: Teacher, data: DataBundle) -> dict[str, Any]:
    """Accuracy and cross-entropy of the teacher on val and test (its own input size)."""
    tf = runtime.tf()
    resized = dataclasses.replace(data, image_size=teacher.image_size)

    @tf.function(reduce_retracing=True)
    def forward(images: Any) -> Any:
        return teacher.log_probabilities(images)

    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        if not data.has(split):
            continue
        right, loss, count = 0, 0.0, 0
        for images, labels in resized.plain(split):
            logits = np.asarray(forward(images), dtype=np.float64)
            truth = np.argmax(np.asarray(labels), axis=-1)
            right += int(np.sum(np.argmax(logits, axis=-1) == truth))
            loss -= float(np.sum(logits[np.arange(len(truth)), truth]))
            count += len(truth)
        metrics[split] = {
            "accuracy": right / max(count, 1),
            "loss": loss / max(count, 1),
            "num_examples": count,
        }
    return metrics
