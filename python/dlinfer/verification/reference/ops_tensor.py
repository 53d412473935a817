"""Shape plumbing: reshape, slice, cast, pad, tile, split, constants ... in plain NumPy."""

from __future__ import annotations

import numpy as np

from .node import Node, op

# ONNX element types NumPy holds exactly.  bfloat16, the float8 and 4-bit types and
# strings are refused: NumPy would round or wrap them differently from ONNX.
_NUMPY_TYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
    7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


def numpy_type(node: Node, onnx_type: int) -> type:
    """The NumPy type of an ONNX element type, or a refusal naming it."""
    if onnx_type not in _NUMPY_TYPES:
        from onnx import TensorProto

        raise node.unsupported(f"the element type {TensorProto.DataType.Name(onnx_type)}")
    return _NUMPY_TYPES[onnx_type]


def check_dtype(node: Node, x: np.ndarray) -> np.ndarray:
    """Refuse arrays of types outside :data:`_NUMPY_TYPES` (ml_dtypes, strings, objects)."""
    if x.dtype not in {np.dtype(t) for t in _NUMPY_TYPES.values()}:
        raise node.unsupported(f"dtype {x.dtype}")
    return x


def axis_of(node: Node, axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"axis {axis} is out of range for rank {ndim}")
    return axis % max(ndim, 1)


@op("Reshape")
def _reshape(node: Node) -> np.ndarray:
    node.only("allowzero", "shape", "consumed_inputs")
    x = node.input(0)
    shape = node.input(1) if node.input(1) is not None else node.attr("shape")
    shape = [int(s) for s in shape]
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
    x = node.input(0)
    if len(node.inputs) == 1:  # opset 1-9: starts, ends, axes as attributes
        starts, ends, axes, steps = (node.attr("starts"), node.attr("ends"),
                                     node.attr("axes"), None)
    else:
        starts, ends, axes, steps = node.input(1), node.input(2), node.input(3), node.input(4)
    axes = range(len(starts)) if axes is None else [axis_of(node, int(a), x.ndim) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        if int(st) == 0:
            raise ValueError("a slice step of 0")
        index[a] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def axes_of(node: Node, position: int) -> list[int] | None:
    """Axes from input ``position`` (newer opsets) or the ``axes`` attribute (older)."""
    axes = node.input(position)
    if axes is None:
        axes = node.attr("axes")
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


@op("Squeeze")
def _squeeze(node: Node) -> np.ndarray:
    axes = axes_of(node, 1)
    x = node.input(0)
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(axis_of(node, a, x.ndim) for a in axes))


@op("Unsqueeze")
def _unsqueeze(node: Node) -> np.ndarray:
    x, axes = node.input(0), axes_of(node, 1)
    if axes is None:
        raise ValueError("Unsqueeze without axes")
    rank = x.ndim + len(axes)
    axes = sorted(axis_of(node, a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axes {axes}")
    for a in axes:
        x = np.expand_dims(x, a)
    return x


# Cast also reaches the types ml_dtypes (onnx's own dependency) holds: bfloat16, the
# float8 and 4-/2-bit types.  ml_dtypes rounds to nearest even, as ONNX does; what it
# leaves to the caller is float8 saturation, done here.  FLOAT8E8M0 (its round_mode)
# and strings are refused.
_CAST_REFUSED = {8: "STRING", 24: "FLOAT8E8M0"}


def _cast_target(node: Node) -> np.dtype:
    if node.op == "CastLike":
        return node.input(1).dtype
    to = node.attr("to")
    if to in _NUMPY_TYPES:
        return np.dtype(_NUMPY_TYPES[to])
    if to in _CAST_REFUSED:
        raise node.unsupported(f"the element type {_CAST_REFUSED[to]}")
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, ValueError, TypeError):
        raise node.unsupported(f"the element type {to}") from None


@op("Cast", "CastLike")
def _cast(node: Node) -> np.ndarray:
    node.only("to", "saturate")
    x = node.input(0)
    to = _cast_target(node)
    for dtype in (x.dtype, to):
        if dtype.kind in "OUS" or dtype.name == "float8_e8m0fnu":
            raise node.unsupported(f"dtype {dtype}")
    if to.name.startswith("float8") and x.dtype.kind in "fV" and node.attr("saturate", 1):
        import ml_dtypes

        v = x.astype(np.float32)
        big = float(ml_dtypes.finfo(to).max)
        # Saturation: out-of-range values and infinities become the largest finite value.
        return np.where(np.isnan(v), v, np.clip(v, -big, big)).astype(to)
    return x.astype(to)


@op("Constant")
def _constant(node: Node) -> np.ndarray:
    from onnx import numpy_helper

    if "value" in node.attrs:
        return check_dtype(node, numpy_helper.to_array(node.attrs["value"]))
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype)
    raise node.unsupported(f"attributes {sorted(node.attrs)}")


@op("ConstantOfShape")
def _constant_of_shape(node: Node) -> np.ndarray:
    from onnx import numpy_helper

    value = node.attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else numpy_helper.to_array(value)
    check_dtype(node, fill)
    return np.full([int(s) for s in node.input(0)], fill.reshape(-1)[0], fill.dtype)


@op("Shape")
def _shape(node: Node) -> np.ndarray:
    shape = np.asarray(node.input(0).shape, np.int64)
    return shape[node.attr("start", 0) : node.attr("end", None)]


