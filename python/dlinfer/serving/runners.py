"""What a :class:`~dlinfer.Batcher` runs: one runner per kind of target.

Each runner checks one request in the caller's thread (``check``), and runs a
list of checked requests as one batch (``run``), returning a result per request
and the errors of the requests that failed alone.  ``start`` does the same in two
steps: it starts the batch and returns a function that waits for its results, so a
Batcher can prepare the next batch while the backend runs this one (``in_flight``).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..checks import check_int
from ..errors import (
    DlinferError,
    InferenceError,
    InputDtypeError,
    InputError,
    InputRankError,
    InputShapeError,
)
from ..preprocessing.batching import is_batch
from ..runtime.model import Model
from ..tasks.classifier import Classifier

__all__ = ["runner_for"]

# Same-shape images up to this many bytes in all are stacked into one array.
_STACK_BYTES = 64 * 2**20

# Classifier's own run_batch, as imported: a subclass's or a patched one is honoured.
_RUN_BATCH = Classifier.run_batch

# A started batch: called, it waits for the batch and returns (results, errors).
Finish = Callable[[], tuple[list[Any], dict[int, Exception]]]


def in_flight_of(model: Model, asked: int | None = None) -> int:
    """How many batches to keep in flight on ``model``: ``asked``, else what its backend
    suggests (OpenVINO: ``OpenVINOModel.in_flight``); 1 where the backend cannot start a
    run without waiting for it (onnxruntime here: one batch at a time, as before)."""
    if not hasattr(model, "start_run"):
        return 1
    return model.in_flight if asked is None else asked


class _Ran:
    """A run that has already run: ``result()`` as a started run's."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


class _ClassifierRunner:
    """Images in, :class:`~dlinfer.Prediction` out, through the Classifier's batch path."""

    kind = "classifier"

    def __init__(self, clf: Classifier, in_flight: int | None = None) -> None:
        self.clf = clf
        # Any other run_batch (a subclass's, a patched one) runs, one batch at a time.
        own = type(clf).run_batch is _RUN_BATCH
        self.in_flight = in_flight_of(clf.model, in_flight if own else 1)

    def check(self, item: Any) -> Any:
        if isinstance(item, np.ndarray):  # first: the common case skips the ABC checks
            arr = item
        elif isinstance(item, (str, os.PathLike, Image.Image)) or np.ndim(item) == 0:
            return item  # paths and PIL images are one image by construction
        else:
            arr = np.asarray(item)
        # One request is one image: an array holding several would shift every
        # result after it.
        batched = is_batch(arr)
        n = arr.shape[0] if batched else 1
        if n != 1:
            raise InputShapeError(
                f"a Batcher request is one image, got an array of {n} images (shape {arr.shape}); "
                "submit each image on its own"
            )
        # Store the image itself, so a list of requests is a list of images.
        return arr[0] if batched else arr

    def assemble(self, items: list[Any]) -> np.ndarray:
        first = items[0]
        one_image = (isinstance(first, np.ndarray) and first.dtype.kind in "fu"
                     and first.ndim in (2, 3) and not is_batch(first))
        if (one_image and first.nbytes * len(items) <= _STACK_BYTES
                and all(isinstance(x, np.ndarray) and x.shape == first.shape
                        and x.dtype == first.dtype for x in items)):
            # Same-shape images become one array: uint8 pixels then cost the native
            # kernel one call with no Python object per image, and float images are
            # normalized by NumPy in one vectorized pass.  Large images are left as a
            # list: a copy would double their memory and save nothing per image.
            stacked = np.stack(items)
            items = stacked[..., None] if first.ndim == 2 else stacked
        # The one coupling to preprocessing: the whole batch goes through the
        # Classifier's native batch assembly in a single call.
        return self.clf.preprocess(items)

    def run(self, items: list[Any], top_ks: list[int]) -> tuple[list[Any], dict[int, Exception]]:
        return self.start(items, top_ks)()

    def start(self, items: list[Any], top_ks: list[int]) -> Finish:
        """Preprocess and start the batch; the returned function waits for its results."""
        errors: dict[int, Exception] = {}
        try:
            batch = self.assemble(items)
            if len(batch) != len(items):
                raise InputError("batch assembly returned a different number of rows")
            good = list(range(len(items)))
        except (DlinferError, ValueError, TypeError):
            # Some item is bad: find it one by one, so it fails alone.
            good, rows = [], []
            for i, item in enumerate(items):
                try:
                    row = self.assemble([item])
                    if len(row) != 1:
                        raise InputShapeError(f"a request must hold one image, got {len(row)}")
                except (DlinferError, ValueError, TypeError) as exc:
                    errors[i] = exc
                    continue
                good.append(i)
                rows.append(row)
            if not good:
                return lambda: ([None] * len(items), errors)
            batch = np.concatenate(rows)
        clf = self.clf
        if self.in_flight > 1:
            started = clf.model.start_run(batch)
            proba = None
        else:
            proba = clf.run_batch(batch)

        def finish() -> tuple[list[Any], dict[int, Exception]]:
            p = proba if proba is not None else clf.probabilities(started.result())
            preds = clf.postprocess(p, [top_ks[i] for i in good])
            results: list[Any] = [None] * len(items)
            for i, pred in zip(good, preds, strict=True):
                results[i] = pred
            return results, errors

        return finish


