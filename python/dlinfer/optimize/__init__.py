"""Lighter and faster deployments: int8, float16 or offline-optimized graphs, gated on accuracy.

``optimize(model, out, mode=...)`` converts a float32 ONNX model, evaluates the result
against the float32 model on held-out data, and writes ``out`` only when the drop is
within ``max_drop`` points.  The report is returned, stored in the output's spec
(``extra["optimize"]``) and, with ``json_path``, written as JSON::

    int8    static QDQ quantization (onnxruntime), calibrated on the model's own inputs
    fp16    float16 weights and compute, float32 inputs and outputs kept
    graph   onnxruntime's offline-optimized graph, for the provider it was made for

Nothing here imports TensorFlow; onnxruntime's quantization tools load on first use.
"""

from __future__ import annotations

from .run import MODES, OptimizeReport, optimize

__all__ = ["MODES", "OptimizeReport", "optimize"]
