"""Reductions and arg-reductions, in plain NumPy (float64 accumulation for floats)."""

from __future__ import annotations

import numpy as np

from .node import Node, op
from .ops_tensor import axes_of, axis_of, check_dtype


def _extreme(x: np.ndarray, fn, empty_value: float) -> np.ndarray:
    # ONNX defines the max (min) of an empty set as -inf (inf), or the type's limit.
    if x.dtype.kind == "f":
        return empty_value
    info = np.iinfo(x.dtype) if x.dtype.kind in "iu" else None
    if info is None:
        return bool(empty_value > 0)
    return info.max if empty_value > 0 else info.min


def _reduce(kind: str):
    def run(node: Node) -> np.ndarray:
        node.only("axes", "keepdims", "noop_with_empty_axes")
        x = check_dtype(node, node.input(0))
        axes = axes_of(node, 1)
        if not axes:
            if node.attr("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        axes = tuple(sorted({axis_of(node, a, x.ndim) for a in axes}))
        keep = bool(node.attr("keepdims", 1))
        wide = x.astype(np.float64) if x.dtype.kind == "f" else x
        with np.errstate(all="ignore"):
            if kind == "Max":
                out = np.max(x, axis=axes, keepdims=keep, initial=_extreme(x, np.max, -np.inf))
            elif kind == "Min":
                out = np.min(x, axis=axes, keepdims=keep, initial=_extreme(x, np.min, np.inf))
            elif kind == "Sum":
                out = np.sum(wide, axis=axes, keepdims=keep)
            elif kind == "Mean":
                if x.dtype.kind != "f":
                    raise node.unsupported(f"dtype {x.dtype}")
                out = np.mean(wide, axis=axes, keepdims=keep)
            elif kind == "Prod":
                out = np.prod(wide, axis=axes, keepdims=keep)
            elif kind == "SumSquare":
                out = np.sum(wide * wide, axis=axes, keepdims=keep)
            elif kind == "L1":
                out = np.sum(np.abs(wide), axis=axes, keepdims=keep)
            elif kind == "L2":
                out = np.sqrt(np.sum(wide * wide, axis=axes, keepdims=keep))
            elif kind == "LogSum":
                out = np.log(np.sum(wide, axis=axes, keepdims=keep))
            else:  # LogSumExp, max-shifted so that large inputs stay finite
                if x.dtype.kind != "f":
                    raise node.unsupported(f"dtype {x.dtype}")
                if x.size == 0:
                    out = np.log(np.sum(np.exp(wide), axis=axes, keepdims=keep))
                else:
                    m = np.max(wide, axis=axes, keepdims=True)
                    m = np.where(np.isfinite(m), m, 0)
                    out = np.log(np.sum(np.exp(wide - m), axis=axes, keepdims=True)) + m
                    out = out if keep else np.squeeze(out, axis=axes)
        if x.dtype.kind != "f" and kind == "L2":
            out = np.round(out)  # ONNX's integer L2 rounds the root, not truncates
        return np.asarray(out).astype(x.dtype)
    return run


for _kind in ("Max", "Min", "Sum", "Mean", "Prod", "SumSquare", "L1", "L2", "LogSum",
              "LogSumExp"):
    op(f"Reduce{_kind}")(_reduce(_kind))


@op("ArgMax", "ArgMin")
def _arg(node: Node) -> np.ndarray:
    node.only("axis", "keepdims", "select_last_index")
    x = check_dtype(node, node.input(0))
    axis = axis_of(node, node.attr("axis", 0), x.ndim)
    fn = np.argmax if node.op == "ArgMax" else np.argmin
    if node.attr("select_last_index", 0):
        idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
    else:
        idx = fn(x, axis=axis)
    if node.attr("keepdims", 1):
        idx = np.expand_dims(idx, axis)
    return idx.astype(np.int64)