op("Size")(lambda n: np.asarray(n.input(0).size, np.int64))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@op("Pad")
def _pad(node: Node) -> np.ndarray:
    node.only("mode", "pads", "paddings", "value")
    mode = node.attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise node.unsupported(f"mode={mode}")
    x = node.input(0)
    if node.input(1) is not None:
        pads, value, axes = node.input(1), node.input(2), node.input(3)
    else:  # opset 1 (paddings) and 2-10 (pads): attributes
        pads = node.attr("pads", node.attr("paddings"))
        value, axes = np.asarray(node.attr("value", 0.0)), None
    pads = [int(p) for p in pads]
    axes = list(range(x.ndim)) if axes is None else [axis_of(node, int(a), x.ndim) for a in axes]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"{len(pads)} pads for {len(axes)} axes")
    width = [(0, 0)] * x.ndim
    crop = [slice(None)] * x.ndim
    for i, a in enumerate(axes):
        begin, end = pads[i], pads[i + len(axes)]
        # Negative pads crop; done first, as onnxruntime does.
        crop[a] = slice(-min(begin, 0), x.shape[a] + min(end, 0))
        width[a] = (max(begin, 0), max(end, 0))
    x = x[tuple(crop)]
    if mode == "constant":
        fill = 0 if value is None or value.size == 0 else value.reshape(()).item()
        return np.pad(x, width, constant_values=fill)
    if any(w != (0, 0) and x.shape[a] == 0 for a, w in enumerate(width)):
        raise ValueError(f"mode={mode} cannot pad an empty axis")
    if mode == "reflect" and any(max(w) >= x.shape[a] for a, w in enumerate(width) if w != (0, 0)):
        raise node.unsupported("reflect pads as wide as the axis")
    return np.pad(x, width, mode=_PAD_MODES[mode])


@op("Tile")
def _tile(node: Node) -> np.ndarray:
    x, repeats = node.input(0), [int(r) for r in node.input(1)]
    if len(repeats) != x.ndim:
        raise ValueError(f"{len(repeats)} repeats for rank {x.ndim}")
    return np.tile(x, repeats)


@op("Expand")
def _expand(node: Node) -> np.ndarray:
    x, shape = node.input(0), tuple(int(s) for s in node.input(1))
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, shape)))


@op("Range")
def _range(node: Node) -> np.ndarray:
    start, limit, delta = (node.input(i).reshape(()) for i in range(3))
    # ONNX fixes the count first: max(ceil((limit - start) / delta), 0).
    count = max(int(np.ceil((limit.item() - start.item()) / delta.item())), 0)
    return (start + np.arange(count, dtype=start.dtype) * delta).astype(start.dtype)


@op("Split")
def _split(node: Node) -> tuple[np.ndarray, ...]:
    node.only("axis", "split", "num_outputs")
    x = node.input(0)
    axis = axis_of(node, node.attr("axis", 0), x.ndim)
    parts = len(node.proto.output)
    split = node.input(1) if node.input(1) is not None else node.attr("split")
    if split is None:
        # Equal parts; with num_outputs (opset 18) the last may be smaller.
        size = -(-x.shape[axis] // parts)
        if "num_outputs" not in node.attrs and x.shape[axis] % parts:
            raise ValueError(f"axis {axis} of size {x.shape[axis]} does not split in {parts}")
        split = [min(size, x.shape[axis] - i * size) for i in range(parts)]
    split = [int(s) for s in split]
    if sum(split) != x.shape[axis] or len(split) != parts:
        raise ValueError(f"split {split} does not fit axis {axis} of size {x.shape[axis]}")
    return tuple(np.split(x, np.cumsum(split)[:-1], axis=axis))


def _indices(node: Node, idx: np.ndarray, size: int) -> np.ndarray:
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise ValueError(f"an index out of range for an axis of size {size}")
    return np.where(idx < 0, idx + size, idx)


@op("Gather")
def _gather(node: Node) -> np.ndarray:
    x = node.input(0)
    axis = axis_of(node, node.attr("axis", 0), x.ndim)
    return np.take(x, _indices(node, node.input(1), x.shape[axis]), axis=axis)


@op("GatherElements")
def _gather_elements(node: Node) -> np.ndarray:
    x = node.input(0)
    axis = axis_of(node, node.attr("axis", 0), x.ndim)
    return np.take_along_axis(x, _indices(node, node.input(1), x.shape[axis]), axis=axis)


@op("GatherND")
def _gather_nd(node: Node) -> np.ndarray:
    x, idx = node.input(0), node.input(1).astype(np.int64)
    b = node.attr("batch_dims", 0)
    depth = idx.shape[-1]
    lead = x.shape[:b]
    xs = x.reshape((-1,) + x.shape[b:])
    ids = idx.reshape((xs.shape[0], -1, depth))
    out = []
    for i in range(xs.shape[0]):
        cols = tuple(_indices(node, ids[i][:, k], xs.shape[1 + k]) for k in range(depth))
        out.append(xs[i][cols])
    return np.stack(out).reshape(lead + idx.shape[b:-1] + x.shape[b + depth:])


op("Identity")(lambda n: n.input(0))
op("Transpose")(lambda n: np.transpose(n.input(0), n.attr("perm")))
op("Concat")(lambda n: np.concatenate(n.inputs, axis=n.attr("axis")))
