"""`Classifier`: images in, labelled predictions out, driven by the model's spec."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import (
    DlinferError,
    ImageDecodeError,
    InputError,
    InputShapeError,
    SpecError,
)
from ..preprocessing.decode import iter_image_files
from ..preprocessing.tokens import token_batch
from ..preprocessing.transform import PreprocessSpec, empty_batch
from ..runtime.model import Model, open_for_task
from .predictions import Prediction, top_k_predictions

__all__ = ["Classifier"]


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
            export_hint="dlinfer export",
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
        return self.preprocessing.model_input(images, self.threads)

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
        threshold = (self.spec.threshold if self.spec.task == "binary_classification"
                     else None)
        return top_k_predictions(proba, self.labels, top_k, threshold)

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


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
