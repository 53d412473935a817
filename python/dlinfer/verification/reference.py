"""An independent ONNX executor built on dlinfer's own kernels.

``run(model, inputs)`` executes an ONNX graph node by node with
:mod:`dlinfer.kernels` for the compute (Conv, ConvTranspose, pooling, MatMul/
Gemm, Softmax, BatchNormalization) and NumPy only for shape plumbing (Reshape,
Transpose, Concat, Gather, Slice, ...) and elementwise arithmetic.  It shares
no code with onnxruntime or TensorFlow, which makes it a third opinion when the
two disagree.  It is written to be obviously right, not fast: NCHW tensors are
transposed to NHWC and back around every convolution.

Any tensor of the graph, not only its outputs, can be returned by name; tensors
nobody asked for are freed as soon as their last consumer has run.

Needs the ``onnx`` package, imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .._optional import import_optional
from ..errors import DlinferError, InputError, ModelLoadError
from . import kernels

__all__ = ["SUPPORTED_OPS", "Graph", "UnsupportedOpError", "load", "run"]


class UnsupportedOpError(DlinferError, NotImplementedError):
    """The graph uses an op (or an attribute of one) the reference executor lacks."""


def load(model: Any) -> Any:
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto."""
    onnx = import_optional("onnx", "reference", "dlinfer.reference and dlinfer verify")

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        if isinstance(model, (bytes, bytearray)):
            return onnx.load_from_string(bytes(model))
        return onnx.load(str(model))
    except FileNotFoundError:
        raise
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelLoadError(f"could not read ONNX model {model!r}: {exc}") from exc


class _Node:
    """What an op implementation sees: inputs as arrays, attributes as Python values."""

    def __init__(self, proto: Any, inputs: list[np.ndarray | None]):
        from onnx import helper

        self.proto = proto
        self.op = proto.op_type
        self.name = proto.name or (proto.output[0] if proto.output else "?")
        self.inputs = inputs
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}

    def attr(self, key: str, default: Any = None) -> Any:
        value = self.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    def input(self, i: int) -> np.ndarray | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def unsupported(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            f"reference executor: {self.op} node {self.name!r}: {what} is not supported"
        )


# ---- op implementations -------------------------------------------------------


def _conv_padding(node: _Node, spatial: tuple[int, int]) -> Any:
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return "valid"
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return auto_pad.lower()
    if auto_pad != "NOTSET":
        raise node.unsupported(f"auto_pad={auto_pad}")
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    if len(pads) != 4:
        raise node.unsupported(f"{len(pads) // 2}-D pads")
    return (pads[0], pads[2], pads[1], pads[3])  # ONNX: begins then ends


def _require_2d(node: _Node, x: np.ndarray) -> None:
    if x.ndim != 4:
        raise node.unsupported(f"a rank-{x.ndim} input (only 2-D NCHW images)")


def _conv(node: _Node) -> np.ndarray:
    x, w, b = node.input(0), node.input(1), node.input(2)
    _require_2d(node, x)
    return kernels.conv2d(
        x,
        w,
        b,
        strides=node.attr("strides", [1, 1]),
        padding=_conv_padding(node, x.shape[2:]),
        dilations=node.attr("dilations", [1, 1]),
        groups=node.attr("group", 1),
        layout="NCHW",
    )


def _conv_transpose(node: _Node) -> np.ndarray:
    x, w, b = node.input(0), node.input(1), node.input(2)
    _require_2d(node, x)
    if "output_shape" in node.attrs:
        raise node.unsupported("the output_shape attribute")
    padding = _conv_padding(node, x.shape[2:])
    if padding in ("same_upper", "same_lower"):
        # Output = input * stride; the crop is split as onnxruntime does it
        # (the odd one at the end for SAME_UPPER, measured against it).
        strides = node.attr("strides", [1, 1])
        dil = node.attr("dilations", [1, 1])
        op = node.attr("output_padding", [0, 0])
        pads = []
        for a in range(2):
            total = (x.shape[2 + a] - 1) * strides[a] + op[a] + (w.shape[2 + a] - 1) * dil[a] + 1
            total -= x.shape[2 + a] * strides[a]
            if total < 0:
                raise node.unsupported(
                    f"auto_pad={node.attr('auto_pad')} with a kernel smaller than the stride"
                )
            head = total // 2 if padding == "same_upper" else total - total // 2
            pads += [head, total - head]
        padding = tuple(pads)
    return kernels.conv2d_transpose(
        x,
        w,
        b,
        strides=node.attr("strides", [1, 1]),
        padding=padding,
        dilations=node.attr("dilations", [1, 1]),
        groups=node.attr("group", 1),
        output_padding=node.attr("output_padding", [0, 0]),
        layout="NCHW",
    )


