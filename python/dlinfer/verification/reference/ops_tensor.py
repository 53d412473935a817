"""Shape plumbing: reshape, slice, gather, cast, pad, constants ... in plain NumPy."""

from __future__ import annotations

import numpy as np

from .node import Node, op


@op("Reshape")
def _reshape(node: Node) -> np.ndarray:
    x, shape = node.input(0), [int(s) for s in node.input(1)]
    if not node.attr("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def _flatten(node: Node) -> np.ndarray:
    x = node.input(0)
    axis = node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis  # axis == ndim is allowed: (prod, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


@op("Slice")
def _slice(node: Node) -> np.ndarray:
    x, starts, ends = node.input(0), node.input(1), node.input(2)
    axes = node.input(3)
    steps = node.input(4)
    axes = range(len(starts)) if axes is None else [int(a) % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps, strict=False):
        index[a] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _axes(node: Node, position: int) -> list[int] | None:
    axes = node.input(position) if len(node.inputs) > position else None
    if axes is None:
        axes = node.attr("axes")
    return None if axes is None else [int(a) for a in axes]


@op("Squeeze")
def _squeeze(node: Node) -> np.ndarray:
    axes = _axes(node, 1)
    x = node.input(0)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


@op("Unsqueeze")
def _unsqueeze(node: Node) -> np.ndarray:
    x = node.input(0)
    axes = sorted(a % (x.ndim + len(_axes(node, 1))) for a in _axes(node, 1))
    for a in axes:
        x = np.expand_dims(x, a)
    return x


@op("Cast")
def _cast(node: Node) -> np.ndarray:
    from onnx import helper

    return node.input(0).astype(helper.tensor_dtype_to_np_dtype(node.attr("to")))


@op("Constant")
def _constant(node: Node) -> np.ndarray:
    from onnx import numpy_helper

    if "value" in node.attrs:
        return numpy_helper.to_array(node.attrs["value"])
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype)
    raise node.unsupported(f"attributes {sorted(node.attrs)}")


@op("Shape")
def _shape(node: Node) -> np.ndarray:
    shape = np.asarray(node.input(0).shape, np.int64)
    return shape[node.attr("start", 0) : node.attr("end", None)]


@op("Pad")
def _pad(node: Node) -> np.ndarray:
    mode = node.attr("mode", "constant")
    if mode != "constant":
        raise node.unsupported(f"mode={mode}")
    x, pads = node.input(0), [int(p) for p in node.input(1)]
    value = node.input(2)
    axes = node.input(3)
    axes = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in axes]
    width = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        if pads[i] < 0 or pads[i + len(axes)] < 0:
            raise node.unsupported("negative pads (cropping)")
        width[a] = (pads[i], pads[i + len(axes)])
    fill = 0 if value is None or value.size == 0 else value.reshape(()).item()
    return np.pad(x, width, constant_values=fill)


op("Identity")(lambda n: n.input(0))
op("Transpose")(lambda n: np.transpose(n.input(0), n.attr("perm")))
op("Concat")(lambda n: np.concatenate(n.inputs, axis=n.attr("axis")))
op("Gather")(lambda n: np.take(n.input(0), n.input(1).astype(np.int64), axis=n.attr("axis", 0)))
