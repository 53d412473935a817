"""Keras vs ONNX parity, measured rather than assumed."""

from __future__ import annotations

from typing import Any

import dlinfer
import numpy as np

__all__ = ["compare", "compare_batches", "psnr", "run_both"]

# PSNR of identical images is infinite; JSON has no infinity, so it is capped here.
PSNR_CAP_DB = 200.0


def _keras_predict(model: Any, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    return np.concatenate(
        [np.asarray(model.predict_on_batch(x[i : i + chunk])) for i in range(0, len(x), chunk)]
    )


def run_both(keras_model: Any, onnx_model: dlinfer.Model, x: np.ndarray, chunk: int = 256
             ) -> tuple[np.ndarray, np.ndarray]:
    """Keras's and ONNX's outputs for the same input, in chunks."""
    k = _keras_predict(keras_model, x, chunk)
    o = np.concatenate([onnx_model.run(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    return k, o


def psnr(reference: np.ndarray, other: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (capped at PSNR_CAP_DB for identical inputs)."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(other, np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * float(np.log10(peak * peak / mse)))


def compare(
    keras_model: Any,
    onnx_model: dlinfer.Model,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    task: str = "classification",
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Run both models on ``x`` and report the numeric and task-level agreement.

    Always: ``max_abs_diff``.  Classification: ``argmax_agreement`` and, with ``y``,
    both accuracies.  Binary classification: ``threshold_agreement`` (also stored as
    ``argmax_agreement``) and accuracies.  Regression: both RMSEs against ``y``.
    Generation of images: ``psnr_db`` of ONNX against Keras.
    """
    k, o = run_both(keras_model, onnx_model, x)
    if k.shape != o.shape:
        raise AssertionError(f"Keras shape {k.shape} != ONNX shape {o.shape}")
    report: dict[str, Any] = {"samples": int(len(x)), "max_abs_diff": float(np.max(np.abs(k - o)))}
    if task == "classification":
        report["argmax_agreement"] = float(np.mean(k.argmax(-1) == o.argmax(-1)))
        if y is not None:
            report["keras_accuracy"] = float(np.mean(k.argmax(-1) == y))
            report["onnx_accuracy"] = float(np.mean(o.argmax(-1) == y))
    elif task == "binary_classification":
        kp, op = k.reshape(len(k)) >= threshold, o.reshape(len(o)) >= threshold
        report["threshold_agreement"] = report["argmax_agreement"] = float(np.mean(kp == op))
        if y is not None:
            report["keras_accuracy"] = float(np.mean(kp == y.astype(bool)))
            report["onnx_accuracy"] = float(np.mean(op == y.astype(bool)))
    elif task == "regression" and y is not None:
        y = y.reshape(k.shape)
        report["keras_rmse"] = float(np.sqrt(np.mean((k - y) ** 2)))
        report["onnx_rmse"] = float(np.sqrt(np.mean((o - y) ** 2)))
    elif task == "generation" and k.ndim == 4:
        report["psnr_db"] = psnr(k, o)
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
