"""The resize steps the native pass does not do alone: ``pad-end``, antialiasing, and a
border given in model-input units.

The native pass (:mod:`.transform`) resizes, crops or letterboxes, converts colour and
normalizes in one go.  Three things a model's spec may also ask for are done around it:

- ``pad-end`` (OCR text lines): the height fits, the aspect ratio is kept up to the
  output width (PaddleOCR: ``min(W, ceil(H * w / h))``), the right side is padded.  Each
  image is resized by the native pass into its own width, then placed at the left.
- ``antialias``: when downscaling, Pillow and torchvision (on PIL images) filter over
  every source pixel a destination pixel covers; plain bilinear reads only the nearest
  two.  With ``antialias`` the resize itself is Pillow's (``BILINEAR``, ``NEAREST``, or
  ``BOX`` for area), rounded to uint8 as Pillow rounds, and the native pass only crops,
  places, converts colour and normalizes (its resize is then the identity).
- ``pad_value``: a border in model-input units (PaddleOCR pads 0 *after* normalization)
  is written after the native pass, exactly; a border in pixels is the native pass's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .._native_loader import native
from ..spec import InputSpec
from .batching import Pixels
from .presets import pad_end_width

if TYPE_CHECKING:
    from .transform import PreprocessSpec

__all__ = ["Geometry", "crop_of", "fill_with_modes", "pad_end_geometry", "uses_modes"]

class Geometry(NamedTuple):
    """Where one image landed in its output slot.

    The image was resized to ``resized`` (height, width) and its top-left corner
    placed at output pixel ``offset`` (top, left): positive for a letterbox's pad,
    negative for the part a centre crop cut off.  ``scale`` (y, x) is resized /
    original size, so an output point (y, x) came from original
    ((y - top) / scale_y, (x - left) / scale_x).
    """

    resized: tuple[int, int]
    offset: tuple[int, int]
    scale: tuple[float, float]


_PIL_FILTERS = {"bilinear": "BILINEAR", "nearest": "NEAREST", "area": "BOX"}


def crop_of(spec: InputSpec) -> str | float | None:
    """An input spec's resize mode as :class:`PreprocessSpec`'s ``crop``."""
    return {"stretch": None, "center-crop": spec.crop_fraction, "letterbox": "letterbox",
            "pad-end": "pad-end"}[spec.resize]


def uses_modes(spec: PreprocessSpec) -> bool:
    """True when ``spec`` needs :func:`fill_with_modes` rather than the native pass alone."""
    return spec.crop == "pad-end" or spec.antialias or spec.pad_value is not None


def pad_end_geometry(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """(resized height, resized width) of an image of this size under ``pad-end``."""
    return size[0], pad_end_width(height, width, *size)


def _border_values(spec: PreprocessSpec) -> np.ndarray:
    """The border's value per output channel, in model-input units, as float32."""
    channels = spec.channels
    if spec.pad_value is not None:
        return np.full(channels, spec.pad_value, np.float32)
    mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (channels,))
    std = np.broadcast_to(np.asarray(spec.std, np.float32), (channels,))
    return ((np.float32(spec.pad) * np.float32(spec.scale) - mean) / std).astype(np.float32)


def _antialiased(spec: PreprocessSpec, pixels: Pixels, size: tuple[int, int]) -> Pixels:
    """``pixels`` resized by Pillow to where ``spec`` puts them, the crop already cut: what
    the native pass then only places and normalizes."""
    from PIL import Image

    array, order = pixels
    if order in ("RGBA", "BGRA"):  # Pillow would premultiply alpha; the pass drops it anyway
        array, order = array[..., :3], order[:3]
    geometry = spec.geometry(*array.shape[:2])
    rh, rw = geometry.resized
    if (rh, rw) != array.shape[:2]:
        mode = "L" if array.shape[2] == 1 else "RGB"
        image = Image.fromarray(np.ascontiguousarray(array[..., 0] if mode == "L" else array),
                                mode)
        resized = image.resize((rw, rh), getattr(Image.Resampling, _PIL_FILTERS[spec.resize]))
        array = np.asarray(resized).reshape(rh, rw, array.shape[2])
    if spec.crop not in (None, "letterbox", "pad-end"):  # a centre crop: cut it here
        top, left = -geometry.offset[0], -geometry.offset[1]
        array = array[top:top + size[0], left:left + size[1]]
    return array, order


def _map(fn: Callable[[Pixels], Pixels], items: Sequence[Pixels],
         threads: int | None) -> list[Pixels]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads (Pillow releases the GIL while
    it resizes); each item's result is the same for every thread count."""
    workers = min(len(items), threads or os.cpu_count() or 1)
    if workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers, thread_name_prefix="dlinfer-antialias") as pool:
        return list(pool.map(fn, items))


def _native_fit(spec: PreprocessSpec) -> tuple[str, float]:
    """The fit the native pass runs once :func:`_antialiased` has resized (and cut)."""
    fit, ratio = spec._fit()
    if spec.antialias and fit == "crop":
        return "stretch", 1.0  # already cut to the output size: the identity
    return fit, ratio


def fill_with_modes(spec: PreprocessSpec, pixels: Sequence[Pixels], out: np.ndarray,
                    threads: int | None) -> np.ndarray:
    """:meth:`PreprocessSpec.fill` for a spec that :func:`uses_modes`."""
    size = spec.size or tuple(pixels[0][0].shape[:2])
    if spec.antialias:
        pixels = _map(lambda p: _antialiased(spec, p, size), pixels, threads)
    fit, ratio = _native_fit(spec)
    threads_arg = 0 if threads is None else int(threads)
    params = (spec.scale, list(spec.mean), list(spec.std), spec.layout, spec.color,
              threads_arg)
    border = _border_values(spec)
    if spec.crop == "pad-end":
        for i, (array, order) in enumerate(pixels):
            rh, rw = pad_end_geometry(*array.shape[:2], size)
            part = np.empty(spec.batch_shape(1, (rh, rw)), out.dtype)
            native.preprocess_u8_batch([array], part, [order], spec.resize, "stretch", 1.0,
                                       0.0, *params)
            _place(out[i], part[0], spec.layout, border)
        return out
    pad = spec.pad if spec.pad_value is None else 0.0
    native.preprocess_u8_batch([p[0] for p in pixels], out, [p[1] for p in pixels],
                               spec.resize, fit, ratio, pad, *params)
    if spec.pad_value is not None and fit == "letterbox":
        for i, (array, _) in enumerate(pixels):
            _overwrite_border(out[i], spec.geometry(*array.shape[:2]), spec.layout, border)
    return out


def _place(slot: np.ndarray, part: np.ndarray, layout: str, border: np.ndarray) -> None:
    """Put ``part`` at the top-left of ``slot`` and the border everywhere else."""
    if layout == "NHWC":
        h, w = part.shape[:2]
        slot[:h, :w] = part
        slot[:, w:] = border
        slot[h:] = border
    else:
        h, w = part.shape[1:]
        slot[:, :h, :w] = part
        slot[:, :, w:] = border[:, None, None]
        slot[:, h:] = border[:, None, None]


def _overwrite_border(slot: np.ndarray, geometry: Geometry, layout: str,
                      border: np.ndarray) -> None:
    """Write ``border`` over a letterbox's pad (everything outside the placed image)."""
    (rh, rw), (top, left) = geometry.resized, geometry.offset
    if layout == "NCHW":
        slot = slot.transpose(1, 2, 0)  # a view: (H, W, C)
    slot[:top] = border
    slot[top + rh:] = border
    slot[top:top + rh, :left] = border
    slot[top:top + rh, left + rw:] = border
