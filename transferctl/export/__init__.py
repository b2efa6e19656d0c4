"""The export stage: a finished run directory in, portable models out, each checked against Keras.

Formats: `saved_model` (raw uint8 images of any size in, probabilities out; resizing and
preprocessing travel inside), `keras` (a `.keras` file that loads with plain Keras), `tflite`
(float, float16, dynamic-range or full-integer int8) and `onnx` (raw uint8 images of any size).
Every export is loaded back with its own runtime and compared with the run's Keras model on the
run's images before the command succeeds; `export.json` records the numbers.

Example:
    request = check_request(Path("runs/flowers-20261122-101500"), ["tflite"], "int8", None)
    for result in export_run(request):
        print(result.summary())
"""

from transferctl.export.parity import ExportFailed, ExportParityError
from transferctl.export.request import FORMATS, QUANTIZATIONS, ExportRequest, check_request
from transferctl.export.stage import ExportResult, export_run

__all__ = [
    "FORMATS",
    "QUANTIZATIONS",
    "ExportFailed",
    "ExportParityError",
    "ExportRequest",
    "ExportResult",
    "check_request",
    "export_run",
]
