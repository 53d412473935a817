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

from ..errors import DlinferError, InferenceError, InputError
from ..runtime.batch_axis import BatchAxis, batch_axes, graph_dims, split
from ..runtime.tensors import check_tensor
from ..spec import InputSpec
from .samples import _describe, _random_input, load_samples

__all__ = ["SIZES", "input_specs", "model_samples"]

# Sizes tried, in order, for a dynamic axis that is not a batch axis: 32 first, as
# dlinfer always drew; then sizes the common vision backbones run at.
SIZES = (32, 64, 128, 224, 256, 320, 16, 8, 1)


def input_specs(model: Any) -> list[InputSpec]:
    """The spec's inputs, or, for a file without one, plain arrays of each input's type."""
    if model.spec is not None:
        return list(model.spec.inputs)
    return [InputSpec(name=t.name, shape=t.shape, dtype=t.dtype.name, kind="features",
                      layout="NC", color=None, scale=1.0) for t in model.inputs]


def _draw(model: Any, inputs: list[InputSpec], axes: Mapping[str, BatchAxis], count: int,
          size: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dims = graph_dims(model)
    feed = {}
    for spec in inputs:
        axis = axes[spec.name].axis
        shape = tuple(count if a == axis else d if isinstance(d, int) else size
                      for a, d in enumerate(dims[spec.name]))
        feed[spec.name] = _random_input(spec, count, rng, shape)
    return feed


def _dynamic(model: Any, axes: Mapping[str, BatchAxis]) -> bool:
    """Whether some axis other than a batch axis has no fixed size."""
    return any(not isinstance(d, int) and a != axes[name].axis
               for name, dims in graph_dims(model).items() for a, d in enumerate(dims))


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
                  check: Callable[[dict[str, np.ndarray]], Any] | None = None
                  ) -> tuple[dict[str, np.ndarray], str, dict[str, BatchAxis]]:
    """At most ``count`` samples for ``model`` (a :class:`~dlinfer.Model`) from ``data``
    (as :func:`.samples.load_samples` takes it; ``None``: drawn at random).

    ``check``: called on one run of drawn samples after onnxruntime ran it; a
    :class:`~dlinfer.DlinferError` from it rejects that size too (``verify`` passes the
    reference executor, which refuses a pooling window larger than its input where
    onnxruntime quietly runs it).

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
    sizes = SIZES if _dynamic(model, axes) else SIZES[:1]
    failures = []
    for size in sizes:
        feed = _draw(model, inputs, axes, count, size, seed)
        try:
            _probe(model, feed, axes, check)
        except DlinferError as exc:
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
