"""The accuracy gate: the optimized model against the float32 one, on the same inputs.

The drop is in percentage points: of accuracy when labels are given, else of top-1
agreement with the float32 model (100 minus the agreement).  Outputs that are not class
scores (regression values, generated images) are gated on their relative RMS error
against the float32 outputs, in percent: ``100 * rms(optimized - float32) / rms(float32)``,
so ``max_drop=0.5`` lets a forecast or an image move by 0.5% of its own scale.

The labels come with the data: a ``labels`` array in an ``.npz``, or a labelled folder's
class sub-folders (:mod:`dlinfer.verification.labelled`).  The metrics say how many
samples were measured, with a warning under
:data:`~dlinfer.verification.labelled.SMALL_SAMPLE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from ..runtime.model import Model
from ..verification.labelled import sample_count_note
from ..verification.per_layer import onnxruntime_tensors
from .memory import within

__all__ = ["evaluate", "predicted_classes", "worst_layer"]

_EVAL_BATCH = 256
# Intermediate tensors are compared on this many samples: enough to rank the layers.
_LAYER_SAMPLES = 64


def _outputs(model: Model, batch: Mapping[str, np.ndarray], name: str,
             axes: Mapping[str, Any] | None = None, per_sample: float | None = None
             ) -> np.ndarray:
    from ..runtime.batch_axis import batch_axes, output_axes, run_split

    # Runs cut on each input's own batch axis (runtime.batch_axis); a float16-I/O model
    # takes the same samples in its own float type.
    axes = axes if axes is not None else batch_axes(model)
    merged = run_split(lambda part: model.run({k: _as_input(model, k, v)
                                               for k, v in part.items()}),
                       batch, axes, within(per_sample, _EVAL_BATCH),
                       [o.name for o in model.outputs],
                       output_axes(model, axes))
    return np.atleast_1d(merged[name]).astype(np.float64)


def _as_input(model: Model, name: str, x: np.ndarray) -> np.ndarray:
    dtype = next(t.dtype for t in model.inputs if t.name == name)
    return x.astype(dtype) if x.dtype.kind == "f" and dtype.kind == "f" else x


def predicted_classes(scores: np.ndarray, threshold: float | None) -> np.ndarray | None:
    """Predicted classes when ``scores`` are class scores (N, C), else None; one sigmoid
    unit (N, 1) is class 1 at or above ``threshold`` (default 0.5)."""
    flat = scores.reshape(len(scores), -1)
    if scores.ndim != 2:
        return None
    if flat.shape[1] > 1:
        return flat.argmax(axis=1)
    return (flat[:, 0] >= (0.5 if threshold is None else threshold)).astype(np.int64)


def evaluate(reference: Model, candidate: Model, batch: Mapping[str, np.ndarray],
             labels: np.ndarray | None, output: str, threshold: float | None = None,
             kind: str | None = None, axes: Mapping[str, Any] | None = None,
             per_sample: float | None = None) -> dict[str, Any]:
    """Metrics of ``candidate`` against ``reference`` on ``batch``, with the gated
    ``drop_points`` (see the module doc).  ``kind``: the spec's output kind; without
    one, 2-D outputs are taken as class scores.  ``axes``: each input's batch axis
    (default: the rule of :mod:`dlinfer.runtime.batch_axis` for ``reference``).
    ``per_sample``: activation bytes per sample (:mod:`.memory`), which bound a run."""
    want = _outputs(reference, batch, output, axes, per_sample)
    got = _outputs(candidate, batch, output, axes, per_sample)
    diff = np.abs(got - want)
    metrics: dict[str, Any] = {"samples": len(want), "output": output,
                               "max_abs_diff": float(diff.max()),
                               "mean_abs_diff": float(diff.mean()),
                               "metric": None, "drop_points": None,
                               "warning": sample_count_note(len(want))}
    ref_classes = predicted_classes(want, threshold)
    classes = predicted_classes(got, threshold)
    if ref_classes is None or classes is None or kind in ("value", "images"):
        scale = float(np.sqrt(np.mean(want ** 2)))
        error = float(np.sqrt(np.mean(diff ** 2)))
        relative = 100.0 * error / scale if scale > 0 else (0.0 if error == 0 else np.inf)
        metrics.update(metric="relative_rms_error", relative_rms_error_pct=relative,
                       drop_points=relative)
        return metrics
    agreement = float(np.mean(ref_classes == classes))
    metrics.update(top1_agreement=agreement, metric="top1_agreement",
                   drop_points=100.0 * (1.0 - agreement))
    if labels is not None:
        before = float(np.mean(ref_classes == labels))
        after = float(np.mean(classes == labels))
        metrics.update(accuracy_float32=before, accuracy=after, metric="accuracy",
                       drop_points=100.0 * (before - after))
    return metrics


def _run_all(model: onnx.ModelProto, batch: Mapping[str, np.ndarray], names: list[str]
             ) -> dict[str, np.ndarray]:
    feed = {k: v[:_LAYER_SAMPLES] if np.ndim(v) else v for k, v in batch.items()}
    return onnxruntime_tensors(model, feed, names)


def _matching_tensors(reference: onnx.ModelProto, candidate: onnx.ModelProto
                      ) -> dict[str, str]:
    """Reference tensor name -> the candidate tensor holding the same value.

    Converters keep the float graph's tensor names.  A QDQ graph is the exception that
    needs care: what downstream layers see is ``X_DequantizeLinear_Output``, and where the
    quantizer folds a Relu into its quantization range, the Relu's output name is
    reused for the Conv before it, so a name alone can point at a different value.
    """
    producer = {out: node.op_type for node in candidate.graph.node for out in node.output}
    qdq = "QuantizeLinear" in producer.values()
    pairs = {}
    for node in reference.graph.node:
        for name in node.output[:1]:
            dequantized = f"{name}_DequantizeLinear_Output"
            if dequantized in producer:
                pairs[name] = dequantized
            elif name in producer and (not qdq or producer[name] in (node.op_type,
                                                                     "DequantizeLinear")):
                pairs[name] = name
    return pairs


def _inherited(node: onnx.NodeProto, error: dict[str, float],
               producers: dict[str, onnx.NodeProto]) -> float:
    """The largest error among the nearest compared tensors upstream of ``node``.

    Walks past tensors that were not compared (fused away, or integer), so a layer
    right after a fused pair is measured against what it really received.
    """
    worst, seen, todo = 0.0, set(), list(node.input)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in error:
            worst = max(worst, error[name])
        elif name in producers:
            todo.extend(producers[name].input)
    return worst


def worst_layer(reference: onnx.ModelProto, candidate: onnx.ModelProto,
                batch: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """The float32 model's node whose output error grows most over its inputs' error.

    Every tensor both graphs compute (see :func:`_matching_tensors`) is compared by
    relative error ``|a - b| / |a|``.  A
    node's contribution is its output's error minus the largest error among its inputs,
    so a layer that only passes on its parent's error does not take the blame.
    """
    pairs = _matching_tensors(reference, candidate)
    nodes = [n for n in reference.graph.node if n.output and n.output[0] in pairs]
    names = [n.output[0] for n in nodes]
    if not names:
        return None
    try:
        want = _run_all(reference, batch, names)
        theirs = [pairs[n] for n in names]
        got = dict(zip(names, _run_all(candidate, batch, theirs).values()))
    except Exception:  # noqa: BLE001 - a diagnosis that cannot run leaves the gate's verdict
        return None
    error: dict[str, float] = {}
    for name in names:
        a, b = np.asarray(want[name]), np.asarray(got[name])
        if a.dtype.kind != "f" or a.shape != b.shape:
            continue
        a, b = a.astype(np.float64), b.astype(np.float64)
        error[name] = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))
    producers = {out: n for n in reference.graph.node for out in n.output}
    best: dict[str, Any] | None = None
    for node in nodes:
        out = node.output[0]
        if out not in error:
            continue
        inherited = _inherited(node, error, producers)
        growth = error[out] - inherited
        if best is None or growth > best["added_error"]:
            best = {"node": node.name or out, "op": node.op_type, "tensor": out,
                    "relative_error": error[out], "added_error": growth}
    return best
