"""The one rule for each input's batch axis: declared, else inferred where certain, else none.

Everything that runs a model on many samples (``verify``, ``optimize``'s calibration,
evaluation and gate, ``bench``, the Batcher, ``dlinfer serve``'s v2 tensor route) asks
this module where an input's samples lie, instead of taking axis 0 of every input:

1. **Declared**: the model's dlinfer spec records ``batch_axis`` per input (``null``:
   none).  A spec written before the field existed was written by dlinfer's own
   exporter, whose inputs are batch-first: axis 0.
2. **Inferred**, only where real files leave no doubt:

   - a dimension named like a batch (``batch``, ``batch_size``, ``N``, ``B``) on exactly
     one axis of the input; another input with the same dimension name shares it;
   - a fixed size of 1 on axis 0: a fixed batch of 1, run one sample at a time;
   - a 4-D image (``(N, C, H, W)`` or ``(N, H, W, C)`` with 1, 3 or 4 fixed channels)
     with a dynamic axis 0.

3. **None** otherwise.  The input is fed whole, never sliced nor grouped, and
   :func:`notes` says how to declare the axis (``dlinfer spec set --batch-axis``).

Real files defeat the obvious guesses, hence the caution: Silero's streaming model takes
``(sequence_length, 576)``, whose axis 0 is time (the LSTM state carries across frames);
its recurrent state is ``(2, batch, 128)``; a 0-d sample rate has no axes at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputShapeError

__all__ = ["BatchAxis", "axes_of", "batch_axes", "can_group", "fixed_run_size", "graph_dims",
           "merge_outputs", "notes", "output_axes", "proto_dims", "run_limit", "run_split",
           "runnable_sizes", "sample_count", "split", "with_batch_axes"]

# Dimension names that say "batch" (tf2onnx's unk__N, PaddleOCR's DynamicDimension.N and
# unnamed dimensions say nothing).
_BATCH_NAME = re.compile(r"^(n|b|bs|nb|batch.*|.*_batch|.*batch_?size.*|num_?samples)$",
                         re.IGNORECASE)
_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class BatchAxis:
    """Where one input's samples lie.

    ``axis`` None: no batch axis, the input is fed whole.  ``size``: that axis's fixed
    size in the graph (1 for a fixed batch of 1; a run holds exactly this many
    samples), None when dynamic.  ``source``: ``spec``, ``inferred`` or ``none``, and
    ``reason`` says why in words.
    """

    input: str
    axis: int | None
    size: int | None
    source: str
    reason: str

    def describe(self) -> str:
        if self.axis is None:
            return f"none ({self.reason})"
        size = "dynamic" if self.size is None else f"fixed at {self.size}"
        return f"{self.axis} ({size}; {self.source}: {self.reason})"


def graph_dims(model: Any) -> dict[str, list[Any]]:
    """Each input's dimensions as the graph names them: int, str (a symbol) or None."""
    return _io_dims(model, "inputs")


def _io_dims(model: Any, which: str) -> dict[str, list[Any]]:
    """:func:`graph_dims` of the model's ``"inputs"`` or ``"outputs"``: onnxruntime's
    session, else the file's header (the same declarations, without the onnx package)."""
    if getattr(model, "backend", "onnxruntime") == "onnxruntime":
        nodes = model.session.get_inputs() if which == "inputs" else \
            model.session.get_outputs()
        return {node.name: [d if not isinstance(d, int) or d >= 0 else None
                            for d in node.shape] for node in nodes}
    from .onnx_header import read_header

    header = read_header(model.path)
    return {name: list(header.dims.get(name) or ())
            for name in (header.inputs if which == "inputs" else header.outputs)}


def proto_dims(proto: Any) -> dict[str, list[Any]]:
    """:func:`graph_dims` of an ``onnx.ModelProto``."""
    graph = proto.graph
    weights = {t.name for t in graph.initializer}
    return {i.name: [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else
                     (d.dim_param or None) for d in i.type.tensor_type.shape.dim]
            for i in graph.input if i.name not in weights}


