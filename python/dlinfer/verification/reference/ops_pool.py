"""Pooling of any rank, dilation and dtype, and MaxPool's Indices, in plain NumPy.

The 2-D float32 cases without dilation or Indices run on dlinfer's kernels
(ops_nn); this is the literal tap-by-tap version for the rest.
"""

from __future__ import annotations

import itertools

import numpy as np

from .node import Node


def pool_geometry(node: Node, spatial: tuple[int, ...], kernel: list[int], strides: list[int],
                  dilations: list[int], ceil_mode: bool) -> tuple[list[int], list[int], list[int]]:
    """(output size, begin pads, end pads) per spatial axis, as ONNX defines them."""
    n = len(spatial)
    auto_pad = node.attr("auto_pad", "NOTSET")
    out, begin, end = [], [], []
    pads = list(node.attr("pads", [0] * 2 * n))
    if len(pads) != 2 * n:
        raise ValueError(f"{len(pads)} pads for {n} spatial axes")
    for a in range(n):
        eff = (kernel[a] - 1) * dilations[a] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-spatial[a] // strides[a])
            total = max((o - 1) * strides[a] + eff - spatial[a], 0)
            small = total // 2
            b, e = (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
        elif auto_pad == "VALID":
            b = e = 0
            span = spatial[a] - eff
            o = (-(-span // strides[a]) if ceil_mode else span // strides[a]) + 1
        elif auto_pad == "NOTSET":
            b, e = pads[a], pads[a + n]
        else:
            raise node.unsupported(f"auto_pad={auto_pad}")
        if auto_pad in ("NOTSET",):
            span = spatial[a] + b + e - eff
            o = (-(-span // strides[a]) if ceil_mode else span // strides[a]) + 1
            # A last window must start inside the input or the leading pad (PyTorch's rule).
            if ceil_mode and (o - 1) * strides[a] >= spatial[a] + b:
                o -= 1
        out.append(max(o, 0))
        begin.append(b)
        end.append(e)
    return out, begin, end


def pool_nd(node: Node, x: np.ndarray, kind: str) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """MaxPool, AveragePool or LpPool over the axes after (N, C)."""
    spatial = x.shape[2:]
    n = len(spatial)
    kernel = list(node.attr("kernel_shape"))
    strides = list(node.attr("strides", [1] * n))
    dil = list(node.attr("dilations", [1] * n))
    ceil_mode = bool(node.attr("ceil_mode", 0))
    out, begin, end = pool_geometry(node, spatial, kernel, strides, dil, ceil_mode)
    # Room for every tap of every window, the ceil_mode overhang included.
    need = [(out[a] - 1) * strides[a] + (kernel[a] - 1) * dil[a] + 1 for a in range(n)]
    after = [max(need[a] - begin[a] - spatial[a], 0) for a in range(n)]
    width = [(0, 0), (0, 0)] + [(begin[a], after[a]) for a in range(n)]
    inside = np.pad(np.ones(spatial, bool), width[2:])
    # Taps inside the explicit pads count for count_include_pad; the overhang never does.
    in_pads = np.pad(np.ones([spatial[a] + begin[a] + end[a] for a in range(n)], bool),
                     [(0, max(after[a] - end[a], 0)) for a in range(n)])
    in_pads = in_pads[tuple(slice(0, inside.shape[a]) for a in range(n))]
    if kind == "max":
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp = np.pad(x, width, constant_values=low)
    else:
        xp = np.pad(x.astype(np.float64), width)
    # Indices count row-major, or column-major over the spatial axes for storage_order=1.
    order = "F" if node.attr("storage_order", 0) else "C"
    flat = np.arange(int(np.prod(spatial)), dtype=np.int64).reshape(spatial, order=order)
    flat = np.pad(flat, width[2:])
    best = idx = total = count = None
    p = node.attr("p", 2)
    for tap in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(tap[a] * dil[a], tap[a] * dil[a] + (out[a] - 1) * strides[a] + 1,
                             strides[a]) for a in range(n))
        v = xp[(slice(None), slice(None)) + window]
        if kind == "max":
            if best is None:
                best, idx = v.copy(), np.broadcast_to(flat[window], v.shape).copy()
            else:
                better = v > best
                best = np.where(better, v, best)
                idx = np.where(better, flat[window], idx)
            continue
        term = np.abs(v) ** p if kind == "lp" else v
        c = (in_pads if node.attr("count_include_pad", 0) else inside)[window]
        total = term if total is None else total + term
        count = c.astype(np.int64) if count is None else count + c
    if kind == "max":
        if node.wants(1):
            offset = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(
                x.shape[:2] + (1,) * n) * int(np.prod(spatial))
            return best.astype(x.dtype), idx + offset
        return best.astype(x.dtype)
    if kind == "lp":
        return (total ** (1.0 / p)).astype(x.dtype)
    with np.errstate(all="ignore"):
        return (total / count).astype(x.dtype)
