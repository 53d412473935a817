"""`Classifier`: images in, labelled predictions out, driven by the model's spec."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .errors import (
    ChannelError,
    DlinferError,
    EmptyBatchError,
    ImageDecodeError,
    InputDtypeError,
    InputError,
    InputRankError,
    InputShapeError,
    SpecError,
)
from .images import split_items
from .model import Model, open_for_task
from .preprocess import PreprocessSpec, empty_batch
from .spec import InputSpec

__all__ = ["Candidate", "Classifier", "Prediction"]


@dataclass(frozen=True)
class Candidate:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The top-1 answer for one image, with the top-k candidates in ``top``."""

    label: str
    index: int
    probability: float
    top: tuple[Candidate, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "top": [c.__dict__ for c in self.top],
        }


class Classifier:
    """An image classifier exported by dlinfer's training tools.

    ``images`` may be file paths, PIL images, uint8 pixel arrays of any size (1, 3
    or 4 channels), or float arrays of exactly the model's size already scaled like
    ``pixels * spec.scale``; one image or a batch.  The model's metadata decides the
    size, colour mode and normalization (``self.preprocessing``, a
    :class:`PreprocessSpec`), so callers never normalize by hand.

    Args:
        model: a path to the ``.onnx`` file, or a :class:`Model`.
        device, threads, **model_options: passed to :class:`Model` when given a path.
        max_image_bytes: decoded-size budget per image file (decompression bombs).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Model,
        device: str = "cpu",
        threads: int | None = None,
        *,
        max_image_bytes: int | None = None,
        **model_options: Any,
    ) -> None:
        self.model, spec = open_for_task(
            model, device, threads, model_options,
            tasks=("classification", "binary_classification"), role="classifier",
            export_hint="python -m training export",
        )
        if spec.input.kind not in ("image", "tokens"):
            raise SpecError(
                f"{self.model.path} takes {spec.input.kind}, not images or token ids; "
                "use dlinfer.Model for it"
            )
        self.spec = spec
        self.labels = list(spec.labels)
        self.threads = threads
        overrides = {} if max_image_bytes is None else {"max_image_bytes": max_image_bytes}
        # Token models (the IMDB LSTM) take id sequences, padded like Keras's
        # pad_sequences; they have no image preprocessing.
        self.preprocessing = (PreprocessSpec.from_model(spec, **overrides)
                              if spec.input.kind == "image" else None)

    def preprocess(self, images: Any) -> np.ndarray:
        """The batch the model will see for ``images`` (token sequences for a token model)."""
        if self.preprocessing is None:
            return token_batch(images, self.spec.input)
        if isinstance(images, np.ndarray):
            if images.dtype.kind == "f":
                return _float_batch(images, self.spec.input, "image")
            # One dtype for all its images: preprocessing takes (and checks) the array
            # whole, so a uint8 batch reaches the native kernel in one piece.
            return self.preprocessing(images, threads=self.threads)
        items = split_items(images)
        if not items:
            raise EmptyBatchError("no images given: the batch is empty")
        if not any(isinstance(i, np.ndarray) and i.dtype.kind == "f" for i in items):
            return self.preprocessing(items, threads=self.threads)
        parts = [
            _float_batch(item, self.spec.input, f"image {i}")
            if isinstance(item, np.ndarray) and item.dtype.kind == "f"
            else self.preprocessing([item], threads=self.threads)
            for i, item in enumerate(items)
        ]
        return np.concatenate(parts)

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities, shape (N, number of labels)."""
        return self.run_batch(self.preprocess(images))

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch :meth:`preprocess` already built."""
        out = np.asarray(self.model.run(batch), dtype=np.float32)
        if self.spec.task == "binary_classification":
            # A single sigmoid unit is P(labels[1]); expand to both classes.
            p = out.reshape(len(out), -1)[:, :1]
            return np.concatenate([1.0 - p, p], axis=1)
        return out.reshape(len(out), -1)

    def predict(self, images: Any, top_k: int = 1) -> list[Prediction]:
        """One :class:`Prediction` per image, in input order."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        return self.postprocess(self.predict_proba(images), top_k)

    def postprocess(self, proba: np.ndarray, top_k: int | Sequence[int] = 1) -> list[Prediction]:
        """Predictions from (N, labels) probabilities; ``top_k`` for all rows or one per row."""
        ks = [int(top_k)] * len(proba) if np.ndim(top_k) == 0 else [int(k) for k in top_k]
        if len(ks) != len(proba) or any(k < 1 for k in ks):
            raise ValueError(f"top_k must be >= 1 for each of the {len(proba)} rows, got {top_k}")
        kmax = min(max(ks, default=1), proba.shape[1])
        if self.spec.task == "binary_classification":
            first = (proba[:, 1] >= self.spec.threshold).astype(np.int64)
            orders = np.stack([first, 1 - first], axis=1)[:, :kmax].tolist()
        elif kmax == 1 and not np.isnan(proba).any():
            # argmax takes the lower class index on ties, like the stable sort below,
            # at a fifth of its cost (NaN rows take the sort, which puts NaN last).
            orders = proba.argmax(axis=1)[:, None].tolist()
        else:
            # Stable sort: ties resolve to the lower class index, like argmax.
            orders = np.argsort(-proba, axis=1, kind="stable")[:, :kmax].tolist()
        rows = proba.tolist()
        labels = self.labels
        results = []
        # The hot path of a Batcher: one loop, no generator per row, and the frozen
        # dataclasses filled in directly, as their __init__ would, at a third of its
        # cost (it sets each field through object.__setattr__).
        new = object.__new__
        for row, order, k in zip(rows, orders, ks, strict=True):
            i = order[0]
            label, p = labels[i], row[i]
            first = new(Candidate)
            fields = first.__dict__
            fields["label"], fields["index"], fields["probability"] = label, i, p
            top = (first,) if k == 1 else (first, *(Candidate(labels[j], j, row[j])
                                                    for j in order[1:k]))
            pred = new(Prediction)
            fields = pred.__dict__
            fields["label"], fields["index"], fields["probability"], fields["top"] = (
                label, i, p, top)
            results.append(pred)
        return results

    __call__ = predict

    def predict_folder(
        self,
        path: str | os.PathLike[str],
        batch_size: int = 64,
        *,
        top_k: int = 1,
        recursive: bool = True,
        progress: bool = True,
        on_error: str = "raise",
    ) -> Iterator[tuple[str, Prediction]]:
        """Classify every image file under ``path``, yielding ``(file, prediction)``.

        The folder is walked lazily in sorted order and processed ``batch_size`` files
        at a time; the next batch is decoded and preprocessed while the model runs the
        current one, so memory stays flat however many files there are.  A tqdm
        progress bar goes to stderr unless ``progress=False``.  ``on_error="skip"``
        leaves out files that fail to decode (reported on the progress bar's stream)
        instead of raising.
        """
        if self.preprocessing is None:
            raise InputError(f"predict_folder classifies image files; {self.model.path} takes "
                             "token ids")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        root = os.fspath(path)
        if not os.path.isdir(root):
            raise ImageDecodeError(f"{root}: not a directory")
        from tqdm import tqdm

        spec = self.preprocessing
        if spec.size is None:
            raise InputShapeError("predict_folder needs a model with a fixed input size")
        buffers = [empty_batch(spec.batch_shape(batch_size), spec.dtype) for _ in range(2)]
        chunks = _chunks(iter_image_files(root, recursive), batch_size)
        bar = tqdm(desc=os.path.basename(root.rstrip(os.sep)) or root, unit="img",
                   disable=not progress, dynamic_ncols=True)

        def prepare(paths: list[str], slot: int) -> tuple[list[str], np.ndarray]:
            ok, pixels = [], []
            for p, px in zip(paths, self._decode_many(paths, on_error, bar)):
                if px is not None:
                    ok.append(p)
                    pixels.append(px)
            out = buffers[slot][: len(pixels)]
            if pixels:
                spec.fill(pixels, out, self.threads)
            return ok, out

        with ThreadPoolExecutor(1, thread_name_prefix="dlinfer-prefetch") as pool, bar:
            pending: Future | None = None
            slot = 0
            first = next(chunks, None)
            if first is not None:
                pending = pool.submit(prepare, first, slot)
            while pending is not None:
                paths, batch = pending.result()
                following = next(chunks, None)
                slot ^= 1
                pending = pool.submit(prepare, following, slot) if following else None
                if paths:
                    proba = self.run_batch(batch)
                    bar.update(len(paths))
                    yield from zip(paths, self.postprocess(proba, top_k))

    def _decode_many(self, paths: list[str], on_error: str, bar: Any) -> list[Any]:
        """Decoded pixels for each path; None for a file skipped on error."""
        spec = self.preprocessing
        if on_error == "raise":
            return spec.pixels(paths, self.threads)

        def one(p: str) -> Any:
            try:
                return spec.pixels([p], 1)[0]
            except DlinferError as exc:
                bar.write(f"dlinfer: skipped {exc}", file=sys.stderr)
                return None

        workers = min(len(paths), self.threads or os.cpu_count() or 1)
        with ThreadPoolExecutor(max(workers, 1), thread_name_prefix="dlinfer-decode") as pool:
            return list(pool.map(one, paths))

    def __repr__(self) -> str:
        return (
            f"Classifier({self.model.path!r}, labels={len(self.labels)}, "
            f"device={self.model.device!r})"
        )