def _declared(model: Any) -> dict[str, Any]:
    """``{input name: axis or None}`` the spec declares (absent: the spec says nothing)."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return {}
    return {i.name: getattr(i, "batch_axis", 0) for i in spec.inputs}


def _fixed(dims: list[Any], axis: int) -> int | None:
    return dims[axis] if isinstance(dims[axis], int) else None


def _infer(name: str, dims: list[Any]) -> tuple[int | None, str]:
    if not dims:
        return None, "a scalar (0-d) input"
    named = [a for a, d in enumerate(dims) if isinstance(d, str) and _BATCH_NAME.match(d)]
    if len(named) == 1:
        return named[0], f"dimension {dims[named[0]]!r}"
    if dims[0] == 1:
        return 0, "a fixed batch of 1"
    if len(dims) == 4 and not isinstance(dims[0], int) and (
            dims[1] in _CHANNELS or dims[3] in _CHANNELS):
        return 0, "a 4-D image with a dynamic first axis"
    if isinstance(dims[0], int):
        return None, f"axis 0 has a fixed size of {dims[0]}, so it is not a batch"
    return None, (f"axis 0 ({dims[0] or 'unnamed'}) may be a batch or a time axis; nothing "
                  "in the graph says which")


def batch_axes(model: Any) -> dict[str, BatchAxis]:
    """Each input's :class:`BatchAxis`, in the model's input order.

    ``model``: a :class:`~dlinfer.Model` (its session and spec are read).  Raises
    :class:`~dlinfer.InputShapeError` when the spec declares an axis the input lacks.
    """
    return axes_of(graph_dims(model), _declared(model))


def axes_of(graph: Mapping[str, list[Any]], declared: Mapping[str, int | None]
            ) -> dict[str, BatchAxis]:
    """The rule on the inputs' dimensions (:func:`graph_dims`) and what a spec declares
    (``{input name: axis or None}``); ``dlinfer spec set`` records what it infers."""
    found: dict[str, BatchAxis] = {}
    symbols: dict[str, str] = {}  # a batch dimension's name -> the input it was found on
    for name, dims in graph.items():
        if name in declared:
            axis = declared[name]
            if axis is not None and not 0 <= axis < len(dims):
                raise InputShapeError(
                    f"the spec declares batch axis {axis} for input {name!r}, which has "
                    f"{len(dims)} axes {tuple(dims)}; fix it with `dlinfer spec set "
                    f"--batch-axis {name}=K|none`")
            found[name] = BatchAxis(name, axis, None if axis is None else _fixed(dims, axis),
                                    "spec" if axis is not None else "none",
                                    "declared in the spec")
        else:
            axis, reason = _infer(name, dims)
            found[name] = BatchAxis(name, axis, None if axis is None else _fixed(dims, axis),
                                    "inferred" if axis is not None else "none", reason)
        b = found[name]
        if b.axis is not None and isinstance(dims[b.axis], str):
            symbols.setdefault(dims[b.axis], name)
    # An input without a batch axis that carries another input's batch dimension by
    # name (Silero's state (2, batch, 128) beside its audio (batch, samples)) shares it.
    for name, dims in graph.items():
        if found[name].axis is not None or name in declared:
            continue
        shared = [a for a, d in enumerate(dims) if isinstance(d, str) and d in symbols]
        if len(shared) == 1:
            d = dims[shared[0]]
            found[name] = BatchAxis(name, shared[0], None, "inferred",
                                    f"shares dimension {d!r} with input {symbols[d]!r}")
    return found


def notes(axes: Mapping[str, BatchAxis]) -> list[str]:
    """One line per input fed whole: why, and how to declare its batch axis."""
    return [f"input {b.input!r} has no known batch axis ({b.reason}): it is fed whole and "
            "requests are never grouped; if it has one, declare it with `dlinfer spec set "
            f"MODEL --batch-axis {b.input}=K`"
            for b in axes.values() if b.axis is None and b.reason != "a scalar (0-d) input"]


def fixed_run_size(axes: Mapping[str, BatchAxis]) -> int | None:
    """How many samples every run must hold: the graph's fixed batch size, 1 when no
    input has a batch axis (the whole feed is one sample), None when any size runs
    (some batch axis is dynamic; inputs without one are passed whole to each run)."""
    fixed = {b.size for b in axes.values() if b.axis is not None and b.size is not None}
    if len(fixed) > 1:
        raise InputShapeError(f"the inputs' fixed batch sizes differ: "
                              f"{ {b.input: b.size for b in axes.values() if b.size} }")
    if fixed:
        return fixed.pop()
    return None if any(b.axis is not None for b in axes.values()) else 1


def can_group(axes: Mapping[str, BatchAxis]) -> bool:
    """Whether samples may be stacked on their batch axes into runs of any size."""
    return fixed_run_size(axes) is None


def runnable_sizes(axes: Mapping[str, BatchAxis], sizes: list[int]) -> tuple[list[int], str]:
    """The batch sizes of ``sizes`` the graph can run, and a note on those it cannot.

    Raises :class:`~dlinfer.InputShapeError` naming the inputs when none can run.
    """
    fixed = fixed_run_size(axes)
    if fixed is None:
        return list(sizes), ""
    if any(b.axis is not None for b in axes.values()):
        why = ", ".join(f"input {b.input!r} has a fixed batch of {b.size} on axis {b.axis}"
                        for b in axes.values() if b.size is not None)
    else:
        why = "no input has a known batch axis (each run takes the inputs whole: batch 1)"
    kept = [s for s in sizes if s == fixed]
    if not kept:
        raise InputShapeError(f"{why}; batch sizes {sizes} cannot run: use batch size "
                              f"{fixed}")
    dropped = [s for s in sizes if s != fixed]
    return kept, (f"{why}: batch sizes {dropped} skipped" if dropped else "")


def run_limit(axes: Mapping[str, BatchAxis], wanted: int) -> int:
    """The most samples one run may hold: ``wanted``, or the graph's fixed batch size."""
    fixed = fixed_run_size(axes)
    return max(1, int(wanted)) if fixed is None else fixed


