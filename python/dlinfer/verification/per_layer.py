"""Per-layer comparison: which ONNX tensor carries each Keras layer's output, and where
Keras and the export part ways.

Any Functional or Sequential model: branches, residual adds, concatenations, nested
models and recurrent layers.

- **Keras side.** The model runs once on the samples with every layer's ``call``
  wrapped, recording each output in execution order.  A layer called by a model
  (nested models included) gets a row; a layer called by another layer (an LSTM's
  cell, an attention layer's projections) is part of its caller's row.
- **ONNX side.** tf2onnx names every node after the Keras name scopes it came from
  (``model_1/block1_conv1_1/Relu``), so a layer's candidates are the tensors in its
  scope with its output's shape (or that shape's NCHW transpose); a layer with none
  (a Dropout folded away) takes any tensor of its shape.  The candidate closest to
  Keras wins, the later among equals (Conv -> Add -> Relu: the Relu carries the
  layer).  A layer that matches nothing while a layer a few steps down its path
  matches was fused into it by the converter, and is not counted as diverging.
- **Values** come from dlinfer's reference executor when it can run the graph (the
  third opinion) and from onnxruntime otherwise; for the first diverging layer
  onnxruntime's value of the same tensor is compared too, so a bug in dlinfer's own
  kernels is not blamed on the export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .compare import Comparison, compare

__all__ = ["MAX_SAMPLES", "LayerResult", "per_layer"]

# Every layer's output and every float tensor of the graph are held for the walk:
# at most this many samples.
MAX_SAMPLES = 8


@dataclass
class LayerResult:
    index: int
    layer: str
    layer_type: str
    shape: tuple[int, ...]
    onnx_tensor: str | None
    layout: str | None  # how the ONNX tensor holds it: "NHWC" (as is), "NCHW", ...
    comparison: Comparison | None  # the tensor (reference, else onnxruntime) vs Keras
    # For the first diverging layer only: onnxruntime's value of the same tensor
    # vs Keras, so that a bug in dlinfer's own kernels cannot pass for a bad export.
    onnxruntime: Comparison | None = None

    @property
    def ok(self) -> bool:
        return self.comparison is not None and self.comparison.ok

    # No ONNX tensor matches, yet a layer a few steps downstream does: the converter
    # fused the layer into what it feeds (a Conv folded with its BatchNormalization),
    # so its own output never exists in the graph.
    fused: bool = False

    @property
    def bad(self) -> bool:
        """Matched, past tolerance, and not fused away: evidence of a diverging export."""
        return self.comparison is not None and not self.comparison.ok and not self.fused


# ---- Keras: every layer's output, in execution order ------------------------------------


def keras_layer_outputs(model: Any, args: Any) -> list[tuple[Any, np.ndarray]]:
    """(layer, output) for each layer a model calls, in order; first call of each layer."""
    import keras

    from ..export.prepare import all_layers

    records: list[tuple[Any, np.ndarray]] = []
    seen: set[int] = set()
    stack: list[Any] = [model]
    wrapped = [lay for lay in all_layers(model) if not isinstance(lay, keras.layers.InputLayer)]

    def wrap(layer: Any) -> None:
        call = layer.call

        def recorded(*a: Any, **kw: Any) -> Any:
            parent = stack[-1]
            stack.append(layer)
            try:
                out = call(*a, **kw)
            finally:
                stack.pop()
            if isinstance(parent, keras.Model) and id(layer) not in seen and not (
                    isinstance(layer, keras.Model)) and hasattr(out, "shape"):
                seen.add(id(layer))
                records.append((layer, np.asarray(out)))
            return out

        # Past Keras's attribute tracking: the wrapper is not state of the layer.
        object.__setattr__(layer, "call", recorded)

    own = [lay for lay in wrapped if "call" in vars(lay)]  # a call set on the instance
    saved = [vars(lay)["call"] for lay in own]
    for layer in wrapped:
        wrap(layer)
    try:
        model(args, training=False)
    finally:
        for layer in wrapped:
            object.__delattr__(layer, "call")  # the class's call again
        for layer, call in zip(own, saved):
            object.__setattr__(layer, "call", call)
    return records


# ---- ONNX: the graph's tensors, by name and scope -------------------------------------------


def _float_tensors(proto: Any) -> list[str]:
    """Top-level node outputs that hold floats, in graph order."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.output]}
    return [o for n in proto.graph.node for o in n.output
            if o and types.get(o) == onnx.TensorProto.FLOAT]


def onnxruntime_tensors(proto: Any, feed: dict[str, np.ndarray], names: list[str]
                        ) -> dict[str, np.ndarray]:
    """Intermediate tensors from onnxruntime: the graph with ``names`` as extra outputs.

    Unoptimized, so that every tensor named in the file still exists and holds what
    the file says (the one place dlinfer reads a graph's insides through onnxruntime:
    ``verify --per-layer`` and ``dlinfer optimize``'s worst-layer search).
    """
    import onnxruntime as ort
    from onnx import ValueInfoProto

    if not names:
        return {}
    model = type(proto)()
    model.CopyFrom(proto)
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:  # no type needed: onnxruntime infers it
            model.graph.output.append(ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feed)))


def _scopes(tensor: str, layers: list[Any]) -> set[int]:
    """The layers (by id) whose name scope holds ``tensor``."""
    from ..export.prepare import in_scope

    return {id(layer) for part in tensor.split("/")[:-1] for layer in layers
            if in_scope(part, layer.name)}


