"""ONNX for onnxruntime and the inference stacks that take it: raw images in, probabilities out.

Input `image` uint8 [batch, height, width, 3], any height and width (RGB, NHWC); output
`probabilities` float32 [batch, classes]. Resizing (antialiased bilinear, as training, written as
two matrix products because tf2onnx cannot convert `ScaleAndTranslate`) and preprocessing run
inside. The class names and input size are also stored in the file's metadata properties.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferctl import runtime
from transferctl.export import extras
from transferctl.export.native import captured_native_output
from transferctl.export.parity import ExportFailed
from transferctl.export.serving import resize_by_matmul
from transferctl.export.source import Samples
from transferctl.rundir import layout as rundir

NAME = "model.onnx"
OPSET = 17
INPUT = "image"
OUTPUT = "probabilities"


def write(
    model: Any, target: Path, image_size: tuple[int, int], class_names: list[str]
) -> dict[str, Any]:
    tf = runtime.tf()
    tf2onnx = _tf2onnx()
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT)
    _constant_tensors_as_arrays(model)

    @tf.function(input_signature=[spec])
    def classify(image: Any) -> dict[str, Any]:
        return {OUTPUT: model(resize_by_matmul(image, image_size), training=False)}

    with captured_native_output():
        proto, _ = tf2onnx.convert.from_function(
            classify,
            input_signature=[spec],
            opset=OPSET,
            custom_op_handlers={"Erfc": (_erfc_as_erf, [])},
        )
    onnx = extras.load("onnx", "onnx")
    try:  # tf2onnx leaves an op it cannot convert in the graph and only logs it
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ExportFailed(
            f"onnx: tf2onnx produced an invalid graph: {str(error).strip().splitlines()[0]}"
        ) from None
    _name_dimensions(proto)
    for key, value in (
        ("class_names", json.dumps(class_names)),
        ("input_size", json.dumps(list(image_size))),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with rundir.atomic_path(target, suffix=".onnx") as temporary:
        temporary.write_bytes(proto.SerializeToString())
    return {
        "opset": OPSET,
        "inputs": {INPUT: {"dtype": "uint8", "shape": ["batch", "height", "width", 3]}},
        "outputs": {OUTPUT: {"dtype": "float32", "shape": ["batch", len(class_names)]}},
        "note": "RGB pixels (NHWC) of any size; resized (bilinear, antialiased) and "
        "preprocessed inside",
    }


def predict(target: Path, samples: Samples) -> dict[str, np.ndarray]:
    """Run the file in onnxruntime on the samples as decoded (their own sizes)."""
    return {"model": Runner(target)(samples.raw)}


class Runner:
    """model.onnx in onnxruntime: uint8 RGB images of any size (each its own call, or one
    batch of one size) -> probabilities [B, C]."""

    def __init__(self, target: Path) -> None:
        onnxruntime = extras.load("onnxruntime", "onnx")
        self.session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        if isinstance(images, np.ndarray):  # one batch, one size
            return np.asarray(self.session.run([OUTPUT], {INPUT: images})[0], np.float32)
        outputs = [self.session.run([OUTPUT], {INPUT: raw[np.newaxis]})[0][0] for raw in images]
        return np.stack(outputs).astype(np.float32)


def _tf2onnx() -> Any:
    tf2onnx = extras.load("tf2onnx", "onnx")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:  # tf2onnx 1.17 still uses numpy 1 names; Keras ships the patch it uses for export
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:
        pass
    else:
        patch_tf2onnx()
    return tf2onnx


def _constant_tensors_as_arrays(model: Any) -> None:
    """Layers' constant eager tensors (a KerasHub ViT's `position_ids`) as numpy arrays.

    Traced, a captured tensor becomes an input of the function, which tf2onnx leaves as a
    required graph input ("Required inputs ... are missing"); an array becomes a constant.
    """
    tf = runtime.tf()
    for layer in model._flatten_layers(include_self=False):
        for key, value in list(vars(layer).items()):
            constant = isinstance(value, tf.Tensor) and not isinstance(value, tf.Variable)
            if constant and hasattr(value, "numpy"):  # eager, not a symbolic graph tensor
                object.__setattr__(layer, key, value.numpy())


def _erfc_as_erf(graph: Any, node: Any, name: str, args: Any) -> None:
    """`Erfc(x)` as `1 - Erf(x)`: ONNX has no Erfc, and TensorFlow's exact GELU (a KerasHub
    ViT's MLP) computes with it."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(graph.get_dtype(node.input[0]))
    erf = graph.make_node("Erf", [node.input[0]])
    one = graph.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    graph.replace_inputs(node, [one.output[0], erf.output[0]])


def _name_dimensions(proto: Any) -> None:
    """tf2onnx names free dimensions `unk__123`; name them for what they are."""
    for value, names in (
        (proto.graph.input[0], ("batch", "height", "width")),
        (proto.graph.output[0], ("batch",)),
    ):
        for dimension, name in zip(value.type.tensor_type.shape.dim, names, strict=False):
            if dimension.dim_param:
                dimension.dim_param = name
