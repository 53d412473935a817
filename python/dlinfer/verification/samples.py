"""Sample inputs for checking a model: the user's own data, or drawn from the spec.

One owner for "what does a valid input look like", shared by ``dlinfer verify`` and
the exporter's self-check:

- an image input gets random uint8 pixels normalized exactly as
  :class:`~dlinfer.PreprocessSpec` normalizes them;
- a tokens input gets valid ids (below ``vocab_size``), with zero padding in front
  of some rows, as ``pad_sequences`` leaves it and masking layers see it;
- a latent input gets standard normal vectors, and any other input uniform [0, 1)
  values of its dtype.

Data given by the user is an array or ``.npy`` file (a single-input model), a dict
or ``.npz`` file keyed by input name, or a folder of images (the primary image
input; every other input must then be drawn).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..checks import check_allocation
from ..errors import InputError
from ..spec import InputSpec

__all__ = ["DEFAULT_SIZE", "load_samples", "random_samples", "read_arrays"]

# A dynamic spatial or time axis is drawn at this size.
DEFAULT_SIZE = 32
# Without a known vocabulary, ids stay this small (any Embedding has at least 2 rows).
_SAFE_VOCAB = 2


def _concrete(shape: Sequence[int | None], count: int) -> tuple[int, ...]:
    return (count, *(DEFAULT_SIZE if d is None else int(d) for d in shape[1:]))


def _image_batch(spec: InputSpec, pixels: Any) -> np.ndarray:
    from ..preprocessing.transform import PreprocessSpec

    return PreprocessSpec.from_model(spec).model_input(pixels)


def _random_input(spec: InputSpec, count: int, rng: np.random.Generator,
                  shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``count`` samples of ``spec``; ``shape``: the whole array's, where the caller
    knows it (batch axes other than 0, sizes the graph runs at)."""
    shape = check_allocation(shape if shape is not None else _concrete(spec.shape, count), 8,
                             f"input {spec.name!r}")  # float64
    dtype = np.dtype(spec.dtype)
    if spec.kind == "image":
        h, w = spec.image_size or ((shape[1], shape[2]) if spec.layout == "NHWC"
                                   else (shape[2], shape[3]))
        channels = spec.channels or 3
        pixels = rng.integers(0, 256, (count, h, w, channels), dtype=np.uint8)
        return _image_batch(spec, pixels if channels > 1 else pixels[..., 0])
    if spec.kind == "tokens" or dtype.kind in "iu":
        high = spec.vocab_size or _SAFE_VOCAB
        ids = rng.integers(1 if high > 1 else 0, high, shape).astype(dtype)
        if ids.ndim == 2 and ids.shape[1] > 1 and ids.shape[0] == count:
            # Left padding of varying length on every other row exercises masking.
            for row in range(0, count, 2):
                ids[row, : rng.integers(1, ids.shape[1])] = 0
        return ids
    if spec.kind == "latent":
        return rng.standard_normal(shape).astype(dtype)
    return rng.uniform(0, 1, shape).astype(dtype)


def random_samples(inputs: Sequence[InputSpec], count: int, seed: int
                   ) -> tuple[dict[str, np.ndarray], str]:
    """``count`` valid samples for every input, and a description of them."""
    rng = np.random.default_rng(seed)
    batch = {spec.name: _random_input(spec, count, rng) for spec in inputs}
    kinds = ", ".join(dict.fromkeys(_describe(s) for s in inputs))
    return batch, f"random {kinds}, seed {seed}"


def _describe(spec: InputSpec) -> str:
    return {"image": "uint8 pixels normalized per the spec",
            "tokens": f"token ids below {spec.vocab_size or _SAFE_VOCAB}",
            "latent": "standard normal latents"}.get(spec.kind, "uniform [0, 1) samples")


def _from_array(spec: InputSpec, arr: Any, where: str) -> np.ndarray:
    arr = np.asarray(arr)
    if spec.kind == "image" and arr.dtype == np.uint8:
        return _image_batch(spec, arr)
    dtype = np.dtype(spec.dtype)
    if arr.dtype.kind != dtype.kind and not (arr.dtype.kind in "iu" and dtype.kind in "iu"):
        raise InputError(f"{where}: input {spec.name!r} takes {dtype.name}, got {arr.dtype.name}")
    return np.asarray(arr, dtype=dtype, order="C")  # ascontiguousarray makes 0-d 1-d