def _pool(node: _Node) -> np.ndarray:
    x = node.input(0)
    _require_2d(node, x)
    if any(d != 1 for d in node.attr("dilations", [1, 1])):
        raise node.unsupported("dilated pooling")
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.unsupported("the Indices output")
    args = dict(
        pool_size=node.attr("kernel_shape"),
        strides=node.attr("strides", [1, 1]),
        padding=_conv_padding(node, x.shape[2:]),
        ceil_mode=bool(node.attr("ceil_mode", 0)),
        layout="NCHW",
    )
    if node.op == "MaxPool":
        return kernels.max_pool2d(x, **args)
    return kernels.avg_pool2d(x, count_include_pad=bool(node.attr("count_include_pad", 0)), **args)


def _global_pool(node: _Node) -> np.ndarray:
    x = node.input(0)
    _require_2d(node, x)
    fn = kernels.global_avg_pool2d if node.op == "GlobalAveragePool" else kernels.global_max_pool2d
    return fn(x, layout="NCHW", keepdims=True)


def _matmul(node: _Node) -> np.ndarray:
    a, b = node.input(0), node.input(1)
    if b.ndim == 2 and a.ndim >= 1 and a.dtype == np.float32 and b.dtype == np.float32:
        return kernels.dense(a, b)
    return np.matmul(a, b)


def _gemm(node: _Node) -> np.ndarray:
    a, b, c = node.input(0), node.input(1), node.input(2)
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if alpha == 1.0 and beta == 1.0 and (c is None or (c.ndim == 1 and c.shape[0] == b.shape[1])):
        return kernels.dense(a, b, c)
    y = alpha * kernels.dense(a, b)
    return (y + beta * c).astype(np.float32) if c is not None else y.astype(np.float32)


def _softmax(node: _Node) -> np.ndarray:
    return kernels.softmax(node.input(0), axis=node.attr("axis", -1))


def _batch_norm(node: _Node) -> np.ndarray:
    if node.attr("training_mode", 0):
        raise node.unsupported("training_mode=1")
    x, scale, bias, mean, var = node.inputs[:5]
    return kernels.batch_norm(x, scale, bias, mean, var, node.attr("epsilon", 1e-5), layout="NCHW")


def _reshape(node: _Node) -> np.ndarray:
    x, shape = node.input(0), [int(s) for s in node.input(1)]
    if not node.attr("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(node: _Node) -> np.ndarray:
    x = node.input(0)
    axis = node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis  # axis == ndim is allowed: (prod, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


def _slice(node: _Node) -> np.ndarray:
    x, starts, ends = node.input(0), node.input(1), node.input(2)
    axes = node.input(3)
    steps = node.input(4)
    axes = range(len(starts)) if axes is None else [int(a) % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps, strict=False):
        index[a] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _axes(node: _Node, position: int) -> list[int] | None:
    axes = node.input(position) if len(node.inputs) > position else None
    if axes is None:
        axes = node.attr("axes")
    return None if axes is None else [int(a) for a in axes]


def _squeeze(node: _Node) -> np.ndarray:
    axes = _axes(node, 1)
    x = node.input(0)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


def _unsqueeze(node: _Node) -> np.ndarray:
    x = node.input(0)
    axes = sorted(a % (x.ndim + len(_axes(node, 1))) for a in _axes(node, 1))
    for a in axes:
        x = np.expand_dims(x, a)
    return x


def _cast(node: _Node) -> np.ndarray:
    from onnx import helper

    return node.input(0).astype(helper.tensor_dtype_to_np_dtype(node.attr("to")))


def _constant(node: _Node) -> np.ndarray:
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


def _shape(node: _Node) -> np.ndarray:
    shape = np.asarray(node.input(0).shape, np.int64)
    return shape[node.attr("start", 0) : node.attr("end", None)]


def _elementwise(fn: Callable[..., np.ndarray]) -> Callable[[_Node], np.ndarray]:
    def run(node: _Node) -> np.ndarray:
        out = fn(*node.inputs)
        # Python scalars and NumPy's promotion rules must not widen float32.
        dtype = node.inputs[0].dtype
        return np.asarray(out).astype(dtype, copy=False)

    return run


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


def _pad(node: _Node) -> np.ndarray:
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


def _dropout(node: _Node) -> np.ndarray:
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.unsupported("the mask output")
    return node.input(0)


def _clip(node: _Node) -> np.ndarray:
    lo = node.input(1) if node.input(1) is not None else node.attr("min")
    hi = node.input(2) if node.input(2) is not None else node.attr("max")
    return np.clip(node.input(0), lo, hi).astype(node.input(0).dtype)


_OPS: dict[str, Callable[[_Node], np.ndarray]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Softmax": _softmax,
    "BatchNormalization": _batch_norm,
    "Relu": _elementwise(lambda x: np.maximum(x, 0)),
    "LeakyRelu": None,  # filled below: needs the attribute
    "Sigmoid": _elementwise(_sigmoid),
    "Tanh": _elementwise(np.tanh),
    "Exp": _elementwise(np.exp),
    "Sqrt": _elementwise(np.sqrt),
    "Neg": _elementwise(np.negative),
    "Abs": _elementwise(np.abs),
    "Add": _elementwise(np.add),
    "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply),
    # Integer Div truncates toward zero in ONNX; NumPy's // floors.
    "Div": _elementwise(lambda a, b: a / b if a.dtype.kind == "f" else np.trunc(a / b)),
    "Pow": _elementwise(np.power),
    "Clip": _clip,
    "Identity": lambda n: n.input(0),
    "Dropout": _dropout,
    "Pad": _pad,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": lambda n: np.transpose(n.input(0), n.attr("perm")),
    "Concat": lambda n: np.concatenate(n.inputs, axis=n.attr("axis")),
    "Gather": lambda n: np.take(n.input(0), n.input(1).astype(np.int64), axis=n.attr("axis", 0)),
    "Shape": _shape,
    "Cast": _cast,
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Constant": _constant,
}
_OPS["LeakyRelu"] = lambda n: np.where(
    n.input(0) >= 0, n.input(0), n.input(0) * np.float32(n.attr("alpha", 0.01))
).astype(n.input(0).dtype)

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_OPS))


