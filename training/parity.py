"""Keras vs ONNX parity, measured rather than assumed."""

from __future__ import annotations

from typing import Any

import numpy as np

import dlinfer

__all__ = ["compare", "compare_batches"]


def _keras_predict(model: Any, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    return np.concatenate(
        [np.asarray(model.predict_on_batch(x[i : i + chunk])) for i in range(0, len(x), chunk)]
    )


def compare(keras_model: Any, onnx_model: dlinfer.Model, x: np.ndarray, y: np.ndarray | None = None
            ) -> dict[str, Any]:
    """Run both models on ``x`` and report max abs diff, argmax agreement and accuracy."""
    k = _keras_predict(keras_model, x)
    o = np.concatenate([onnx_model.run(x[i : i + 256]) for i in range(0, len(x), 256)])
    report: dict[str, Any] = {
        "samples": int(len(x)),
        "max_abs_diff": float(np.max(np.abs(k - o))),
        "argmax_agreement": float(np.mean(k.argmax(-1) == o.argmax(-1))),
    }
    if y is not None:
        report["keras_accuracy"] = float(np.mean(k.argmax(-1) == y))
        report["onnx_accuracy"] = float(np.mean(o.argmax(-1) == y))
    return report


def compare_batches(keras_model: Any, onnx_model: dlinfer.Model, x: np.ndarray,
                    batch_sizes: tuple[int, ...] = (1, 7, 64)) -> dict[int, float]:
    """Max abs diff per batch size: batching must not change the numbers."""
    result = {}
    for b in batch_sizes:
        k = np.asarray(keras_model.predict_on_batch(x[:b]))
        o = onnx_model.run(x[:b])
        if k.shape != o.shape:
            raise AssertionError(f"batch {b}: Keras shape {k.shape} != ONNX shape {o.shape}")
        result[b] = float(np.max(np.abs(k - o)))
    return result
