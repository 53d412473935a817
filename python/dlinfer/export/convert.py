"""Trace a Keras model and convert it with tf2onnx, in steps that can each be checked.

``tf2onnx.convert.from_keras`` fails on Keras 3 (``KeyError: 'keras_tensor_N'``) and
``from_function`` passes every non-resource capture of the function as a graph
input, so a constant the model captured eagerly (EfficientNet's ``Normalization``
mean and variance) became a required ONNX input.  Here the steps are taken one at a
time:

1. trace the model as a ``tf.function`` with one named ``TensorSpec`` per Keras
   input, returning a dict keyed by the ONNX output names (under
   :func:`prepare.tracing`);
2. freeze it with tf2onnx's loader, naming only the signature's inputs, so captured
   constants are folded into the graph;
3. check every TensorFlow op of the frozen graph against tf2onnx's handlers for
   :data:`OPSET` *before* converting, so an op ONNX cannot express fails with the
   layer that holds it, never with tf2onnx's internal errors;
4. convert, then check again that no unconverted or random op is left.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ..errors import ExportError
from . import prepare
from ._tf import import_tensorflow, quiet

__all__ = ["OPSET", "RANDOM_OPS", "Traced", "convert", "describe", "onnx_names", "random_nodes"]

# Opset 17: every op the zoo needs, LayerNormalization included; onnxruntime 1.31
# loads it everywhere.  IR version 8 is what opset 17 implies.
OPSET = 17
IR_VERSION = 8

# ONNX ops that draw random numbers: none may reach an inference graph.
RANDOM_OPS = frozenset(
    {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial",
     "Bernoulli"}
)


def _subgraph_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraph_nodes(attr.g)
            for g in attr.graphs:
                yield from _subgraph_nodes(g)


def random_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of a graph (subgraphs included) that draw random numbers."""
    return [n for n in _subgraph_nodes(proto.graph)
            if n.op_type in RANDOM_OPS or "Random" in n.op_type]


def onnx_names(names: list[str], fallback: str, taken: Collection[str] = ()) -> list[str]:
    """Names made valid TensorFlow/ONNX tensor names, and unique (``_1``, ``_2`` ...) among
    themselves and against ``taken``: an output may not share an input's name (tf2onnx
    then drops the input; every default-named image-to-image model hit it)."""
    out: list[str] = []
    for name in names:
        clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", name or fallback)
        if not re.match(r"[A-Za-z0-9.]", clean):
            clean = f"{fallback}_{clean}"
        unique, n = clean, 1
        while unique in out or unique in taken:
            unique, n = f"{clean}_{n}", n + 1
        out.append(unique)
    return out


def _producer(tensor: Any) -> Any:
    history = getattr(tensor, "_keras_history", None)
    return getattr(history, "operation", None) or (history[0] if history else None)


def _consumers(model: Any, tensor: Any) -> str:
    """The layers of ``model`` that read ``tensor``, by name and class."""
    names = [f"{layer.name!r} ({type(layer).__name__})" for layer in getattr(model, "layers", ())
             for node in getattr(layer, "_inbound_nodes", ())
             if any(t is tensor for t in getattr(node, "input_tensors", ()))]
    return ", ".join(names) or "no layer"


def _chosen_name(tensor: Any) -> str | None:
    """The name the user gave the layer behind ``tensor``; None for Keras's own.

    Keras names an unnamed layer after its class, ``dense`` or ``input_layer_3``.
    """
    layer = _producer(tensor)
    name = getattr(layer, "name", None)
    if not name:
        return None
    # Keras's own snake case (keras.src.utils.naming.to_snake_case): Conv2D -> conv2d
    cls = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", type(layer).__name__)
    cls = re.sub("([a-z])([A-Z])", r"\1_\2", cls).lower()
    return None if re.fullmatch(rf"{re.escape(cls)}(_\d+)?", name) else name


@dataclass(frozen=True)
class Traced:
    """The model's inputs and outputs: their ONNX names and how the model is called."""

    input_names: list[str]  # ONNX names, in the model's input order
    input_tensors: list[Any]  # the Keras input tensors (shape, dtype)
    output_names: list[str]  # ONNX names, in the model's output order
    output_tensors: list[Any]
    input_keys: list[str] | None  # the model takes a dict with these keys
    output_keys: list[Any]  # where each output sits in the model's result

    def feed(self, arrays: list[Any]) -> Any:
        """The inputs in the structure the Keras model is called with."""
        if self.input_keys is not None:
            return dict(zip(self.input_keys, arrays))
        return arrays[0] if len(arrays) == 1 else list(arrays)

    def outputs(self, result: Any) -> list[Any]:
        """The model's result as a list in :attr:`output_names` order."""
        if isinstance(result, dict):
            return [result[k] for k in self.output_keys]
        if isinstance(result, (list, tuple)):
            return list(result)
        return [result]