# A fused group is short: Conv + BatchNormalization (+ an activation or a pad).
_FUSED_DEPTH = 3


def _mark_fused(results: list[LayerResult], layers: list[Any]) -> None:
    """Flag the rows whose divergence does not propagate: fused into what they feed.

    A real divergence reaches every layer downstream.  A layer with no tensor of its
    own differs from every candidate, yet a layer at most :data:`_FUSED_DEPTH` steps
    further down the same path (all of whose intermediate rows differ too) matches.
    """
    row_of = {id(layer): row for layer, row in zip(layers, results)}
    children: dict[int, list[int]] = {id(layer): [] for layer in layers}
    for layer in layers:
        for parent in _parents(layer):
            if parent in children:
                children[parent].append(id(layer))
    for layer, row in zip(layers, results):
        if row.comparison is None or row.ok:
            continue
        frontier, depth = children[id(layer)], 1
        while frontier and depth <= _FUSED_DEPTH and not row.fused:
            row.fused = any(row_of[c].ok for c in frontier)
            frontier = [g for c in frontier if not row_of[c].ok for g in children[c]]
            depth += 1


def _parents(layer: Any) -> set[int]:
    """The layers (by id) whose outputs ``layer`` takes, where Keras records them."""
    found = set()
    for node in getattr(layer, "_inbound_nodes", ()):
        for parent in getattr(node, "parent_nodes", ()):
            operation = getattr(parent, "operation", None)
            if operation is not None:
                found.add(id(operation))
    return found


def _layouts(kshape: tuple[int, ...], oshape: tuple[int, ...]) -> list[str]:
    """How an ONNX tensor of ``oshape`` can hold a Keras output of ``kshape``."""
    out = [name for name, (fits, _) in _LAYOUTS.items() if fits(kshape, oshape)]
    return out


# name -> (does an ONNX shape fit the Keras one, the ONNX value in Keras's layout)
_LAYOUTS = {
    "NHWC": (lambda k, o: o == k, lambda v: v),
    # tf2onnx keeps convolutions in NCHW between its transposes
    "NCHW": (lambda k, o: len(k) == 4 and o == (k[0], k[3], k[1], k[2]),
             lambda v: v.transpose(0, 2, 3, 1)),
    # a 1-D convolution runs as a 2-D one with a unit height
    "NC1W": (lambda k, o: len(k) == 3 and o == (k[0], k[2], 1, k[1]),
             lambda v: v[:, :, 0, :].transpose(0, 2, 1)),
    "N1WC": (lambda k, o: len(k) == 3 and o == (k[0], 1, k[1], k[2]), lambda v: v[:, 0]),
    # recurrent layers loop over time first
    "TNC": (lambda k, o: len(k) == 3 and k[0] != k[1] and o == (k[1], k[0], k[2]),
            lambda v: v.transpose(1, 0, 2)),
}


def _as_keras(value: np.ndarray, layout: str) -> np.ndarray:
    return _LAYOUTS[layout][1](value)


# ---- the walk ----------------------------------------------------------------------------


def per_layer(keras_model: Any, keras_args: Any, proto: Any, feed: dict[str, np.ndarray],
              graph: Any, atol: float, rtol: float) -> list[LayerResult]:
    """One row per Keras layer; ``graph`` is the reference executor's, or None."""
    from . import reference

    records = keras_layer_outputs(keras_model, keras_args)
    layers = [layer for layer, _ in records]
    names = _float_tensors(proto)
    # Every float tensor once, from onnxruntime: the shapes to match (a recurrent layer's
    # are time-major), and the values where the reference executor cannot run.
    ort_values = onnxruntime_tensors(proto, feed, names)
    shapes = {n: v.shape for n, v in ort_values.items()}
    scopes = {n: _scopes(n, layers) for n in names}
    # The exporter renames the final tensors after the model's outputs: no scope left.
    finals = {o.name for o in proto.graph.output}
    batch = len(next(iter(feed.values())))

    plans: list[list[tuple[int, str, str]]] = []
    for layer, kout in records:
        kshape = (batch, *kout.shape[1:])
        fits = [(i, n, lay) for i, n in enumerate(names)
                for lay in _layouts(kshape, shapes[n])]
        scoped = [c for c in fits if id(layer) in scopes[c[1]] or c[1] in finals]
        # No scope (an identity such as Dropout, folded away): any tensor of its shape.
        plans.append(scoped or fits)
    wanted = list(dict.fromkeys(n for plan in plans for _, n, _ in plan))
    values = reference.run(graph, feed, outputs=wanted) if graph is not None else ort_values

    results: list[LayerResult] = []
    for index, ((layer, kout), plan) in enumerate(zip(records, plans)):
        best: tuple[Comparison, int, str, str] | None = None
        for i, name, lay in plan:
            c = compare(layer.name, _as_keras(values[name], lay), kout, atol, rtol)
            key = (c.ok, -c.max_abs, i)
            if best is None or key >= (best[0].ok, -best[0].max_abs, best[1]):
                best = (c, i, name, lay)
        row = LayerResult(index, layer.name, type(layer).__name__, tuple(kout.shape),
                          None, None, None)
        if best is not None:
            row.comparison, _, row.onnx_tensor, row.layout = best
        results.append(row)
    _mark_fused(results, layers)
    bad = next((r for r in results if r.bad), None)
    if bad is not None:
        bad.onnxruntime = compare(bad.layer, _as_keras(ort_values[bad.onnx_tensor], bad.layout),
                                  records[bad.index][1], atol, rtol)
    return results
