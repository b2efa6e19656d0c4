"""The evaluation stage: a finished run and held-out images in, metrics and files out.

`evaluate(run_dir)` rebuilds the run's split from its resolved config (same seed, same split),
or reads another folder with the same classes (`data=`), runs `model.keras` over it a batch at a
time, and keeps only each image's true label and class probabilities, never the images. Every
metric is then computed once, from those predictions, with scikit-learn. The results go to
`RUN_DIR/eval/<split>/` (docs/run-directory.md): `metrics.json`, `confusion_matrix.csv`,
`confusion_matrix.png` and `predictions.csv`; a second evaluation replaces them atomically.

- `evaluation`: the stage itself and what it returns.
- `target`: which images (the run's split, or another folder of its classes).
- `metrics`: the model over the images, and every number of metrics.json.
- `results`: the files of eval/<split>/; `confusion`: the confusion-matrix picture.

Example:
    result = evaluate(Path("runs/flowers-20261122-101500"), split="val")
    print(result.metrics["accuracy"], result.output_dir)
"""

from transferctl.evaluate.evaluation import Evaluation, evaluate
from transferctl.evaluate.metrics import (
    DecodeFailed,
    Progress,
    collect_predictions,
    compute_metrics,
    cross_entropy,
    most_confused,
    most_confused_pairs,
    top_losses,
)
from transferctl.evaluate.results import CONFUSION_MATRIX_MAX_CLASSES, write_results
from transferctl.evaluate.target import PREFERRED

__all__ = [
    "CONFUSION_MATRIX_MAX_CLASSES",
    "PREFERRED",
    "DecodeFailed",
    "Evaluation",
    "Progress",
    "collect_predictions",
    "compute_metrics",
    "cross_entropy",
    "evaluate",
    "most_confused",
    "most_confused_pairs",
    "top_losses",
    "write_results",
]
