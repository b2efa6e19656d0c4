"""The tutorial script transferctl is measured against: the plain Keras way to train on a folder.

`keras.utils.image_dataset_from_directory` (80/20 split by seed), `keras.applications.MobileNetV2`
from scratch (`weights=None`), global average pooling, dropout, a softmax layer, Adam, and
`model.fit(train, validation_data=val)`. Nothing else: no cache, no prefetch, no statistics
fix-up. Prints one JSON line: seconds per epoch (validation included, as `fit` runs it inside the
epoch), and the validation accuracy after each epoch.

    .venv/bin/python bench/plain_keras.py FOLDER [--size 64] [--batch 32] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import time

import keras


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        self.seconds.append(time.perf_counter() - self.started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    train, val = keras.utils.image_dataset_from_directory(
        args.folder,
        validation_split=0.2,
        subset="both",
        seed=args.seed,
        image_size=(args.size, args.size),
        batch_size=args.batch,
        label_mode="categorical",
    )
    classes = len(train.class_names)
    inputs = keras.Input((args.size, args.size, 3))
    x = keras.applications.mobilenet_v2.preprocess_input(inputs)
    base = keras.applications.MobileNetV2(
        input_shape=(args.size, args.size, 3), include_top=False, weights=None
    )
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    history = model.fit(
        train, validation_data=val, epochs=args.epochs, callbacks=[timer], verbose=0
    )
    print(
        json.dumps(
            {
                "seconds": timer.seconds,
                "val_accuracy": history.history["val_accuracy"],
                "train_images": sum(int(batch[0].shape[0]) for batch in train),
                "val_images": sum(int(batch[0].shape[0]) for batch in val),
            }
        )
    )


if __name__ == "__main__":
    main()
