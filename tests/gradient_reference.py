"""Float64 finite differences of ONNX graphs, for the dlinfer.explain gradient tests.

The reference executor (dlinfer.reference) runs every op the tests use in float64
except Conv and ConvTranspose, whose kernels are float32: here those two run on the
naive float64 convolutions of tests/reference.py.  ``float64_model`` turns a float32
graph into a float64 one (initializers, Cast targets, constants, the declared types).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
from dlinfer.verification.reference import node as ref_node
from dlinfer.verification.reference import ops_nn
from dlinfer.verification.reference.graph import Graph
from onnx import helper, numpy_helper
from reference import conv2d_nhwc, conv2d_transpose_nhwc

__all__ = ["central_difference", "float64_model", "float64_reference"]

_FLOAT, _DOUBLE = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE


def _to_double(t: onnx.TensorProto) -> onnx.TensorProto:
    if t.data_type != _FLOAT:
        return t
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)


def float64_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph computing in float64."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    for i, t in enumerate(list(g.initializer)):
        g.initializer[i].CopyFrom(_to_double(t))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == _FLOAT:
                a.i = _DOUBLE
            if a.type == onnx.AttributeProto.TENSOR:
                a.t.CopyFrom(_to_double(a.t))
    for v in [*g.input, *g.output]:
        if v.type.tensor_type.elem_type == _FLOAT:
            v.type.tensor_type.elem_type = _DOUBLE
    del g.value_info[:]
    return model


def _nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1)


def _conv64(node: Any) -> np.ndarray:
    x, w, b = node.input(0), node.input(1), node.input(2)
    if x.dtype != np.float64:
        return _originals["Conv"](node)
    flat = x.ndim == 3  # 1-D convolution: a unit height
    if flat:
        x, w = x[:, :, None, :], w[:, :, None, :]
    strides = list(node.attr("strides", [1] * (x.ndim - 2)))
    dil = list(node.attr("dilations", [1] * (x.ndim - 2)))
    if flat:
        strides, dil = [1, *strides], [1, *dil]
        begin, end = ops_nn._conv_pads(node, x.shape[3:], w.shape[3:], strides[1:], dil[1:])
        begin, end = [0, *begin], [0, *end]
    else:
        begin, end = ops_nn._conv_pads(node, x.shape[2:], w.shape[2:], strides, dil)
    y = conv2d_nhwc(_nhwc(x), w.transpose(2, 3, 1, 0), b, strides=strides, dilations=dil,
                    pads=(begin[0], end[0], begin[1], end[1]), groups=node.attr("group", 1))
    y = y.transpose(0, 3, 1, 2)
    return y[:, :, 0, :] if flat else y


def _conv_transpose64(node: Any) -> np.ndarray:
    x, w, b = node.input(0), node.input(1), node.input(2)
    if x.dtype != np.float64:
        return _originals["ConvTranspose"](node)
    if node.attr("output_shape") is not None or node.attr("auto_pad", "NOTSET") != "NOTSET":
        raise node.unsupported("float64 ConvTranspose with output_shape or auto_pad")
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    y = conv2d_transpose_nhwc(_nhwc(x), w.transpose(2, 3, 0, 1), b,
                              strides=node.attr("strides", [1, 1]),
                              dilations=node.attr("dilations", [1, 1]),
                              pads=(pads[0], pads[2], pads[1], pads[3]),
                              output_padding=node.attr("output_padding", [0, 0]),
                              groups=node.attr("group", 1))
    return y.transpose(0, 3, 1, 2)


_originals: dict[str, Any] = {}


@contextmanager
def float64_reference() -> Iterator[None]:
    """The reference executor, with float64 Conv and ConvTranspose, inside the block."""
    _originals.update(Conv=ref_node.OPS["Conv"], ConvTranspose=ref_node.OPS["ConvTranspose"])
    ref_node.OPS["Conv"], ref_node.OPS["ConvTranspose"] = _conv64, _conv_transpose64
    try:
        yield
    finally:
        ref_node.OPS.update(_originals)


def central_difference(model: onnx.ModelProto, inputs: dict[str, np.ndarray], wrt: str,
                       target: str, index: Sequence[int], directions: Sequence[np.ndarray],
                       step: float) -> list[float]:
    """d/dt sum_n target[n].flat[index[n]] at x + t d, for each direction d, in float64."""
    graph = Graph(float64_model(model))
    rows = np.arange(len(index))

    def objective(x: np.ndarray) -> float:
        feed = {k: np.asarray(v, np.float64) if v.dtype.kind == "f" else v
                for k, v in inputs.items()}
        feed[wrt] = x
        with float64_reference():
            y = graph.run(feed, [target])[target]
        return float(y.reshape(len(index), -1)[rows, list(index)].sum())

    x0 = np.asarray(inputs[wrt], np.float64)
    return [(objective(x0 + step * d) - objective(x0 - step * d)) / (2 * step)
            for d in directions]


def constant_of_shape_to_initializers(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Replace the ConstantOfShape weights of onnx's light models with seeded random ones:
    He-scaled for convolution and dense weights, near-identity batch normalization."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers: dict[str, tuple[str, int]] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, (node.op_type, i))
    keep = []
    for node in g.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        name = node.output[0]
        while consumers.get(name, ("", 0))[0] == "Unsqueeze":  # a scale reshaped to (C, 1, 1)
            name = next(n.output[0] for n in g.node if n.input and n.input[0] == name)
        op, slot = consumers.get(name, ("", 0))
        if op in ("Conv", "Gemm", "ConvTranspose") and slot == 1:
            fan_in = int(np.prod(shape[1:])) if op != "Gemm" else shape[-1]
            value = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
        elif op == "BatchNormalization" and slot in (1, 4) or op == "Mul":
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * 0.1
        g.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    del g.node[:]
    g.node.extend(keep)
    return model


def make_model(nodes: list, inputs: list, outputs: list, initializers: dict[str, np.ndarray],
               opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "op", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model
