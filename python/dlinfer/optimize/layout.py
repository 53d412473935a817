"""Graph rewrites before optimizing: the shapes tf2onnx computes at run time, made static.

Keras' ``Flatten`` on an NHWC tensor reaches ONNX as ``Transpose`` (NCHW -> NHWC) then a
``Reshape`` whose target is computed from ``Shape`` -> ``Gather``/``Slice`` -> ``Concat``
of the tensor *before* the transpose.  That side branch is cheap in itself, but it pins
the layout: onnxruntime's int8 convolutions run NHWC, and the inserted
NHWC -> NCHW transpose cannot cancel tf2onnx's NCHW -> NHWC one while ``Shape`` still
reads the NCHW tensor.  On the exported MNIST CNN that transpose was 8% of an int8 run
at batch 32.  A ``Flatten(axis=1)`` says the same thing without the side branch.

Which reshapes are flattens is *measured*, not pattern-matched: onnxruntime evaluates
every ``Reshape``'s data and target at two batch sizes, and a reshape qualifies only
when it maps ``(N, ...)`` to ``(N, prod(...))`` at both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..verification.per_layer import onnxruntime_tensors

__all__ = ["flatten_reshapes", "prune", "rewrite_for_cpu", "sample_batches"]

# Two batch sizes tell a batch axis from a constant one; 3 is not a dimension any zoo
# model has elsewhere.
_BATCHES = (1, 3)


def _is_batch_flatten(data: np.ndarray, target: np.ndarray, batch: int) -> bool:
    """Whether ``Reshape(data, target)`` keeps axis 0 (the batch) and flattens the rest."""
    target = [int(t) for t in np.asarray(target).reshape(-1)]
    if data.ndim < 2 or data.shape[0] != batch or len(target) != 2:
        return False
    rest = int(np.prod(data.shape[1:]))
    first_ok = target[0] == batch or (target[0] in (0, -1) and target[1] == rest)
    return first_ok and target[1] in (rest, -1) and target != [-1, -1]


def flatten_reshapes(proto: onnx.ModelProto,
                     batches: Mapping[int, Mapping[str, np.ndarray]]) -> int:
    """Replace, in place, every top-level ``Reshape`` that flattens per sample with
    ``Flatten(axis=1)``; returns how many.  ``batches`` maps a batch size to a feed of
    that many samples (see :func:`sample_batches`)."""
    reshapes = [n for n in proto.graph.node if n.op_type == "Reshape"]
    if not reshapes:
        return 0
    names = sorted({t for n in reshapes for t in n.input[:2]})
    seen = {size: onnxruntime_tensors(proto, dict(feed), names) for size, feed in batches.items()}
    replaced = 0
    for node in reshapes:
        if all(_is_batch_flatten(seen[b][node.input[0]], seen[b][node.input[1]], b)
               for b in seen):
            flatten = helper.make_node("Flatten", [node.input[0]], list(node.output),
                                       name=node.name, axis=1)
            node.CopyFrom(flatten)
            replaced += 1
    if replaced:
        prune(proto)
    return replaced


def rewrite_for_cpu(proto: onnx.ModelProto, batches: Mapping[int, Mapping[str, np.ndarray]],
                    for_int8: bool = False) -> dict[str, int]:
    """Every rewrite of this module and :mod:`.convs`, in place; returns the counts made.

    ``for_int8`` adds the sub-pixel form of transposed convolutions, which only pays
    once its Conv is quantized (see :mod:`.convs`).
    """
    from .convs import block_narrow_convs, subpixel_conv_transposes

    done = {"reshape_to_flatten": flatten_reshapes(proto, batches)}
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    if convs:
        one = min(batches)
        names = sorted({n.input[0] for n in convs})
        shapes = {k: list(v.shape) for k, v in
                  onnxruntime_tensors(proto, dict(batches[one]), names).items()}
        if for_int8:
            done["conv_transpose_to_subpixel_conv"] = subpixel_conv_transposes(proto, shapes)
        done["narrow_conv_blocked"] = block_narrow_convs(proto, shapes)
    return {k: v for k, v in done.items() if v}


def sample_batches(inputs: Sequence[Any], samples: Mapping[str, np.ndarray]
                   ) -> dict[int, dict[str, np.ndarray]]:
    """Feeds of 1 and 3 samples, cut from (and repeated up from) real samples."""
    out = {}
    for size in _BATCHES:
        out[size] = {s.name: np.resize(samples[s.name], (size, *samples[s.name].shape[1:]))
                     .astype(samples[s.name].dtype) for s in inputs}
    return out


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Outer-scope names an If/Loop/Scan body reads (a body may use any of them)."""
    reads: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            for inner in graph.node:
                reads.update(inner.input)
                reads.update(_subgraph_reads(inner))
    return reads


def prune(proto: onnx.ModelProto) -> None:
    """Drop, in place, the nodes and initializers no graph output depends on."""
    graph = proto.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
            needed.update(_subgraph_reads(node))
    if len(kept) != len(graph.node):
        kept.reverse()
        del graph.node[:]
        graph.node.extend(kept)
    initializers = [t for t in graph.initializer if t.name in needed]
    if len(initializers) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(initializers)
