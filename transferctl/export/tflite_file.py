"""TFLite for phones and microcontrollers, float or quantized, run with the LiteRT interpreter.

One image per call at the training size, as mobile pipelines feed it (they resize with the
platform's image library); the backbone's preprocessing is inside. Signature `serving_default`:
`image` [1, H, W, 3] -> `probabilities` [1, classes].

Quantization (`--quantize`):
- `none`: float32, the same numbers as Keras up to rounding. Input float32 RGB 0-255.
- `float16`: weights stored as float16 (half the size), computed in float32.
- `dynamic`: weights int8, activations float (quantized on the fly). Input float32.
- `int8`: full integer, calibrated on training images: every tensor int8 (biases int32),
  input and output included. Input int8 = pixel / scale + zero_point, from the input's
  quantization parameters (scale 1, zero point -128 when the calibration images span 0-255);
  output probabilities = (value - zero_point) * scale. A file where any tensor stayed float is
  rejected, never shipped as a silent float model.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.export import extras
from transferctl.export.native import captured_native_output
from transferctl.export.parity import ExportFailed
from transferctl.export.source import Samples
from transferctl.rundir import layout as rundir

SIGNATURE = "serving_default"


def file_name(quantize: str) -> str:
    """`model.tflite` for float32, `model_<quantize>.tflite` otherwise, so both can be kept."""
    return "model.tflite" if quantize == "none" else f"model_{quantize}.tflite"


def write(
    model: Any,
    target: Path,
    image_size: tuple[int, int],
    quantize: str,
    calibration: np.ndarray | None = None,
) -> dict[str, Any]:
    """Convert `model` and write `target`; int8 needs `calibration` images (float32 0-255)."""
    tf = runtime.tf()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [_serving_function(model, image_size).get_concrete_function()], tf.Module()
    )
    configure(converter, quantize, calibration)
    with _quiet():
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # noqa: BLE001 - the converter raises many kinds
            raise ExportFailed(
                f"tflite ({quantize}): the TFLite converter failed: "
                f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            ) from error
    with rundir.atomic_path(target, suffix=".tflite") as temporary:
        temporary.write_bytes(flatbuffer)
    return describe(target)


def configure(converter: Any, quantize: str, calibration: np.ndarray | None) -> None:
    """Set the converter's optimizations for `quantize`."""
    tf = runtime.tf()
    if quantize == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if calibration is None or not len(calibration):
            raise ValueError("int8 quantization needs calibration images")
        images = np.asarray(calibration, dtype=np.float32)
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


def describe(target: Path) -> dict[str, Any]:
    """Input/output dtype, shape and quantization, and how many tensors of each dtype."""
    interpreter = _interpreter(target)
    runner = interpreter.get_signature_runner(SIGNATURE)
    ((input_name, input_details),) = runner.get_input_details().items()
    ((output_name, output_details),) = runner.get_output_details().items()
    counts: dict[str, int] = {}
    for tensor in interpreter.get_tensor_details():
        dtype = np.dtype(tensor["dtype"]).name
        counts[dtype] = counts.get(dtype, 0) + 1
    return {
        "inputs": {input_name: _tensor_json(input_details, "RGB 0-255")},
        "outputs": {output_name: _tensor_json(output_details, "probabilities")},
        "tensor_dtypes": dict(sorted(counts.items())),
    }


def integer_only_problems(target: Path) -> list[str]:
    """Why an int8 file is not full-integer: float input/output, or any float tensor."""
    interpreter = _interpreter(target)
    runner = interpreter.get_signature_runner(SIGNATURE)
    problems = []
    for role, details in (
        ("input", runner.get_input_details()),
        ("output", runner.get_output_details()),
    ):
        for name, tensor in details.items():
            if np.dtype(tensor["dtype"]) != np.int8:
                problems.append(f"{role} {name} is {np.dtype(tensor['dtype']).name}, not int8")
    floats = [
        tensor["name"]
        for tensor in interpreter.get_tensor_details()
        if np.dtype(tensor["dtype"]).kind == "f"
    ]
    if floats:
        problems.append(f"{len(floats)} tensors are floating point (e.g. {', '.join(floats[:3])})")
    return problems


def predict(target: Path, samples: Samples) -> dict[str, np.ndarray]:
    """Run the file in the LiteRT interpreter on the samples, one image per call."""
    return {SIGNATURE: Runner(target)(samples.resized)}


class Runner:
    """A .tflite file in the LiteRT interpreter: float32 RGB 0-255 images [B, H, W, 3] at its
    input size -> probabilities [B, C], one image per call (the file's batch is 1); an int8
    file's input and output are (de)quantized here."""

    def __init__(self, target: Path) -> None:
        self.runner = _interpreter(target).get_signature_runner(SIGNATURE)
        ((self.input_name, self.input_details),) = self.runner.get_input_details().items()
        ((self.output_name, self.output_details),) = self.runner.get_output_details().items()

    @property
    def image_size(self) -> tuple[int, int]:
        shape = self.input_details["shape"]
        return int(shape[1]), int(shape[2])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        outputs = []
        for image in images:
            value = _quantize(image[np.newaxis], self.input_details)
            result = self.runner(**{self.input_name: value})[self.output_name]
            outputs.append(_dequantize(result, self.output_details)[0])
        return np.stack(outputs).astype(np.float32)


def _serving_function(model: Any, image_size: tuple[int, int]) -> Any:
    """A variable-free tf.function for the converter: image [1, H, W, 3] -> probabilities.

    Freezing the weights into constants first converts in about a second; converting the live
    Keras variables leaves READ_VARIABLE ops the interpreter cannot run.
    """
    tf = runtime.tf()
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([1, image_size[0], image_size[1], 3], tf.float32, name="image")
    classify = tf.function(lambda image: model(image, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(classify.get_concrete_function())

    @tf.function(input_signature=[spec])
    def serve(image: Any) -> dict[str, Any]:
        return {"probabilities": frozen(image)[0]}

    return serve


def _interpreter(target: Path) -> Any:
    interpreter_module = extras.load("ai_edge_litert.interpreter", "tflite")
    with _quiet():
        interpreter = interpreter_module.Interpreter(model_path=str(target))
        interpreter.allocate_tensors()
    return interpreter


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), captured_native_output():
        warnings.simplefilter("ignore")
        yield


def _quantize(values: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return values.astype(dtype)
    scale, zero_point = details["quantization"]
    limits = np.iinfo(dtype)
    quantized = np.round(values / scale) + zero_point
    return np.clip(quantized, limits.min, limits.max).astype(dtype)


def _dequantize(values: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if np.dtype(details["dtype"]).kind == "f" or not scale:
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _tensor_json(details: dict[str, Any], meaning: str) -> dict[str, Any]:
    scale, zero_point = details["quantization"]
    entry: dict[str, Any] = {
        "dtype": np.dtype(details["dtype"]).name,
        "shape": [int(size) for size in details["shape"]],
        "meaning": meaning,
    }
    if scale:
        entry["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return entry