class _ModelRunner:
    """Requests for a :class:`~dlinfer.Model`, grouped only along known batch axes.

    Where every input is batch-first with a dynamic batch axis
    (:mod:`dlinfer.runtime.batch_axis`), a request is one sample without that axis (an
    array, or a dict by input name) and requests are stacked into one run; results are
    that sample's output rows.  Any other model (a fixed batch, a recurrent state, a
    0-d input, axis 0 that may be time) takes each request whole, as ``Model.run``
    takes it, runs it alone and answers with what ``Model.run`` returns: such requests
    are never grouped.
    """

    kind = "model"

    def __init__(self, model: Model, in_flight: int | None = None) -> None:
        from ..runtime.batch_axis import batch_axes, can_group

        self.model = model
        self.names = [t.name for t in model.inputs]
        axes = batch_axes(model)
        self.grouped = can_group(axes) and all(b.axis == 0 for b in axes.values())
        # Requests run whole (never grouped) run one at a time, as Model.run.
        self.in_flight = in_flight_of(model, in_flight if self.grouped else 1)

    def check(self, item: Any) -> dict[str, np.ndarray]:
        if isinstance(item, Mapping):
            unknown, missing = set(item) - set(self.names), set(self.names) - set(item)
            if unknown or missing:
                raise InputError(f"a request holds the inputs {self.names}; unknown: "
                                 f"{sorted(unknown)}, missing: {sorted(missing)}")
            feed = {n: np.asarray(item[n]) for n in self.names}
        elif len(self.names) == 1:
            feed = {self.names[0]: np.asarray(item)}
        else:
            raise InputError(f"{self.model.path} has inputs {self.names}: a request is a dict "
                             "by input name")
        for info in self.model.inputs:
            arr = feed[info.name]
            if arr.dtype != info.dtype:
                raise InputDtypeError(
                    f"input {info.name!r} needs dtype {info.dtype.name}, got {arr.dtype.name}")
            want = info.shape[1:] if self.grouped else info.shape
            if arr.ndim != len(want) or any(
                    w is not None and w != g for w, g in zip(want, arr.shape, strict=True)):
                cls = InputRankError if arr.ndim != len(want) else InputShapeError
                dims = ", ".join("N" if d is None else str(d) for d in want)
                what = "one sample" if self.grouped else "the whole input (never grouped)"
                raise cls(f"a request for {info.name!r} is {what} of shape ({dims}), got "
                          f"{arr.shape}")
        return feed

    def run(self, items: list[Any], top_ks: list[int]) -> tuple[list[Any], dict[int, Exception]]:
        return self.start(items, top_ks)()

    def start(self, items: list[Any], top_ks: list[int]) -> Finish:
        """Start the batch's runs; the returned function waits for their results."""
        results: list[Any] = [None] * len(items)
        errors: dict[int, Exception] = {}
        if not self.grouped:
            for i, feed in enumerate(items):
                try:
                    results[i] = self.model.run(feed)
                except DlinferError as exc:
                    errors[i] = exc
            return lambda: (results, errors)
        # Dynamic non-batch dimensions may differ between requests: one run per shape.
        groups: dict[tuple, list[int]] = collections.defaultdict(list)
        for i, feed in enumerate(items):
            groups[tuple(feed[n].shape for n in self.names)].append(i)
        runs = []
        for idx in groups.values():
            feed = {n: np.stack([items[i][n] for i in idx]) for n in self.names}
            runs.append((idx, self.model.start_run(feed) if self.in_flight > 1
                         else _Ran(self.model.run(feed))))

        def finish() -> tuple[list[Any], dict[int, Exception]]:
            for idx, started in runs:
                self._split(started.result(), idx, results)
            return results, errors

        return finish

    def _split(self, out: Any, idx: list[int], results: list[Any]) -> None:
        """One group's output rows into ``results`` at the places ``idx`` of its requests."""
        outs = out if isinstance(out, dict) else {None: out}
        if any(np.ndim(v) == 0 or len(v) != len(idx) for v in outs.values()):
            raise InferenceError(f"{self.model.path} returned outputs of shapes "
                                 f"{[np.shape(v) for v in outs.values()]} for a batch of "
                                 f"{len(idx)}: its outputs are not batch-first")
        for row, i in enumerate(idx):
            results[i] = {k: v[row] for k, v in out.items()} if isinstance(out, dict) else out[row]


class _CallableRunner:
    """Any ``fn(list_of_items) -> list_of_results`` of the same length."""

    kind = "callable"

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]]) -> None:
        self.fn = fn

    def check(self, item: Any) -> Any:
        return item

    def run(self, items: list[Any], top_ks: list[int]) -> tuple[list[Any], dict[int, Exception]]:
        results = list(self.fn(items))
        if len(results) != len(items):
            raise InferenceError(
                f"batch function returned {len(results)} results for {len(items)} items")
        return results, {}


def runner_for(target: Any, backend: str | None = None, in_flight: int | None = None) -> Any:
    """The runner of ``target``; ``in_flight`` batches at once where its backend can
    (None: as many as the backend suggests, :func:`in_flight_of`)."""
    if in_flight is not None:
        check_int(in_flight, "in_flight", min=1)
    if isinstance(target, (str, os.PathLike)):
        return _ClassifierRunner(Classifier(target, backend=backend), in_flight)
    if isinstance(target, Classifier):
        return _ClassifierRunner(target, in_flight)
    if isinstance(target, Model):
        return _ModelRunner(target, in_flight)
    if callable(target):
        return _CallableRunner(target)
    raise TypeError(
        "Batcher needs a Classifier, a Model, a model path, or a function taking a list of "
        f"inputs; got {type(target).__name__}"
    )
