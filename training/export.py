"""Keras -> ONNX export through tf2onnx, with dlinfer's spec in the metadata.

``tf2onnx.convert.from_keras`` fails on Keras 3 (``KeyError: 'keras_tensor_N'``),
so the model is traced as a ``tf.function`` with a named ``TensorSpec`` and
converted with ``from_function``.  The function returns a dict, which names the
ONNX output; otherwise it would come out as ``Identity:0``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx

from dlinfer.spec import METADATA_KEY, InputSpec, ModelSpec, OutputSpec

from ._tf import keras, tf

__all__ = ["IR_VERSION", "OPSET", "set_spec", "to_onnx", "versions"]

# Opset 17 covers every op the zoo needs (LayerNormalization-free, so no need for
# 18+), and IR version 8 is what opset 17 implies; onnxruntime 1.31 loads IR <= 11.
OPSET = 17
IR_VERSION = 8


def versions() -> dict[str, str]:
    import tf2onnx

    import dlinfer

    return {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "opset": str(OPSET),
        "dlinfer": dlinfer.__version__,
    }


def _input_signature(model: Any, input_name: str) -> tf.TensorSpec:
    if len(model.inputs) != 1:
        raise ValueError(f"to_onnx handles single-input models; {model.name} has {len(model.inputs)}")
    shape = list(model.inputs[0].shape)
    shape[0] = None  # a dynamic batch dimension, whatever the model was built with
    dtype = tf.as_dtype(model.inputs[0].dtype)
    return tf.TensorSpec(shape, dtype, name=input_name)


def set_spec(proto: onnx.ModelProto, spec: ModelSpec) -> None:
    """Write (or replace) the dlinfer spec in the model's metadata_props."""
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    proto.metadata_props.add(key=METADATA_KEY, value=spec.to_json())


def to_onnx(
    model: Any,
    path: str | None = None,
    *,
    name: str | None = None,
    task: str = "classification",
    labels: list[str] | tuple[str, ...] = (),
    input_name: str = "images",
    input_kind: str = "image",
    output_name: str = "probabilities",
    output_kind: str = "probabilities",
    color: str | None = None,
    scale: float = 1.0 / 255.0,
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
    threshold: float | None = None,
    parity: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> onnx.ModelProto:
    """Convert a Keras 3 model to ONNX with named input/output and dlinfer metadata.

    Returns the ModelProto and, when ``path`` is given, saves it there.
    """
    import tf2onnx

    signature = _input_signature(model, input_name)

    @tf.function(input_signature=[signature])
    def inference(x):  # noqa: ANN001 - traced by TensorFlow
        return {output_name: model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(inference, input_signature=[signature], opset=OPSET)
    proto.ir_version = IR_VERSION
    proto.producer_name = "dlinfer.training"

    shape = tuple(None if d is None else int(d) for d in signature.shape)
    if input_kind == "image" and color is None:
        color = "GRAY" if shape[-1] == 1 else "RGB"
    spec = ModelSpec(
        name=name or model.name,
        task=task,
        input=InputSpec(
            name=input_name,
            shape=shape,
            dtype=np.dtype(signature.dtype.as_numpy_dtype).name,
            kind=input_kind,
            layout="NHWC" if input_kind == "image" else "NC",
            color=color if input_kind == "image" else None,
            scale=float(scale),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        ),
        output=OutputSpec(name=output_name, kind=output_kind),
        labels=tuple(labels),
        threshold=threshold,
        versions=versions(),
        parity=dict(parity or {}),
        extra=dict(extra or {}),
    )
    set_spec(proto, spec)
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, path)
    return proto


def read_spec(path: str) -> dict[str, Any]:
    proto = onnx.load(path, load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise KeyError(f"{path} has no {METADATA_KEY} metadata")
