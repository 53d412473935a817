"""What a :class:`~dlinfer.Batcher` runs: one runner per kind of target.

Each runner checks one request in the caller's thread (``check``), and runs a
list of checked requests as one batch (``run``), returning a result per request
and the errors of the requests that failed alone.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

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


class _ClassifierRunner:
    """Images in, :class:`~dlinfer.Prediction` out, through the Classifier's batch path."""

    kind = "classifier"

    def __init__(self, clf: Classifier) -> None:
        self.clf = clf

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
                return [None] * len(items), errors
            batch = np.concatenate(rows)
        preds = self.clf.postprocess(self.clf.run_batch(batch), [top_ks[i] for i in good])
        results: list[Any] = [None] * len(items)
        for i, pred in zip(good, preds, strict=True):
            results[i] = pred
        return results, errors


class _ModelRunner:
    """One sample per request (no batch axis); results are that sample's output rows."""

    kind = "model"

    def __init__(self, model: Model) -> None:
        if len(model.inputs) != 1:
            raise InputError(f"{model.path} has {len(model.inputs)} inputs; Batcher takes one")
        self.model = model
        self.info = model.inputs[0]

    def check(self, item: Any) -> np.ndarray:
        arr = np.asarray(item)
        info = self.info
        if arr.dtype != info.dtype:
            raise InputDtypeError(
                f"input {info.name!r} needs dtype {info.dtype.name}, got {arr.dtype.name}")
        want = info.shape[1:]
        if arr.ndim != len(want) or any(
                w is not None and w != g for w, g in zip(want, arr.shape, strict=True)):
            cls = InputRankError if arr.ndim != len(want) else InputShapeError
            dims = ", ".join("N" if d is None else str(d) for d in want)
            raise cls(
                f"a request for {info.name!r} is one sample of shape ({dims}), got {arr.shape}")
        return arr

    def run(self, items: list[Any], top_ks: list[int]) -> tuple[list[Any], dict[int, Exception]]:
        # Dynamic non-batch dimensions may differ between requests: one run per shape.
        groups: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
        for i, item in enumerate(items):
            groups[item.shape].append(i)
        results: list[Any] = [None] * len(items)
        for idx in groups.values():
            out = self.model.run(np.stack([items[i] for i in idx]))
            for row, i in enumerate(idx):
                results[i] = (
                    {k: v[row] for k, v in out.items()} if isinstance(out, dict) else out[row])
        return results, {}


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


def runner_for(target: Any, backend: str = "onnxruntime") -> Any:
    if isinstance(target, (str, os.PathLike)):
        return _ClassifierRunner(Classifier(target, backend=backend))
    if isinstance(target, Classifier):
        return _ClassifierRunner(target)
    if isinstance(target, Model):
        return _ModelRunner(target)
    if callable(target):
        return _CallableRunner(target)
    raise TypeError(
        "Batcher needs a Classifier, a Model, a model path, or a function taking a list of "
        f"inputs; got {type(target).__name__}"
    )
