"""`Classifier`: images in, labelled predictions out, driven by the model's spec."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..checks import MAX_BATCH, check_int, check_threads
from ..errors import (
    DlinferError,
    ImageDecodeError,
    InputError,
    InputShapeError,
    SpecError,
)
from ..escape import visible
from ..preprocessing.batching import is_batch
from ..preprocessing.decode import iter_image_files
from ..preprocessing.tokens import token_batch
from ..preprocessing.transform import PreprocessSpec, empty_batch
from ..runtime.model import Model
from ..spec import InputSpec, ModelSpec, OutputSpec
from ..spec_graph import one_unit_problem
from ._open import open_for_task
from .predictions import Prediction, top_k_predictions

__all__ = ["DEFAULT_BATCH_SIZE", "Classifier"]

# Images per model call when predict() is given more: large enough to amortize a call,
# small enough that a long list never becomes one huge batch (100k images: 15.8 GB).
DEFAULT_BATCH_SIZE = 256


class Classifier:
    """An image classifier exported by dlinfer's training tools.

    ``images`` may be file paths, PIL images, uint8 pixel arrays of any size (1, 3
    or 4 channels), or float arrays of exactly the model's size already scaled like
    ``pixels * spec.scale``; one image or a batch.  The model's metadata decides the
    size, colour mode and normalization (``self.preprocessing``, a
    :class:`PreprocessSpec`), so callers never normalize by hand.

    A multi-input model takes a ``{name: value}`` dict with every input on each call:
    the image input's value is preprocessed as above, a token input's goes through
    :func:`~dlinfer.preprocessing.tokens.token_batch`, and any other input's is an
    array of that input's dtype.

    Args:
        model: a path to the ``.onnx`` file, or a :class:`Model`.
        device, threads, **model_options: passed to :class:`Model` when given a path.
        max_image_bytes: decoded-size budget per image file (decompression bombs).
        image_input: the input that takes images, on a model with several image
            inputs (default: the spec's only image input).
        output: the output to classify with (default: the spec's primary output, the
            first with labels).  A ``logits`` output gets a softmax (a sigmoid for a
            single unit) before predictions.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Model,
        device: str = "cpu",
        threads: int | None = None,
        *,
        max_image_bytes: int | None = None,
        image_input: str | None = None,
        output: str | None = None,
        **model_options: Any,
    ) -> None:
        check_threads(threads)
        self.model, spec = open_for_task(
            model, device, threads, model_options,
            tasks=("classification", "binary_classification"), role="classifier",
            export_hint="dlinfer export`, describe it with `dlinfer spec set",
        )
        self.spec = spec
        self.output = _classifier_output(spec, output, self.model)
        self.labels = list(self.output.labels)
        self.threads = threads
        # A single sigmoid unit is P(labels[1]) (see OutputSpec.threshold).
        self._binary = spec.task == "binary_classification" and self.output.threshold is not None
        names = [i.name for i in self.model.inputs]
        self._multi = len(names) > 1
        self._inputs = [_input_spec(spec, n, self.model.path) for n in names]
        image = _image_input(spec, self._inputs, image_input, self.model.path)
        if not self._multi and self._inputs[0].kind not in ("image", "tokens"):
            raise SpecError(
                f"{self.model.path} takes {self._inputs[0].kind}, not images or token ids; "
                "use dlinfer.Model for it"
            )
        self.image_input: str | None = image.name if image is not None else None
        overrides = {} if max_image_bytes is None else {"max_image_bytes": max_image_bytes}
        # The exporter's resize/crop (extra["preprocess"]) describe the primary input.
        source = spec if image is spec.input else image
        # Token models (the IMDB LSTM) take id sequences, padded like Keras's
        # pad_sequences; they have no image preprocessing.
        self.preprocessing = (PreprocessSpec.from_model(source, **overrides)
                              if image is not None else None)

    def preprocess(self, images: Any) -> Any:
        """The batch the model will see for ``images`` (token sequences for a token model).

        A multi-input model's batch is a ``{name: array}`` dict, built from a dict
        with every input.
        """
        if self._multi:
            return self._preprocess_inputs(images)
        if self.preprocessing is None:
            return token_batch(images, self._inputs[0])
        return self.preprocessing.model_input(images, self.threads)

    def _preprocess_inputs(self, values: Any) -> dict[str, np.ndarray]:
        names = [i.name for i in self._inputs]
        if not isinstance(values, Mapping):
            raise InputError(f"{self.model.path} has {len(names)} inputs {names}; give a dict "
                             "with a value for each")
        missing = [n for n in names if n not in values]
        unknown = sorted(set(values) - set(names))
        if missing or unknown:
            raise InputError(f"{self.model.path} takes the inputs {names}; missing: {missing}, "
                             f"unknown: {unknown}")
        batch = {}
        for info in self._inputs:
            value = values[info.name]
            if info.name == self.image_input:
                batch[info.name] = self.preprocessing.model_input(value, self.threads)
            elif info.kind == "tokens":
                batch[info.name] = token_batch(value, info)
            else:
                batch[info.name] = _array_of(value, info)
        return batch

    def predict_proba(self, images: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Class probabilities, shape (N, number of labels).

        More than ``batch_size`` images (a list, or a batch array) run ``batch_size`` at
        a time, so memory stays bounded however many are given.
        """
        batch_size = check_int(batch_size, "batch_size", min=1, max=MAX_BATCH)
        chunks = self._chunks(images, batch_size)
        if chunks is None:
            return self.run_batch(self.preprocess(images))
        return np.concatenate([self.run_batch(self.preprocess(c)) for c in chunks])

    def _chunks(self, images: Any, size: int) -> list[Any] | None:
        """``images`` cut into pieces of ``size`` items; None for one call (few enough
        items, a multi-input dict, or token sequences, whose lists are not image lists)."""
        if self._multi or self.preprocessing is None:
            return None
        if isinstance(images, np.ndarray):
            if not is_batch(images) or len(images) <= size:
                return None
        elif not isinstance(images, (list, tuple)) or len(images) <= size:
            return None
        return [images[i:i + size] for i in range(0, len(images), size)]

    def run_batch(self, batch: Any) -> np.ndarray:
        """Class probabilities for a batch :meth:`preprocess` already built."""
        return self.probabilities(self.model.run(batch))

    def probabilities(self, out: Any) -> np.ndarray:
        """Class probabilities from the model's raw output (a dict by name, or the array)."""
        if isinstance(out, dict):
            out = out[self.output.name]
        out = np.asarray(out, dtype=np.float32)
        out = out.reshape(len(out), -1)
        want = 1 if self._binary else len(self.labels)
        if out.shape[1] != want:  # a dynamic output width, checked here as it comes
            raise SpecError(f"{self.model.path}: output {self.output.name!r} gave "
                            f"{out.shape[1]} values per item, but the spec has "
                            f"{len(self.labels)} labels" + (" and a threshold (one sigmoid "
                                                            "unit)" if self._binary else ""))
        if want == 1 and not self._binary:  # a dynamic width: the rule Model applies at open
            raise SpecError(f"{self.model.path}: the spec's output {self.output.name!r} "
                            f"{one_unit_problem(self.spec.task, 1)} and a threshold")
        if self._binary:
            # A single sigmoid unit is P(labels[1]); expand to both classes.
            p = out[:, :1]
            if self.output.kind == "logits":
                p = _sigmoid(p)
            return np.concatenate([1.0 - p, p], axis=1)
        return _softmax(out) if self.output.kind == "logits" else out

    def predict(self, images: Any, top_k: int = 1,
                batch_size: int = DEFAULT_BATCH_SIZE) -> list[Prediction]:
        """One :class:`Prediction` per image, in input order (``batch_size`` images per
        model call, see :meth:`predict_proba`)."""
        top_k = check_int(top_k, "top_k", min=1)
        return self.postprocess(self.predict_proba(images, batch_size), top_k)

    def postprocess(self, proba: np.ndarray, top_k: int | Sequence[int] = 1) -> list[Prediction]:
        """Predictions from (N, labels) probabilities; ``top_k`` for all rows or one per row."""
        threshold = self.output.threshold if self._binary else None
        return top_k_predictions(proba, self.labels, top_k, threshold)

    __call__ = predict

    def explain(self, images: Any, method: str = "gradcam", layer: str | None = None,
                target: Any = None, *, batch_size: int = 32,
                precision: str = "bf16x3") -> list[Any]:
        """One :class:`~dlinfer.explain.Explanation` per image: why the model chose
        ``target`` (default: its prediction; a class index or label, or one per image).

        ``method``: ``"gradcam"`` at ``layer`` (an ONNX tensor name or, for a dlinfer
        export, a Keras layer name; default: the last convolution block with a spatial
        size > 1, activation included), ``"saliency"`` (the input gradient) or
        ``"occlusion"`` (a sliding patch, no gradients, any classifier).  Images go
        through the model's preprocessing as in :meth:`predict`.  ``precision``: of the
        gradients' products, as :func:`dlinfer.explain.gradient` takes it; the default
        ``"bf16x3"`` runs them on AMX where OpenVINO runs the model (maps within 1e-4 of
        float32's maximum), in float32 elsewhere.  See docs/explain.md.
        """
        from ..explain.cam import explain

        return explain(self, images, method, layer, target, batch_size=batch_size,
                       precision=precision)

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
        instead of raising, and so does the walk with what it cannot read (a folder it may
        not list, a symlink loop, a FIFO); in raise mode each is an ImageDecodeError
        naming the path.  Control characters in reported names are shown escaped.
        """
        if self.preprocessing is None or self._multi:
            takes = ("token ids" if not self._multi else
                     f"several inputs {[(i.name, i.kind) for i in self._inputs]}")
            raise InputError(f"predict_folder classifies image files with a single-input "
                             f"image model; {self.model.path} takes {takes}")
        batch_size = check_int(batch_size, "batch_size", min=1, max=MAX_BATCH)
        top_k = check_int(top_k, "top_k", min=1)
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        root = os.fspath(path)
        if not os.path.isdir(root):
            raise ImageDecodeError(f"{root}: not a directory")
        from tqdm import tqdm

        spec = self.preprocessing
        if spec.size is None:
            raise InputShapeError("predict_folder needs a model with a fixed input size")
        buffers = [empty_batch(spec.batch_shape(batch_size), spec.dtype) for _ in range(2)]

        def skipped(exc: DlinferError) -> None:  # a file, or a walk entry, left out
            bar.write(f"dlinfer: skipped {visible(str(exc))}", file=sys.stderr)

        walk = iter_image_files(root, recursive, None if on_error == "raise" else skipped)
        chunks = _chunks(walk, batch_size)
        bar = tqdm(desc=os.path.basename(root.rstrip(os.sep)) or root, unit="img",
                   disable=not progress, dynamic_ncols=True)

        def prepare(paths: list[str], slot: int) -> tuple[list[str], np.ndarray]:
            ok, pixels = [], []
            for p, px in zip(paths, self._decode_many(paths, on_error, skipped)):
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

    def _decode_many(self, paths: list[str], on_error: str,
                     skipped: Callable[[DlinferError], None]) -> list[Any]:
        """Decoded pixels for each path; None for a file skipped on error."""
        spec = self.preprocessing
        if on_error == "raise":
            return spec.pixels(paths, self.threads)

        def one(p: str) -> Any:
            try:
                return spec.pixels([p], 1)[0]
            except DlinferError as exc:
                skipped(exc)
                return None

        workers = min(len(paths), self.threads or os.cpu_count() or 1)
        with ThreadPoolExecutor(max(workers, 1), thread_name_prefix="dlinfer-decode") as pool:
            return list(pool.map(one, paths))

    def __repr__(self) -> str:
        return (
            f"Classifier({self.model.path!r}, labels={len(self.labels)}, "
            f"device={self.model.device!r})"
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    # Shifted by the row maximum so that exp never overflows.
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so that it never overflows.
    e = np.exp(-np.abs(logits))
    return np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def _classifier_output(spec: ModelSpec, name: str | None, model: Model) -> OutputSpec:
    """The output a classifier reads: ``name``, else the spec's primary output."""
    out = spec.output_named(name) if name is not None else spec.output
    if not out.labels or out.kind not in ("probabilities", "logits"):
        raise SpecError(
            f"output {out.name!r} of {model.path} is not a classification head (kind "
            f"{out.kind!r}, {len(out.labels)} labels); choose one with output=, among "
            f"{[o.name for o in spec.outputs if o.labels]}")
    tensors = {o.name: o for o in model.outputs}
    tensor = tensors.get(out.name) if len(tensors) > 1 else model.outputs[0]
    if tensor is None:
        raise SpecError(f"{model.path}: its spec's output {out.name!r} is not one of the "
                        f"model's outputs {list(tensors)}; fix it with `dlinfer spec set`")
    # Model checked the label count against a fixed output width when it opened;
    # run_batch checks a dynamic one on every batch.
    return out


def _input_spec(spec: ModelSpec, name: str, path: str) -> InputSpec:
    if len(spec.inputs) == 1 and spec.inputs[0].name != name:
        return spec.inputs[0]  # a one-input spec describes the one input, whatever its name
    try:
        return spec.input_named(name)
    except SpecError as exc:
        raise SpecError(f"{path}: its spec does not describe the model's input {name!r} "
                        f"({exc}); fix it with `dlinfer spec set`") from None


def _image_input(spec: ModelSpec, inputs: list[InputSpec], name: str | None,
                 path: str) -> InputSpec | None:
    """The input a classifier preprocesses images for (None: a model without one)."""
    images = [i for i in inputs if i.kind == "image"]
    if name is not None:
        chosen = next((i for i in inputs if i.name == name), None)
        if chosen is None or chosen.kind != "image":
            raise SpecError(f"image_input={name!r}: {path} has the image inputs "
                            f"{[i.name for i in images]}")
        return chosen
    if len(images) > 1:
        raise SpecError(f"{path} has {len(images)} image inputs {[i.name for i in images]}; "
                        "name the one to preprocess with image_input=")
    return images[0] if images else None


def _array_of(value: Any, info: InputSpec) -> np.ndarray:
    """A non-image input's batch: arrays keep their dtype (Model.run checks it), while
    Python numbers take the input's dtype if that does not change their kind."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        arr = np.asarray(value)
        if np.can_cast(arr.dtype, info.dtype, "same_kind"):
            arr = arr.astype(info.dtype)
    if arr.ndim == len(info.shape) - 1:
        arr = arr[None]  # one item: the batch of one that goes with one image
    return arr


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
