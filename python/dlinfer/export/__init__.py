"""Keras -> ONNX, with dlinfer's spec in the file's metadata.

``dlinfer.export.to_onnx(model, "model.onnx", labels=[...])`` or
``dlinfer export model.keras --out model.onnx``.  Needs the ``export`` extra
(TensorFlow, tf2onnx, onnx), imported only when an export runs.
"""

from __future__ import annotations

from ..errors import ExportError
from .keras import (
    IR_VERSION,
    OPSET,
    RANDOM_OPS,
    export_file,
    inference_model,
    is_augmentation,
    random_nodes,
    read_spec,
    set_spec,
    to_onnx,
    versions,
)

__all__ = [
    "IR_VERSION",
    "OPSET",
    "RANDOM_OPS",
    "ExportError",
    "export_file",
    "inference_model",
    "is_augmentation",
    "random_nodes",
    "read_spec",
    "set_spec",
    "to_onnx",
    "versions",
]