# ---- the executor ---------------------------------------------------------------------


def _normalize_inputs(
    graph: Any, initializer_names: set[str], inputs: Any
) -> dict[str, np.ndarray]:
    names = [i.name for i in graph.input if i.name not in initializer_names]
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise InputError(f"the model has {len(names)} inputs ({', '.join(names)}); pass a dict")
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InputError(f"missing model input(s): {', '.join(missing)}")
    unknown = [n for n in inputs if n not in names]
    if unknown:
        raise InputError(
            f"unknown input name(s) {', '.join(unknown)}; the model takes {', '.join(names)}"
        )
    return {k: np.asarray(v) for k, v in inputs.items()}


class Graph:
    """An ONNX graph checked and unpacked once, to run many times (see :func:`run`)."""

    def __init__(self, model: Any):
        from onnx import numpy_helper

        self.proto = load(model)
        graph = self.proto.graph
        for node in graph.node:
            if node.op_type not in _OPS or node.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(
                    f"reference executor: op {node.op_type!r} (node "
                    f"{node.name or node.output[0]!r}) is not supported; "
                    f"supported ops: {', '.join(SUPPORTED_OPS)}"
                )
        self.nodes = list(graph.node)
        self.initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.output_names = [o.name for o in graph.output]
        self.tensor_names = (
            set(self.initializers)
            | {i.name for i in graph.input}
            | {o for n in self.nodes for o in n.output}
        )

    def run(
        self,
        inputs: Any,
        outputs: Iterable[str] | None = None,
        on_tensor: Callable[[str, np.ndarray], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """See :func:`run`."""
        init = self.initializers
        env: dict[str, np.ndarray] = dict(init)
        env.update(_normalize_inputs(self.proto.graph, set(init), inputs))
        wanted = list(outputs) if outputs is not None else list(self.output_names)
        unknown = [w for w in wanted if w not in self.tensor_names]
        if unknown:
            raise InputError(f"no tensor named {', '.join(map(repr, unknown))} in the graph")

        # Run only the nodes the wanted tensors depend on (all of them for on_tensor).
        nodes = self.nodes
        needed = set(wanted)
        active = [False] * len(nodes)
        for i in range(len(nodes) - 1, -1, -1):
            if on_tensor is not None or any(o in needed for o in nodes[i].output):
                active[i] = True
                needed.update(name for name in nodes[i].input if name)

        # Free every intermediate after its last consumer, unless it was asked for.
        last_use: dict[str, int] = {}
        for i, node in enumerate(nodes):
            if active[i]:
                for name in node.input:
                    last_use[name] = i
        keep = set(wanted)

        for i, proto_node in enumerate(nodes):
            if not active[i]:
                continue
            node = _Node(proto_node, [env[name] if name else None for name in proto_node.input])
            try:
                result = _OPS[node.op](node)
            except (UnsupportedOpError, InputError):
                raise
            except ValueError as exc:
                raise InputError(
                    f"reference executor: {node.op} node {node.name!r}: {exc}"
                ) from exc
            env[proto_node.output[0]] = result
            if on_tensor is not None:
                on_tensor(proto_node.output[0], result)
            for name in proto_node.input:
                if name and last_use.get(name) == i and name not in keep and name not in init:
                    env.pop(name, None)
        return {name: env[name] for name in wanted}


def run(
    model: Any,
    inputs: Any,
    outputs: Iterable[str] | None = None,
    on_tensor: Callable[[str, np.ndarray], None] | None = None,
) -> dict[str, np.ndarray]:
    """Execute an ONNX graph with dlinfer's kernels.

    ``model`` is a path, bytes, ``onnx.ModelProto`` or a prepared :class:`Graph`;
    ``inputs`` an array (for a single-input model) or a dict name -> array.
    ``outputs`` names the tensors to return, any tensor of the graph included
    (default: the graph outputs); only the nodes they depend on run.
    ``on_tensor(name, array)``, if given, sees every tensor as it is produced
    (then every node runs).  Returns a dict name -> array, in the order asked.

    Raises :class:`UnsupportedOpError` naming the op and node for anything it
    cannot execute, before running anything.
    """
    graph = model if isinstance(model, Graph) else Graph(model)
    return graph.run(inputs, outputs, on_tensor)