def describe(model: Any) -> tuple[Traced, list[str | None], list[str | None]]:
    """How ``model`` is called, and the names the user chose for its inputs and outputs.

    A chosen name is a dict key or a layer name the user gave; None where Keras
    named the layer itself.  The returned :class:`Traced` has placeholder names.
    """
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        keys: list[str] | None = list(struct)
        tensors = [struct[k] for k in keys]
        in_chosen: list[str | None] = list(keys)
    else:
        keys, tensors = None, list(model.inputs)
        in_chosen = [_chosen_name(t) for t in tensors]
    for tensor in tensors:
        if str(getattr(tensor, "dtype", "")) == "string":
            raise ExportError(
                f"{model.name} takes strings (input {_producer(tensor).name!r}, read by "
                f"{_consumers(model, tensor)}): ONNX models exported here take numbers. Do the "
                "text preprocessing (TextVectorization, StringLookup) before the model, and "
                "export the part that takes the token ids")
    outs = getattr(model, "_outputs_struct", None)
    if isinstance(outs, dict):
        out_keys: list[Any] = list(outs)
        out_tensors = [outs[k] for k in out_keys]
        out_chosen: list[str | None] = [str(k) for k in out_keys]
    else:
        out_tensors = list(model.outputs)
        out_keys = list(range(len(out_tensors)))
        out_chosen = [_chosen_name(t) for t in out_tensors]
    traced = Traced(
        input_names=[f"input_{i}" for i in range(len(tensors))],
        input_tensors=tensors,
        output_names=[f"output_{i}" for i in range(len(out_tensors))],
        output_tensors=out_tensors,
        input_keys=keys,
        output_keys=out_keys,
    )
    return traced, in_chosen, out_chosen


def _erfc(ctx: Any, node: Any, name: str, args: Any) -> None:
    """TensorFlow's Erfc (exact GELU) has no ONNX op; erfc(x) = 1 - erf(x) does.

    In float32 the subtraction loses erfc's tiny tail for large x, where GELU multiplies
    it by ~0 anyway: the GELU outputs differ by < 1e-7 absolute.
    """
    dtype = ctx.get_dtype(node.input[0])
    one = ctx.make_const(f"{node.name}/one",
                         np.array(1, dtype=onnx.helper.tensor_dtype_to_np_dtype(dtype)))
    erf = ctx.make_node("Erf", [node.input[0]], name=f"{node.name}/erf")
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    node.type = "Sub"


# TensorFlow ops tf2onnx has no handler for, converted here.
_HANDLERS = {"Erfc": (_erfc, [])}


def _tf_ops(graph_def: Any) -> list[tuple[str, str]]:
    nodes = [(n.name, n.op) for n in graph_def.node]
    for fn in graph_def.library.function:
        nodes += [(f"{fn.signature.name}/{n.name}", n.op) for n in fn.node_def]
    return nodes


def _preflight(model: Any, graph_def: Any) -> None:
    from tf2onnx import handler

    known = set(handler.tf_op.create_mapping(OPSET, [])) | set(_HANDLERS)
    missing = [(name, op) for name, op in _tf_ops(graph_def) if op not in known]
    if missing:
        raise prepare.explain(model, missing, f"ONNX (opset {OPSET}) has no equivalent for "
                              "the TensorFlow ops of")


def convert(model: Any, traced: Traced) -> onnx.ModelProto:
    """The ONNX graph of ``model`` (already made an inference model), checked for ops."""
    import tf2onnx
    from tf2onnx import tf_loader

    _, tf = import_tensorflow()
    specs = []
    for name, tensor in zip(traced.input_names, traced.input_tensors):
        shape = [None, *list(tensor.shape)[1:]]  # a dynamic batch, whatever it was built with
        specs.append(tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=name))

    @tf.function(input_signature=specs)
    def inference(*xs):  # noqa: ANN002 - traced by TensorFlow
        result = model(traced.feed(list(xs)), training=False)
        return dict(zip(traced.output_names, traced.outputs(result)))

    with prepare.tracing(model):
        try:
            concrete = inference.get_concrete_function(*specs)
        except Exception as exc:  # Keras raises anything while tracing a custom layer
            raise ExportError(f"cannot trace {model.name} for export: "
                              f"{type(exc).__name__}: {exc}") from exc
    input_tensors = [t.name for t in concrete.inputs[: len(specs)]]
    output_tensors = [t.name for t in concrete.outputs]
    renames = tf2onnx.convert.tensor_names_from_structed(concrete, input_tensors, output_tensors)
    with tf.device("/cpu:0"), quiet("tf2onnx"):
        graph_def = tf_loader.from_function(concrete, input_tensors, output_tensors)
        _preflight(model, graph_def)
        try:
            proto, _ = tf2onnx.convert._convert_common(
                graph_def, name=model.name, continue_on_error=True, opset=OPSET,
                custom_op_handlers=_HANDLERS, input_names=input_tensors,
                output_names=output_tensors, tensors_to_rename=renames,
            )
        except Exception as exc:  # tf2onnx raises untyped errors; name the layer if we can
            layers = [(lay.name, "") for lay in prepare.all_layers(model) if lay.name in str(exc)]
            raise prepare.explain(model, layers or [(model.name, "")],
                                  f"the converter failed ({type(exc).__name__})") from exc
    unsupported = [n for n in _subgraph_nodes(proto.graph)
                   if not onnx.defs.has(n.op_type, n.domain or "")]
    if unsupported:
        raise prepare.explain(model, [(n.name, n.op_type) for n in unsupported],
                              "ONNX has no equivalent for the TensorFlow ops of")
    randoms = random_nodes(proto)
    if randoms:
        raise prepare.explain(model, [(n.name, n.op_type) for n in randoms],
                              "the inference graph holds random ops from")
    # The dict outputs come out sorted by name; put them back in the model's order.
    by_name = {o.name: o for o in proto.graph.output}
    ordered = [by_name[n] for n in traced.output_names if n in by_name]
    del proto.graph.output[:]
    proto.graph.output.extend(ordered)
    proto.ir_version = IR_VERSION
    proto.producer_name = "dlinfer.export"
    return proto
