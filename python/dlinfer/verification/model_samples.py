"""Samples for one ONNX model, on its real batch axes and at sizes its graph runs at.

:mod:`.samples` says what a valid value of an input looks like; this module adds what
the graph says: where each input's samples lie (:mod:`dlinfer.runtime.batch_axis`),
every fixed dimension, and a size for each dynamic one that the graph accepts.  A
graph may refuse a size its inputs declare dynamic (PaddleOCR's recogniser pools its
height below 1 at 32; a detector needs multiples of 32), so drawn samples try sizes
until onnxruntime runs one; data given by the user is run once the same way, so a
size the graph cannot take is refused here, naming it, and not deep inside a command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import DlinferError, InferenceError, InputError, InputShapeError
from ..runtime.batch_axis import BatchAxis, batch_axes, graph_dims, split
from ..runtime.tensors import check_tensor
from ..spec import InputSpec
from .samples import _describe, _random_input, load_samples

__all__ = ["SIZES", "drawn_axes", "input_specs", "model_samples", "with_shapes"]

# Sizes tried, in order, for a dynamic axis that is not a batch axis: 32 first, as
# dlinfer always drew; then sizes the common vision backbones run at.
SIZES = (32, 64, 128, 224, 256, 320, 16, 8, 1)


def input_specs(model: Any) -> list[InputSpec]:
    """The spec's inputs, or, for a file without one, plain arrays of each input's type."""
    if model.spec is not None:
        return list(model.spec.inputs)
    return [InputSpec(name=t.name, shape=t.shape, dtype=t.dtype.name, kind="features",
                      layout="NC", color=None, scale=1.0) for t in model.inputs]


def with_shapes(dims: Mapping[str, list[Any]], axes: Mapping[str, BatchAxis],
                shapes: Mapping[str | None, tuple[int, ...]] | None) -> dict[str, list[Any]]:
    """The graph's input ``dims`` with the sizes ``shapes`` gives (``{input name or None
    for the only input: shape}``, as ``bench --input-shape`` takes them) in place of its
    dynamic ones; a batch axis keeps its own (the batch size sets it).  A name that is
    no input, another rank, or a size that contradicts a fixed one is an
    :class:`~dlinfer.InputShapeError`."""
    out = {name: list(d) for name, d in dims.items()}
    for name, shape in (shapes or {}).items():
        if name is None:
            if len(out) != 1:
                raise InputShapeError(f"the model has {len(out)} inputs {list(out)}: name "
                                      "the input, NAME=" + "x".join(map(str, shape)))
            name = next(iter(out))
        if name not in out:
            raise InputShapeError(f"input shape for {name!r}: the model has no input of that "
                                  f"name; its inputs are {list(out)}")
        graph = out[name]
        text = "x".join(map(str, shape))
        if len(shape) != len(graph):
            raise InputShapeError(f"input shape {text} for {name!r}: the input has rank "
                                  f"{len(graph)}: {_dims_text(graph)}")
        for a, (given, d) in enumerate(zip(shape, graph)):
            if a == axes[name].axis:
                continue
            if isinstance(d, int) and d != given:
                raise InputShapeError(f"input shape {text} for {name!r}: axis {a} is fixed "
                                      f"at {d}: {_dims_text(graph)}")
            graph[a] = given
    return out


def _dims_text(dims: list[Any]) -> str:
    return "(" + ", ".join(str(d) if d is not None else "?" for d in dims) + ")"


def _draw(dims: Mapping[str, list[Any]], inputs: list[InputSpec],
          axes: Mapping[str, BatchAxis], count: int, size: int, seed: int
          ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in inputs:
        axis = axes[spec.name].axis
        shape = tuple(count if a == axis else d if isinstance(d, int) else size
                      for a, d in enumerate(dims[spec.name]))
        feed[spec.name] = _random_input(spec, count, rng, shape)
    return feed


def drawn_axes(model: Any, axes: Mapping[str, BatchAxis],
               shapes: Mapping[str | None, tuple[int, ...]] | None = None
               ) -> dict[str, list[int]]:
    """Each input's axes that drawn samples get a size for (:data:`SIZES`): dynamic,
    not its batch axis, and not set by ``shapes``; inputs with none are left out."""
    dims = with_shapes(graph_dims(model), axes, shapes)
    found = {name: [a for a, d in enumerate(each) if not isinstance(d, int)
                    and a != axes[name].axis] for name, each in dims.items()}
    return {name: drawn for name, drawn in found.items() if drawn}


def _probe(model: Any, feed: dict[str, np.ndarray], axes: Mapping[str, BatchAxis],
           check: Callable[[dict[str, np.ndarray]], Any] | None = None) -> None:
    """Run the first sample (one run) through onnxruntime, then ``check``: DlinferError
    if either refuses.  onnxruntime's own log of the refusal is silenced: the error
    that matters is raised, and a refused size is expected while sizes are tried."""
    import onnxruntime as ort

    first = next(split(feed, axes, 1))
    for info in model.inputs:  # dtype and fixed sizes: dlinfer's own typed errors
        check_tensor(info, first[info.name].dtype, first[info.name].shape)
    if getattr(model, "backend", "onnxruntime") != "onnxruntime":
        model.run(first)
    else:
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # fatal only
        try:
            model.session.run(None, first, quiet)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped exceptions
            raise InferenceError(f"onnxruntime failed on {model.path}: {exc}") from None
    if check is not None:
        check(first)


def _shapes(feed: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in feed.items())


def model_samples(model: Any, data: Any, count: int, seed: int = 0,
                  axes: Mapping[str, BatchAxis] | None = None,
                  check: Callable[[dict[str, np.ndarray]], Any] | None = None,
                  shapes: Mapping[str | None, tuple[int, ...]] | None = None
                  ) -> tuple[dict[str, np.ndarray], str, dict[str, BatchAxis]]:
    """At most ``count`` samples for ``model`` (a :class:`~dlinfer.Model`) from ``data``
    (as :func:`.samples.load_samples` takes it; ``None``: drawn at random).

    ``check``: called on one run of drawn samples after onnxruntime ran it; a
    :class:`~dlinfer.DlinferError` from it rejects that size too (``verify`` passes the
    reference executor, which refuses a pooling window larger than its input where
    onnxruntime quietly runs it).  ``shapes``: sizes for dynamic axes of drawn samples
    (:func:`with_shapes`); the sizes tried fill only the axes it leaves dynamic.

    Returns the feed (batch inputs holding the samples along their batch axes, inputs
    without one whole), where it came from, and the batch axes.  Raises
    :class:`~dlinfer.InputError` naming the inputs and shapes when onnxruntime cannot
    run the data, or no drawn size runs.
    """
    axes = dict(axes) if axes is not None else batch_axes(model)
    inputs = input_specs(model)
    if data is not None:
        feed, source = load_samples(data, inputs, count, seed, axes=axes)
        try:
            _probe(model, feed, axes)
        except DlinferError as exc:
            raise InputError(f"{source}: the model does not run on inputs of shapes "
                             f"{_shapes(feed)}: {exc}") from None
        return feed, source, axes
    dims = with_shapes(graph_dims(model), axes, shapes)
    sizes = SIZES if drawn_axes(model, axes, shapes) else SIZES[:1]
    failures = []
    for size in sizes:
        feed = _draw(dims, inputs, axes, count, size, seed)
        try:
            _probe(model, feed, axes, check)
        except DlinferError as exc:
            if shapes and len(sizes) == 1:
                raise InputShapeError(f"the model does not run on inputs of shapes "
                                      f"{_shapes(feed)}: {exc}") from None
            failures.append(f"{size}: {exc}")
            continue
        source = (f"random {', '.join(dict.fromkeys(_describe(s) for s in inputs))}, "
                  f"seed {seed}")
        if size != SIZES[0]:
            source += f", dynamic axes at {size} (the graph refused {sizes[:len(failures)]})"
        return feed, source, axes
    raise InputError(
        f"no drawn input runs through {model.path}: tried shapes like {_shapes(feed)} with "
        f"every dynamic axis at {list(sizes)}; onnxruntime said ({failures[0]}); give real "
        "samples with --data (a .npz keyed by input name)")
