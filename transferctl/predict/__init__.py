"""The predict stage: a trained model and image files in, the top-k labels of each image out.

- `classifier`: the model (a run directory, a `.keras` file, an export folder or a SavedModel),
  its class names and input size.
- `images`: the image files under the paths given, read and resized as training does.
- `prediction`: the files through the model a batch at a time, top-k labels out; an unreadable
  file is reported and skipped, never fatal (`predict` then exits 3, `errors.EXIT_SKIPPED`).

Example:
    classifier = load_classifier(Path("runs/flowers-20261122-101500"))
    files = find_images([Path("photos")])
    for item in predict_images(classifier, files, top_k=3):
        print(item)
"""

from transferctl.predict.classifier import (
    Classifier,
    KerasClassifier,
    SavedModelClassifier,
    load_classifier,
    load_keras_model,
)
from transferctl.predict.images import (
    IMAGE_SUFFIXES,
    Skipped,
    UnreadableImage,
    find_images,
    read_image,
)
from transferctl.predict.prediction import Prediction, predict_images, top_labels

__all__ = [
    "IMAGE_SUFFIXES",
    "Classifier",
    "KerasClassifier",
    "Prediction",
    "SavedModelClassifier",
    "Skipped",
    "UnreadableImage",
    "find_images",
    "load_classifier",
    "load_keras_model",
    "predict_images",
    "read_image",
    "top_labels",
]
