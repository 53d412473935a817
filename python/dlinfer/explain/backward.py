"""The backward pass of an ONNX graph, written as more ONNX nodes in the same graph.

:func:`build` takes a forward graph, the tensor to differentiate (the *target*) and the
tensors to differentiate with respect to (*wrt*), and returns one ONNX model that runs
the forward pass and then the backward one: onnxruntime runs it at inference speed, on
CPU or CUDA, and the forward activations the backward nodes read never leave the device.

Only the nodes on a path from a ``wrt`` tensor to the target get a backward rule
(:mod:`.backward_ops`); an op without one is refused by name before anything runs.  The
gradient is seeded with a one-hot tensor built inside the graph from a per-sample index
(the ``INDEX`` input), so one run gives each sample's gradient of its own element; that
holds because inference graphs treat the samples of a batch independently.

Every backward node is written at opset 17 or later (ScatterElements with
``reduction="add"`` for MaxPool, ReduceSum with axes as an input); older models are
converted with onnx's version converter first.  Shapes are read at run time with Shape
nodes wherever they can, so one built graph serves every batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, UnsupportedGradientError

__all__ = ["INDEX", "MIN_OPSET", "Builder", "build", "node_label"]

MIN_OPSET = 17
INDEX = "dlinfer_gradient_index"  # int64 [N]: each sample's flat index into the target

# Ops whose outputs carry no gradient even when an input does (comparisons, shapes,
# indices, piecewise-constant functions): the path stops there.
NON_DIFFERENTIABLE = frozenset({
    "Shape", "Size", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not",
    "And", "Or", "Xor", "ArgMax", "ArgMin", "NonZero", "ConstantOfShape", "EyeLike",
    "Sign", "Floor", "Ceil", "Round", "IsNaN", "IsInf", "RandomNormalLike",
    "RandomUniformLike", "Bernoulli", "OneHot", "TopK",
})
_FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64, 16: None}  # 16: bfloat16


def node_label(node: Any) -> str:
    return node.name or (node.output[0] if node.output else "?")


class Builder:
    """Appends backward nodes (and their constants) to a graph under construction."""

    def __init__(self, graph: Any, dtype: np.dtype, types: dict[str, Any]):
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.graph = graph
        self.dtype = np.dtype(dtype)
        self.types = types  # tensor name -> onnx TypeProto's tensor_type (shape inference)
        self.nodes: list[Any] = []
        self._count = 0
        self._consts: dict[tuple, str] = {}
        self._shapes: dict[str, str] = {}
        self.initializers: list[Any] = []

    # -- names, nodes and constants -------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"dlinfer_grad/{hint}_{self._count}"

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> Any:
        """Append one node; its output name (a list when ``outputs`` > 1)."""
        names = [self.fresh(op_type) for _ in range(outputs)]
        self.nodes.append(self._helper.make_node(op_type, list(inputs), names,
                                                 name=self.fresh(f"{op_type}_node"), **attrs))
        return names if outputs > 1 else names[0]

    def const(self, value: Any, dtype: Any = None) -> str:
        """An initializer holding ``value`` (in the gradient's float dtype by default)."""
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.fresh("const")
            self.initializers.append(self._numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), np.int64), np.int64)

    def zeros_of(self, shape: str) -> str:
        """A zero tensor of the gradient's dtype with the (run-time) shape ``shape``."""
        zero = self._numpy_helper.from_array(np.zeros(1, self.dtype), "value")
        return self.op("ConstantOfShape", [shape], value=zero)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` where the graph fixes it (an initializer or a Constant)."""
        if not name:
            return None
        for t in self.graph.initializer:
            if t.name == name:
                return self._numpy_helper.to_array(t)
        for node in self.graph.node:
            if node.op_type == "Constant" and node.output[0] == name and node.attribute:
                from onnx import helper

                value = helper.get_attribute_value(node.attribute[0])
                return (self._numpy_helper.to_array(value) if hasattr(value, "dims")
                        else np.asarray(value))
        return None

    # -- shapes ---------------------------------------------------------------------------
    def shape(self, x: str) -> str:
        """The run-time shape of ``x`` (one Shape node per tensor)."""
        if x not in self._shapes:
            self._shapes[x] = self.op("Shape", [x])
        return self._shapes[x]

    def dims(self, x: str, start: int, end: int | None = None) -> str:
        """``x``'s run-time dimensions ``start:end`` as an int64 vector."""
        ends = [] if end is None else [self.ints([end])]
        if end is None:
            return self.op("Slice", [self.shape(x), self.ints([start]), self.ints([2**62])])
        return self.op("Slice", [self.shape(x), self.ints([start])] + ends)

    def static_shape(self, x: str) -> list[int | str | None] | None:
        """``x``'s shape from shape inference: ints, symbolic names or None per axis."""
        t = self.types.get(x)
        if t is None or not t.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in t.shape.dim]

    def rank(self, x: str) -> int | None:
        shape = self.static_shape(x)
        return None if shape is None else len(shape)

    def same_shape(self, a: str, b: str) -> bool:
        """Provably the same shape: same rank and the same fixed size or name per axis."""
        sa, sb = self.static_shape(a), self.static_shape(b)
        return (sa is not None and sb is not None and len(sa) == len(sb)
                and all(x is not None and x == y for x, y in zip(sa, sb)))

    # -- gradient plumbing ----------------------------------------------------------------
    def unbroadcast(self, g: str, x: str, y: str) -> str:
        """Sum ``g`` (shaped like the broadcast result ``y``) down to ``x``'s shape."""
        if self.same_shape(x, y):
            return g
        sx, sy = self.static_shape(x), self.static_shape(y)
        if sx is not None and sy is not None and all(isinstance(d, int) and d > 0 for d in sx):
            # x's shape is known: sum over every axis where (right-aligned, padded with
            # ones) it is 1.  Where y's is 1 too, that sum changes nothing.  Axes as a
            # constant: OpenVINO's reader refuses a ReduceSum whose axes come at run time
            # (the general case below), which then runs on onnxruntime.
            aligned = [1] * (len(sy) - len(sx)) + list(sx)
            axes = [i for i, d in enumerate(aligned) if d == 1 and sy[i] != 1]
            summed = self.op("ReduceSum", [g, self.ints(axes)], keepdims=1) if axes else g
            return self.op("Reshape", [summed, self.ints(sx)])
        gshape, xshape = self.shape(g), self.shape(x)
        # Right-align x's shape with g's, pad it with ones, and sum over every axis where
        # the two differ (those are the axes x was broadcast along).
        missing = self.op("Sub", [self.op("Size", [gshape]), self.op("Size", [xshape])])
        ones = self.op("ConstantOfShape", [self.op("Reshape", [missing, self.ints([1])])],
                       value=self._numpy_helper.from_array(np.ones(1, np.int64), "value"))
        aligned = self.op("Concat", [ones, xshape], axis=0)
        axes = self.op("Reshape", [self.op("NonZero", [
            self.op("Not", [self.op("Equal", [aligned, gshape])])]), self.ints([-1])])
        summed = self.op("ReduceSum", [g, axes], keepdims=1, noop_with_empty_axes=1)
        return self.op("Reshape", [summed, xshape])

    def fit_spatial(self, g: str, x: str) -> str:
        """Pad (or crop) ``g``'s trailing spatial ends to ``x``'s size: a transposed
        convolution's output can fall short of the input by up to stride - 1 rows the
        forward convolution never read, whose gradient is zero."""
        sg, sx = self.static_shape(g), self.static_shape(x)
        if (sg is not None and sx is not None and len(sg) == len(sx)
                and all(isinstance(a, int) and a == b for a, b in zip(sg[2:], sx[2:]))):
            return g
        rank = self.rank(x)
        if rank is None:
            raise InputError(f"the rank of {x!r} is unknown: cannot size its gradient")
        diff = self.op("Sub", [self.dims(x, 2), self.dims(g, 2)])
        pads = self.op("Concat", [self.ints([0] * rank), self.ints([0, 0]), diff], axis=0)
        return self.op("Pad", [g, pads])


def _unsupported(node: Any, why: str = "") -> UnsupportedGradientError:
    detail = f" ({why})" if why else ""
    return UnsupportedGradientError(
        f"dlinfer.explain: no gradient for op {node.op_type!r}{detail} at node "
        f"{node_label(node)!r}; it lies between the tensor differentiated and the output",
        op=node.op_type, node=node_label(node))


def _float_tensor(types: dict[str, Any], name: str) -> bool:
    t = types.get(name)
    return t is None or t.elem_type in (0, *_FLOAT_TYPES)


def _through_integers(g: Any, types: dict[str, Any], wrt: Sequence[str], target: str
                      ) -> UnsupportedGradientError | None:
    """Where ``target`` depends on ``wrt`` only through an integer tensor (a QDQ int8
    file's QuantizeLinear, a Cast to int): the error naming the first node on the way
    that makes one."""
    reached = set(wrt)
    for node in g.node:
        if node.op_type not in NON_DIFFERENTIABLE and any(i in reached for i in node.input):
            reached.update(o for o in node.output if o)
    if target not in reached:
        return None
    needed, on_path = {target}, []
    for node in reversed(g.node):
        if any(o in needed for o in node.output) and any(i in reached for i in node.input):
            on_path.append(node)
            needed.update(i for i in node.input if i in reached)
    first = next((n for n in reversed(on_path)
                  if not all(_float_tensor(types, o) for o in n.output if o)), None)
    return None if first is None else _unsupported(
        first, "its output is an integer tensor, through which no gradient flows; explain "
        "the float32 model an int8 one was made from")


def build(model: Any, target: str, wrt: Sequence[str], outputs: Sequence[str],
          argmax_of: str | None = None, summed_over: Sequence[int] | None = None,
          ) -> tuple[Any, str]:
    """The forward-and-backward model (``model``, edited in place), and its gradient dtype.

    Its inputs: the model's, plus :data:`INDEX` unless ``argmax_of`` names a tensor whose
    largest element per sample (the predicted class) is the index instead, found in the
    same run.  Its outputs, in order: ``outputs`` (forward tensors), the value of each
    ``wrt`` tensor, then each ``wrt`` tensor's gradient, or with ``summed_over`` that
    gradient summed over those axes (kept, size 1): see :mod:`.backward_sums`.
    """
    import onnx
    from onnx import shape_inference, version_converter

    from . import backward_nn, backward_ops  # noqa: F401 - backward_nn registers its rules
    from .backward_sums import SummedGradients

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        try:
            model = _converted(model, version_converter)
        except Exception as exc:  # the converter raises untyped errors
            raise UnsupportedGradientError(
                f"dlinfer.explain: cannot convert the opset {opset} model to opset "
                f"{MIN_OPSET} for its backward pass: {exc}") from exc
    try:
        inferred = shape_inference.infer_shapes(_without_weights(model))
    except Exception:  # shape inference is an optimization here, never required
        inferred = model
    g = model.graph
    types = {v.name: v.type.tensor_type for v in
             [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    for t in g.initializer:
        types.setdefault(t.name, onnx.helper.make_tensor_type_proto(t.data_type, t.dims)
                         .tensor_type)
    produced = {o for n in g.node for o in n.output if o} | {i.name for i in g.input}
    for name in [target, *wrt]:
        if name not in produced:
            raise InputError(f"no tensor named {name!r} in the graph")
    for name in wrt:
        if not _float_tensor(types, name):
            raise InputError(f"cannot differentiate with respect to {name!r}: it is not a "
                             "float tensor (an integer input, say; try the tensor after its "
                             "Cast)")
    elem = types[target].elem_type if target in types else 1
    dtype = _FLOAT_TYPES.get(elem)
    if dtype is None:
        raise InputError(f"cannot differentiate {target!r}: its type is not float16/32/64")

    # Forward: what depends on wrt.  Backward: what of that the target depends on.
    active = set(wrt)
    for node in g.node:
        if node.op_type in NON_DIFFERENTIABLE:
            continue
        if any(i in active for i in node.input if i):
            active.update(o for o in node.output if o and _float_tensor(types, o))
    if target not in active:
        raise _through_integers(g, types, wrt, target) or InputError(
            f"{target!r} does not depend on {', '.join(map(repr, wrt))}")
    on_path, needed = [], {target}
    for node in reversed(g.node):
        if (any(o in needed and o in active for o in node.output)
                and any(i in active for i in node.input)):  # not just the producer of a wrt
            if node.op_type not in backward_ops.RULES or node.domain not in ("", "ai.onnx"):
                raise _unsupported(node)
            on_path.append(node)
            needed.update(i for i in node.input if i in active)

    b = Builder(g, dtype, types)
    grads: dict[str, list[str]] = {target: [_seed(b, target, argmax_of)]}
    summed = None if summed_over is None else SummedGradients(b, on_path, wrt, summed_over)
    for node in on_path:  # reverse topological order
        out_grads = [_total(b, grads.get(o)) for o in node.output]
        if all(x is None for x in out_grads):
            continue
        if summed is not None and summed.take(node, out_grads):
            continue
        wanted = [bool(i) and i in active and i in needed for i in node.input]
        try:
            in_grads = backward_ops.RULES[node.op_type](b, node, out_grads, wanted)
        except UnsupportedGradientError as exc:
            if exc.node:
                raise
            raise _unsupported(node, str(exc)) from exc
        for name, want, grad in zip(node.input, wanted, in_grads):
            if want and grad is not None:
                grads.setdefault(name, []).append(grad)

    result = [_total(b, grads.get(w)) for w in wrt]
    if summed is not None:
        result = [summed.total(w, r) for w, r in zip(wrt, result)]
    for w, grad in zip(wrt, result):
        if grad is None:
            raise InputError(f"{target!r} does not depend on {w!r}")
    # A graph output may be any node's output, but not a graph input nor named twice:
    # copy only those (an Identity of a layer's activation costs a copy of it).
    taken, graph_inputs = set(outputs), {i.name for i in g.input}
    returned = []
    for name in [*wrt, *result]:
        if name in taken or name in graph_inputs:
            name = b.op("Identity", [name])
        taken.add(name)
        returned.append(name)
    g.node.extend(b.nodes)
    g.initializer.extend(b.initializers)
    if argmax_of is None:
        g.input.append(onnx.helper.make_tensor_value_info(INDEX, onnx.TensorProto.INT64,
                                                          ["N"]))
    del g.output[:]
    for name in [*outputs, *returned]:
        g.output.append(onnx.helper.make_empty_tensor_value_info(name))
    del model.graph.value_info[:]  # stale after the edits; onnxruntime infers its own
    return model, dtype


def _without_weights(model: Any) -> Any:
    """A copy of ``model`` whose large initializers keep their shape but not their data:
    shape inference reads only the shapes of weights (and the values of small ones, such
    as Reshape targets), and copying a ResNet's 100 MB took longer than inferring."""
    import onnx

    light = onnx.ModelProto()
    light.CopyFrom(model)  # cheap next to serializing: then drop the bulk
    for t in light.graph.initializer:
        if int(np.prod(t.dims)) > 4096:
            t.ClearField("raw_data")
            t.ClearField("float_data")
    return light


def _converted(model: Any, version_converter: Any) -> Any:
    """``model`` at opset MIN_OPSET.  The converter wants every initializer declared as a
    graph input, as IR version 3 required: declared for it, then undeclared again."""
    from onnx import helper

    model = type(model).FromString(model.SerializeToString())
    declared = {i.name for i in model.graph.input}
    added = [t for t in model.graph.initializer if t.name not in declared]
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                             for t in added)
    model = version_converter.convert_version(model, MIN_OPSET)
    names = {t.name for t in added}
    kept = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model


def _total(b: Builder, parts: list[str] | None) -> str | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b.op("Sum", parts)


def _seed(b: Builder, target: str, argmax_of: str | None) -> str:
    """A tensor shaped like ``target``: one at each sample's index, zero elsewhere."""
    flat = b.op("Reshape", [target, b.ints([0, -1])])
    zeros = b.zeros_of(b.shape(flat))
    if argmax_of is None:
        index = b.op("Unsqueeze", [INDEX, b.ints([1])])
    else:
        index = b.op("ArgMax", [b.op("Reshape", [argmax_of, b.ints([0, -1])])], axis=1,
                     keepdims=1)
    ones = b.op("ConstantOfShape", [b.shape(index)],
                value=b._numpy_helper.from_array(np.ones(1, b.dtype), "value"))
    hot = b.op("ScatterElements", [zeros, index, ones], axis=1)
    return b.op("Reshape", [hot, b.shape(target)])