IMAGE_EXTENSIONS = frozenset(
    ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
)


def iter_image_files(root: str, recursive: bool = True) -> Iterator[str]:
    """Image files under ``root`` (by extension), lazily, in sorted order per folder."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise ImageDecodeError(f"{root}: cannot list the folder ({exc})") from exc
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                yield from iter_image_files(entry.path, recursive)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            yield entry.path


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def token_batch(sequences: Any, spec: InputSpec) -> np.ndarray:
    """Token id sequences as the model's (N, length) batch, padded like the training data.

    One sequence (a list or 1-D array of ids) or several (a list of them, or a 2-D
    integer array).  Shorter sequences are padded with 0 in front and longer ones
    keep their last ``length`` ids, as ``keras.utils.pad_sequences`` does by default.
    """
    length = spec.shape[1] if len(spec.shape) > 1 else None
    if isinstance(sequences, np.ndarray):
        rows = [sequences] if sequences.ndim == 1 else list(sequences)
        if sequences.ndim not in (1, 2):
            raise InputRankError(
                f"token ids must be one sequence (rank 1) or a batch (rank 2), got shape "
                f"{sequences.shape}")
    elif isinstance(sequences, Sequence) and not isinstance(sequences, str):
        flat = all(np.ndim(x) == 0 for x in sequences)
        rows = [sequences] if flat and len(sequences) else list(sequences)
    else:
        raise TypeError(f"token ids must be a sequence of ints or a list of sequences, got "
                        f"{type(sequences).__name__}")
    if not rows:
        raise EmptyBatchError("no sequences given: the batch is empty")
    width = length or max(len(r) for r in rows)
    batch = np.zeros((len(rows), width), dtype=spec.dtype)
    for i, row in enumerate(rows):
        ids = np.asarray(row)
        if ids.ndim != 1:
            raise InputRankError(f"sequence {i}: token ids must be a flat sequence, got shape "
                                 f"{ids.shape}")
        if ids.size and ids.dtype.kind not in "iu":
            raise InputDtypeError(f"sequence {i}: token ids must be integers, got dtype "
                                  f"{ids.dtype}")
        if ids.size and ids.min() < 0:
            raise InputError(f"sequence {i}: token ids must be >= 0, got {int(ids.min())}")
        if ids.size and ids.max() > np.iinfo(batch.dtype).max:
            raise InputError(f"sequence {i}: token id {int(ids.max())} does not fit "
                             f"{batch.dtype}")
        ids = ids[-width:]
        batch[i, width - len(ids):] = ids
    return batch


def _float_batch(arr: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """Float pixels already scaled by ``spec.scale``, of exactly the model's size."""
    channels = spec.channels or 1
    if arr.ndim == 2:  # one grayscale image
        arr = arr[None, :, :, None]
    elif arr.ndim == 3:
        # (H, W, C) with a channel-like last axis is one image; anything else is a
        # batch of grayscale images (N, H, W).
        arr = arr[None] if arr.shape[-1] in (1, 3, 4) else arr[..., None]
    elif arr.ndim != 4:
        raise InputRankError(
            f"{where}: an image array must have rank 2 (H, W), 3 (H, W, C) or (N, H, W), "
            f"or 4 (N, H, W, C); got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise EmptyBatchError("no images given: the batch is empty")
    if arr.shape[-1] != channels:
        raise ChannelError(
            f"{where}: the model takes {channels}-channel ({spec.color}) images, got "
            f"{arr.shape[-1]} channels (shape {arr.shape}); only uint8 pixels are converted"
        )
    size = spec.image_size
    if size is not None and tuple(arr.shape[1:3]) != size:
        raise InputShapeError(
            f"{where}: float images must already be {size[0]}x{size[1]}, got "
            f"{arr.shape[1]}x{arr.shape[2]} (shape {arr.shape}); pass uint8 pixels, files "
            "or PIL images, which are resized for you"
        )
    lo, hi = spec.value_range
    if arr.size and not np.isfinite(arr).all():
        raise InputDtypeError(f"{where}: float image contains NaN or infinity")
    if arr.size and (arr.min() < lo - 1e-6 or arr.max() > hi + 1e-6):
        raise InputDtypeError(
            f"{where}: float images must already be scaled to [{lo:g}, {hi:g}] "
            f"(pixels * {spec.scale:g}), got values in [{arr.min():g}, {arr.max():g}]; "
            "pass uint8 pixels instead, or scale the floats"
        )
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    batch = (arr.astype(np.float32) - mean) / std
    if spec.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.dtype(spec.dtype))