def read_arrays(path: str) -> Any:
    """A .npy file's array or a .npz file's {key: array}; no pickles (InputError)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"could not read data {path!r} as a .npy or .npz file: {exc}") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:  # each member is read here: a pickled one fails only now
            try:
                return {k: loaded[k] for k in loaded.files}
            except (OSError, ValueError) as exc:
                raise InputError(f"could not read data {path!r} as a .npz file: {exc}") from exc
    return loaded


def load_samples(data: Any, inputs: Sequence[InputSpec], count: int, seed: int = 0,
                 axes: Mapping[str, Any] | None = None) -> tuple[dict[str, np.ndarray], str]:
    """At most ``count`` samples per input from ``data`` (``None``: random ones).

    ``axes``: each input's :class:`~dlinfer.runtime.batch_axis.BatchAxis` (default: axis
    0 of every input); an input without one is taken whole.
    Returns ``{input name: batch}`` and where the samples came from.
    """
    if data is None:
        return random_samples(inputs, count, seed)
    names = [s.name for s in inputs]
    if isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        images = [s for s in inputs if s.kind == "image"]
        if not images:
            raise InputError(f"a folder of images needs an image input; the inputs are {names}")
        from .labelled import folder_files  # its own images, or a labelled folder's

        files = folder_files(os.fspath(data), count)
        if not files:
            raise InputError(f"no image files in {os.fspath(data)}")
        batch = {images[0].name: _image_batch(images[0], files)}
        others = [s for s in inputs if s is not images[0]]
        batch.update(random_samples(others, len(files), seed)[0])
        return batch, f"{len(files)} images from {os.fspath(data)}"
    source = "the given arrays"
    if isinstance(data, (str, os.PathLike)):
        source, data = os.fspath(data), read_arrays(os.fspath(data))
    if not isinstance(data, Mapping):
        if len(inputs) != 1:
            raise InputError(f"the model has {len(inputs)} inputs {names}: give the data as a "
                             "dict or .npz file keyed by input name")
        data = {names[0]: data}
    unknown, missing = set(data) - set(names), set(names) - set(data)
    if unknown or missing:
        raise InputError(f"data must hold exactly the inputs {names}; unknown: "
                         f"{sorted(unknown)}, missing: {sorted(missing)}")
    if axes is not None:
        return _along_axes(data, inputs, count, axes, source)
    arrays = {s.name: np.asarray(data[s.name])[:count] for s in inputs}
    batch = {s.name: _from_array(s, arrays[s.name], source) for s in inputs}
    if any(v.ndim == 0 for v in batch.values()):
        raise InputError(f"{source}: a 0-d array has no samples to take; inputs "
                         f"{[k for k, v in batch.items() if v.ndim == 0]}")
    sizes = {len(v) for v in batch.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise InputError(f"{source}: every input needs the same, non-zero number of samples; "
                         f"got {sorted(sizes)}")
    pixels = any(s.kind == "image" and arrays[s.name].dtype == np.uint8 for s in inputs)
    return batch, (f"{sizes.pop()} {'uint8 ' if pixels else ''}samples from {source}"
                   + (", normalized per the spec" if pixels else ""))


def _along_axes(data: Mapping[str, Any], inputs: Sequence[InputSpec], count: int,
                axes: Mapping[str, Any], source: str) -> tuple[dict[str, np.ndarray], str]:
    """The first ``count`` samples along each input's own batch axis; the others whole."""
    from ..runtime.batch_axis import sample_count

    batch = {}
    for s in inputs:
        arr = np.asarray(data[s.name])
        axis = axes[s.name].axis
        if axis is not None:
            if arr.ndim <= axis:
                raise InputError(f"{source}: input {s.name!r} has shape {arr.shape}, "
                                 f"without its batch axis {axis}")
            arr = np.take(arr, range(min(count, arr.shape[axis])), axis=axis)
        batch[s.name] = _from_array(s, arr, source)
    try:
        n = sample_count(batch, axes)
    except InputError as exc:
        raise type(exc)(f"{source}: {exc}") from None
    if n == 0:
        raise InputError(f"{source}: no samples along the inputs' batch axes")
    pixels = any(s.kind == "image" and np.asarray(data[s.name]).dtype == np.uint8
                 for s in inputs)
    return batch, (f"{n} {'uint8 ' if pixels else ''}samples from {source}"
                   + (", normalized per the spec" if pixels else ""))