def sample_count(feed: Mapping[str, np.ndarray], axes: Mapping[str, BatchAxis]) -> int:
    """How many samples ``feed`` holds along its batch axes (1 when all are fed whole).

    Raises :class:`~dlinfer.InputShapeError` naming the inputs when they disagree.
    """
    counts = {}
    for name, b in axes.items():
        if b.axis is None or name not in feed:
            continue
        x = np.asarray(feed[name])
        if x.ndim <= b.axis:
            raise InputShapeError(f"input {name!r} has shape {x.shape}, without its batch "
                                  f"axis {b.axis}")
        counts[name] = x.shape[b.axis]
    if len(set(counts.values())) > 1:
        where = ", ".join(f"{n!r} {c} on axis {axes[n].axis}" for n, c in counts.items())
        raise InputShapeError(f"the inputs hold different numbers of samples along their "
                              f"batch axes: {where}")
    return next(iter(counts.values()), 1)


def _take(x: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def split(feed: Mapping[str, np.ndarray], axes: Mapping[str, BatchAxis], limit: int
          ) -> Iterator[dict[str, np.ndarray]]:
    """Runs of at most ``limit`` samples (exactly the graph's fixed batch size where it has
    one): batch inputs sliced on their own batch axis, the others whole in every run."""
    count = sample_count(feed, axes)
    step = run_limit(axes, limit)
    fixed = any(b.size is not None for b in axes.values() if b.axis is not None)
    if fixed and count % step:
        raise InputShapeError(f"the graph runs batches of exactly {step}; {count} samples "
                              f"are not a multiple of {step}")
    if all(b.axis is None for b in axes.values() if b.input in feed):
        yield dict(feed)
        return
    for start in range(0, count, step):
        yield {name: (x if axes[name].axis is None else
                      _take(np.asarray(x), axes[name].axis, start, start + step))
               for name, x in feed.items()}


def output_axes(model: Any, axes: Mapping[str, BatchAxis]) -> dict[str, int]:
    """Outputs whose batch axis the graph names with an input's batch dimension (Silero's
    ``stateN (2, batch, 128)``: axis 1); the others are left out."""
    dims = graph_dims(model)
    symbols = {dims[b.input][b.axis] for b in axes.values() if b.axis is not None
               and isinstance(dims[b.input][b.axis], str)}
    found = {}
    for name, shape in _io_dims(model, "outputs").items():
        hits = [a for a, d in enumerate(shape) if isinstance(d, str) and d in symbols]
        if len(hits) == 1:
            found[name] = hits[0]
    return found


def merge_outputs(parts: list[np.ndarray], axis: int | None = None,
                  sizes: list[int] | None = None) -> np.ndarray:
    """One array from the same output of consecutive runs.

    ``axis``: the output's batch axis (:func:`output_axes`), used where every part holds
    its run's ``sizes`` samples there.  Otherwise: declared output shapes cannot be
    trusted (an OCR model declares ``[1, seqlen]`` and returns ``(T, 1, classes)``), so
    runs are joined on axis 0 where every part's tail agrees; parts of one shape that do
    not are stacked on a new axis; anything else is flattened and joined, which still
    compares two runtimes element by element.
    """
    if len(parts) == 1:
        return parts[0]
    if axis is not None and sizes is not None and all(
            p.ndim > axis and p.shape[axis] == n for p, n in zip(parts, sizes, strict=True)):
        return np.concatenate(parts, axis=axis)
    first = parts[0]
    if first.ndim and all(p.ndim == first.ndim and p.shape[1:] == first.shape[1:]
                          for p in parts):
        return np.concatenate(parts)
    if all(p.shape == first.shape for p in parts):
        return np.stack(parts)
    return np.concatenate([p.reshape(-1) for p in parts])


def run_split(run: Callable[[dict[str, np.ndarray]], Any], feed: Mapping[str, np.ndarray],
              axes: Mapping[str, BatchAxis], limit: int, names: list[str],
              out_axes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """``run`` (a feed in, ``{output name: array}`` or an array out) over :func:`split`
    runs of ``feed``, each output's runs joined by :func:`merge_outputs` (on its
    ``out_axes`` batch axis where known)."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    sizes = []
    for part in split(feed, axes, limit):
        got = run(part)
        sizes.append(sample_count(part, axes))
        if not isinstance(got, Mapping):
            got = dict(zip(names, got if isinstance(got, (list, tuple)) else [got]))
        for n in names:
            parts[n].append(np.asarray(got[n]))
    out_axes = out_axes or {}
    return {n: merge_outputs(p, out_axes.get(n), sizes) for n, p in parts.items()}


def with_batch_axes(inputs: list[Any], graph: Mapping[str, list[Any]],
                    declared: Mapping[str, int | None], inferred: bool) -> list[Any]:
    """Spec inputs (:class:`~dlinfer.InputSpec`) with their ``batch_axis``: ``declared``
    where given (``dlinfer spec set --batch-axis``), else, for inputs ``inferred`` from
    the graph (``graph``: :func:`proto_dims`), what this rule infers."""
    import dataclasses

    from ..errors import SpecError

    names = [i.name for i in inputs]
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise SpecError(f"--batch-axis names {unknown}; the inputs are {names}")
    axes = axes_of(graph, {}) if inferred else {}
    return [dataclasses.replace(i, batch_axis=declared[i.name]) if i.name in declared else
            dataclasses.replace(i, batch_axis=axes[i.name].axis) if i.name in axes else i
            for i in inputs]
