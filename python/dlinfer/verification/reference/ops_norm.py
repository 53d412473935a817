"""Normalizations beyond batch norm: layer, instance, LRN, Lp, MVN; float64 statistics."""

from __future__ import annotations

import numpy as np

from .node import Node, op
from .ops_tensor import axis_of


def _float(node: Node, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind != "f":
        raise node.unsupported(f"dtype {x.dtype}")
    return x.astype(np.float64)


@op("LayerNormalization")
def _layer_norm(node: Node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    node.only("axis", "epsilon", "stash_type")
    x, scale, bias = node.input(0), node.input(1), node.input(2)
    if node.attr("stash_type", 1) != 1:
        raise node.unsupported(f"stash_type={node.attr('stash_type')}")
    axis = axis_of(node, node.attr("axis", -1), x.ndim)
    axes = tuple(range(axis, x.ndim))
    v = _float(node, x)
    mean = v.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(((v - mean) ** 2).mean(axis=axes, keepdims=True)
                        + node.attr("epsilon", 1e-5))
    y = (v - mean) * inv * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), mean.astype(np.float32), inv.astype(np.float32)


@op("InstanceNormalization")
def _instance_norm(node: Node) -> np.ndarray:
    node.only("epsilon")
    x, scale, bias = node.input(0), node.input(1), node.input(2)
    v = _float(node, x)
    axes = tuple(range(2, x.ndim))
    mean = v.mean(axis=axes, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (v - mean) / np.sqrt(var + node.attr("epsilon", 1e-5)) * scale.reshape(shape)
    return (y + bias.reshape(shape)).astype(x.dtype)


@op("MeanVarianceNormalization")
def _mvn(node: Node) -> np.ndarray:
    node.only("axes")
    x = node.input(0)
    v = _float(node, x)
    axes = tuple(axis_of(node, a, x.ndim) for a in node.attr("axes", [0, 2, 3]))
    mean = v.mean(axis=axes, keepdims=True)
    std = np.sqrt(((v - mean) ** 2).mean(axis=axes, keepdims=True))
    return ((v - mean) / (std + 1e-9)).astype(x.dtype)  # the spec's function body adds 1e-9


@op("LpNormalization")
def _lp_norm(node: Node) -> np.ndarray:
    node.only("axis", "p")
    x, p = node.input(0), node.attr("p", 2)
    if p not in (1, 2):
        raise node.unsupported(f"p={p}")
    v = _float(node, x)
    axis = axis_of(node, node.attr("axis", -1), x.ndim)
    norm = np.sum(np.abs(v) ** p, axis=axis, keepdims=True) ** (1.0 / p)
    with np.errstate(all="ignore"):
        return np.where(norm == 0, 0, v / norm).astype(x.dtype)


@op("LRN")
def _lrn(node: Node) -> np.ndarray:
    node.only("alpha", "beta", "bias", "size")
    x = node.input(0)
    v = _float(node, x)
    size = node.attr("size")
    # The window over channels: floor((size-1)/2) before, ceil((size-1)/2) after.
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.pad(v * v, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    total = sum(sq[:, i : i + x.shape[1]] for i in range(size))
    scale = node.attr("bias", 1.0) + node.attr("alpha", 1e-4) / size * total
    return (v / scale ** node.attr("beta", 0.75)).astype(x.dtype)
