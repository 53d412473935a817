"""The spec checked against the graph it describes, when a model opens.

A spec is written by hand (``dlinfer spec set``), by the exporter or by another tool,
and nothing stops it from claiming what the graph does not take: 32x32 images for a
28x28 input, RGB for one channel, NCHW for NHWC, 5 labels for 10 outputs.  Each of
those would load and then fail every prediction (or, worse, answer with the wrong
label), so :class:`~dlinfer.Model` refuses them at open with a :class:`SpecError`
naming the spec's field and the graph's value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import SpecError
from .spec import InputSpec, ModelSpec, OutputSpec, shape_text

__all__ = ["check_against_graph", "one_unit_problem", "output_width"]

# (name, shape with None for dynamic sizes, dtype name): a graph input or output.
Tensor = tuple[str, tuple[int | None, ...], str]


def _tensor(t: Any) -> Tensor:
    """A TensorInfo, or a (name, shape, dtype) tuple, as a Tensor."""
    if isinstance(t, tuple):
        name, shape, dtype = t
    else:
        name, shape, dtype = t.name, t.shape, t.dtype
    return name, tuple(shape), np.dtype(dtype).name


_shape = shape_text


def output_width(shape: Sequence[int | None]) -> int | None:
    """Values per item of an output of this shape; None when any of them is dynamic."""
    rest = shape[1:]
    return None if None in rest else math.prod(rest)  # type: ignore[arg-type]


def _matched(items: Sequence[Any], tensors: Sequence[Tensor]) -> list[tuple[Any, Tensor]]:
    """Spec items paired with the graph tensors they describe: by name, or the one item
    with the one tensor (a one-tensor spec may use another name, as version 1 did)."""
    if len(items) == 1 == len(tensors):
        return [(items[0], tensors[0])]
    by_name = {t[0]: t for t in tensors}
    return [(item, by_name[item.name]) for item in items if item.name in by_name]


def check_against_graph(spec: ModelSpec, inputs: Sequence[Any], outputs: Sequence[Any],
                        where: str) -> None:
    """Raise :class:`SpecError` where ``spec`` contradicts the graph's ``inputs`` and
    ``outputs`` (TensorInfo, or (name, shape, dtype) tuples); ``where`` names the file."""
    graph_in = [_tensor(t) for t in inputs]
    graph_out = [_tensor(t) for t in outputs]
    hint = "; fix it with `dlinfer spec set`"
    for item, tensor in _matched(spec.inputs, graph_in):
        problem = _input_problem(item, tensor)
        if problem:
            raise SpecError(f"{where}: the spec's input {item.name!r} {problem}{hint}")
    names = [t[0] for t in graph_out]
    if len(spec.outputs) > 1 or len(graph_out) > 1:
        missing = [o.name for o in spec.outputs if o.labels and o.name not in names]
        if missing:
            raise SpecError(f"{where}: the spec's output {missing[0]!r} is not one of the "
                            f"graph's outputs {names}{hint}")
    for item, tensor in _matched(spec.outputs, graph_out):
        problem = _output_problem(spec, item, tensor)
        if problem:
            raise SpecError(f"{where}: the spec's output {item.name!r} {problem}{hint}")


def one_unit_problem(task: str, width: int | None) -> str | None:
    """Why a labelled head ``width`` values wide cannot serve ``task``, or None.

    One value per item is one sigmoid unit: read as a ``classification`` head its argmax
    is label 0 whatever the probability, a silent wrong answer.  The exporter and
    :func:`check_against_graph` (``spec set``, ``Model``) both ask this.
    """
    if width != 1 or task == "binary_classification":
        return None
    return ("has 1 value per item (one sigmoid unit: a binary classifier, whose argmax "
            "would always be label 0); use --task binary_classification with two labels")


def _input_problem(item: InputSpec, tensor: Tensor) -> str | None:
    _, shape, dtype = tensor
    graph = f"the graph's input {tensor[0]!r} {_shape(shape)} {dtype}"
    if item.dtype != dtype:
        return f"has dtype {item.dtype}, but {graph} takes {dtype}"
    if len(item.shape) != len(shape):
        return (f"has shape {_shape(item.shape)} (rank {len(item.shape)}), but {graph} "
                f"has rank {len(shape)}")
    if item.kind == "image":
        axis = 3 if item.layout == "NHWC" else 1
        if shape[axis] is not None and shape[axis] != item.channels:
            return (f"has layout {item.layout} and color {item.color} ({item.channels} "
                    f"channel(s) on axis {axis}), but {graph} has {shape[axis]} there")
    for axis, (claimed, actual) in enumerate(zip(item.shape, shape)):
        if claimed is not None and actual is not None and claimed != actual:
            return (f"has shape {_shape(item.shape)}, but {graph} has size {actual} on "
                    f"axis {axis}")
    return None


def _output_problem(spec: ModelSpec, item: OutputSpec, tensor: Tensor) -> str | None:
    if not item.labels or item.kind not in ("probabilities", "logits"):
        return None
    width = output_width(tensor[1])
    if width is None:
        return None  # dynamic: Classifier checks each batch it gets
    graph = f"the graph's output {tensor[0]!r} {_shape(tensor[1])}"
    if spec.task == "binary_classification" and item.threshold is not None:
        if width != 1:
            return (f"is a binary head with a threshold (one sigmoid unit), but {graph} has "
                    f"{width} values per item")
        return None
    problem = one_unit_problem(spec.task, width)
    if problem:
        return (f"is a {spec.task} head, but {graph} {problem} and a threshold "
                "(--labels no,yes --threshold 0.5)")
    if width != len(item.labels):
        return f"has {len(item.labels)} labels, but {graph} has {width} values per item"
    return None
