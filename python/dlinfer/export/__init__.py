"""Keras -> ONNX, with dlinfer's spec in the file's metadata.

``dlinfer.export.to_onnx(model, "model.onnx", labels=[...])`` or
``dlinfer export model.keras --out model.onnx``.  Needs the ``export`` extra
(TensorFlow, tf2onnx, onnx), imported only when an export runs.
"""

from __future__ import annotations

from .keras import *  # noqa: F403 - the exporter's public names, listed once in keras.py
from .keras import __all__  # noqa: F401
