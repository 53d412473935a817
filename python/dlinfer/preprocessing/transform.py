"""`preprocess` and `PreprocessSpec`: images of any size -> the model's batch tensor.

One native pass per image (``dlinfer._native.preprocess_u8_batch``) resizes,
crops or letterboxes, converts colour, normalizes and writes float32/float16 NHWC
or NCHW straight into slot i of the batch, on ``threads`` threads with the GIL
released.  The arithmetic is exactly specified (see ``tests/reference.py``):

- ``resize="nearest"``: source = floor(dst * in / out), as OpenCV INTER_NEAREST;
- ``resize="bilinear"``: half-pixel centres, clamped at the edges, as OpenCV
  INTER_LINEAR and Keras ``Resizing``, without rounding to uint8 in between;
- ``resize="area"``: overlap-weighted box average, as OpenCV INTER_AREA;
- then ``out = (x * scale - mean[c]) / std[c]``.

Gray from colour uses ITU-R BT.601 weights (0.299, 0.587, 0.114), as Pillow and
OpenCV do; colour from gray repeats the channel; alpha is dropped.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._native_loader import native
from ..checks import check_allocation, check_int, check_threads
from ..errors import (
    ChannelError,
    EmptyBatchError,
    InputDtypeError,
    InputError,
    InputRankError,
    InputShapeError,
    InputTypeError,
    SpecError,
)
from ..spec import COLORS, InputSpec, ModelSpec, normalization_problem, scaled_pixel_range
from .batching import CHANNEL_ORDERS, Pixels, array_pixels, is_batch, split_items
from .decode import DEFAULT_MAX_IMAGE_BYTES, to_pixels
from .resize_modes import Geometry, crop_of, fill_with_modes, pad_end_geometry, uses_modes

__all__ = ["Geometry", "PreprocessSpec", "preprocess"]

RESIZE_MODES = ("nearest", "bilinear", "area")
LAYOUTS = ("NHWC", "NCHW")
DTYPES = ("float32", "float16")


def empty_batch(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on a 64-byte cache line.

    The native pass streams float32 rows past the caches only when they start on
    a cache line; NumPy guarantees just 16 bytes, so a batch would otherwise be
    fast or not by the luck of the allocator.
    """
    dtype = np.dtype(dtype)
    shape = check_allocation(shape, dtype.itemsize, "the input batch")  # sizes from the file
    nbytes = math.prod(shape) * dtype.itemsize  # np.prod costs 5 us a call
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes].view(dtype).reshape(shape)


# Largest output side: a typo must not ask for a terabyte batch.
MAX_SIZE = 65_536


def _size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    sides = (size, size) if isinstance(size, numbers.Integral) else size
    if isinstance(sides, (str, bytes)) or not isinstance(sides, Sequence) or len(sides) != 2:
        raise InputTypeError(f"size must be an int or (height, width), got {size!r}")
    return tuple(check_int(s, "size", min=1, max=MAX_SIZE) for s in sides)  # type: ignore


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become a model's input batch.

    Args:
        size: output (height, width), or an int for a square; ``None`` keeps the
            images' own size (they must then all have the same size).
        resize: ``"bilinear"``, ``"nearest"`` or ``"area"``.
        crop: ``None`` stretches to ``size``; ``"center"`` resizes so the shorter
            side fits and cuts the centre; a float ratio r in (0, 1] resizes the
            shorter side to size / r first (ImageNet: 0.875, 256 -> 224);
            ``"letterbox"`` fits the whole image inside and pads with ``pad``;
            ``"pad-end"`` fits the height keeping the aspect ratio, the width up to
            the output's (``min(W, ceil(H * w / h))``), and pads the right (OCR).
        mean, std, scale: ``out = (x * scale - mean[c]) / std[c]``, one value or one
            per output channel.
        layout: ``"NHWC"`` or ``"NCHW"``.
        color: output colour, ``"GRAY"``, ``"RGB"`` or ``"BGR"``.
        dtype: ``"float32"`` or ``"float16"``.
        pad: letterbox/pad-end border, as a pixel value (0..255), normalized like pixels.
        input_color: colour order of arrays passed in (``"GRAY"``, ``"RGB"``,
            ``"BGR"``, ``"RGBA"``, ``"BGRA"``); ``None`` reads 1, 3, 4 channels as
            GRAY, RGB, RGBA.  Files and PIL images always know their own.
        max_image_bytes: decoded-size budget per file; larger files raise
            :class:`~dlinfer.DecompressionBombError` before decoding.
        draft: let Pillow decode large JPEGs at reduced scale (see ``images.decode_file``).
        pad_value: the border in model-input units instead (written as is, after
            normalization: PaddleOCR pads 0); ``None`` uses ``pad``.
        antialias: resize with Pillow's filters, which average every source pixel a
            destination pixel covers when downscaling (as Pillow and torchvision do),
            rounded to uint8 as Pillow rounds (see :mod:`.resize_modes`).
    """

    size: tuple[int, int] | None = None
    resize: str = "bilinear"
    crop: str | float | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    layout: str = "NHWC"
    color: str = "RGB"
    dtype: str = "float32"
    pad: float = 0.0
    input_color: str | None = None
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    draft: bool = True
    pad_value: float | None = None
    antialias: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            set_(self, "size", _size(self.size))
            set_(self, "mean", tuple(float(m) for m in np.atleast_1d(self.mean)))
            set_(self, "std", tuple(float(s) for s in np.atleast_1d(self.std)))
            set_(self, "scale", float(self.scale))
            set_(self, "pad", float(self.pad))
            if self.pad_value is not None:
                set_(self, "pad_value", float(self.pad_value))
            set_(self, "dtype", np.dtype(self.dtype).name)
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid preprocessing parameter: {exc}") from exc
        for name, value, allowed in (
            ("resize", self.resize, RESIZE_MODES),
            ("layout", self.layout, LAYOUTS),
            ("color", self.color, COLORS),
            ("dtype", self.dtype, DTYPES),
        ):
            if value not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {value!r}")
        self._fit()  # validates crop
        if self.input_color is not None and self.input_color not in CHANNEL_ORDERS:
            raise InputError(
                f"input_color must be None, GRAY, RGB, BGR, RGBA or BGRA, got {self.input_color!r}"
            )
        if not isinstance(self.max_image_bytes, (int, np.integer)) or self.max_image_bytes < 1:
            raise InputError(
                f"max_image_bytes must be a positive int, got {self.max_image_bytes!r}"
            )
        channels = self.channels
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise InputError(
                    f"{name} needs 1 or {channels} values for {self.color}, got {values}"
                )
        problem = normalization_problem(self.scale, self.mean, self.std, self.dtype)
        if problem is not None:
            raise InputError(problem)
        if not 0 <= self.pad <= 255:  # NaN fails too
            raise InputError(f"pad is a pixel value in [0, 255], got {self.pad}")
        if self.pad_value is not None and not np.isfinite(self.pad_value):
            raise InputError(f"pad_value must be a finite number, got {self.pad_value}")
        if not isinstance(self.antialias, (bool, np.bool_)):
            raise InputError(f"antialias must be True or False, got {self.antialias!r}")

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    @property
    def value_range(self) -> tuple[float, float]:
        """Range of ``pixels * scale``: what a float image must already lie in."""
        return scaled_pixel_range(self.scale)

    def _fit(self) -> tuple[str, float]:
        crop = self.crop
        if crop is None:
            return "stretch", 1.0
        if crop == "letterbox":
            return "letterbox", 1.0
        if crop == "pad-end":
            return "pad-end", 1.0
        if crop == "center":
            return "crop", 1.0
        if isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop <= 1:
            return "crop", float(crop)
        raise InputError(
            "crop must be None, 'center', 'letterbox', 'pad-end' or a ratio in (0, 1], got "
            f"{crop!r}"
        )

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> PreprocessSpec:
        """The spec a dlinfer model declares in its ONNX metadata.

        ``model`` is a :class:`~dlinfer.Model`, a path to one, a ``ModelSpec`` or an
        ``InputSpec``.  Size, layout, colour, normalization and dtype come from the
        input spec, and so does the resize: its ``resize`` mode (stretch,
        center-crop with ``crop_fraction``, letterbox, pad-end), ``interpolation``,
        ``antialias`` and pad (``pad_value`` or ``pad_pixel``).  This is the one place
        every consumer (Classifier, predict_folder, the server, the Batcher, the Ray
        adapters) gets its preprocessing from.
        """
        from ..runtime.model import Model

        if isinstance(model, (str, os.PathLike)):
            model = Model(model)
        spec = model.spec if isinstance(model, Model) else model
        extra: dict[str, Any] = {}
        if isinstance(spec, ModelSpec):
            extra = dict(spec.extra.get("preprocess", {}))
            spec = spec.input
        if not isinstance(spec, InputSpec):
            raise SpecError("the model has no dlinfer spec, so its preprocessing is unknown")
        if spec.kind != "image":
            raise SpecError(f"input {spec.name!r} takes {spec.kind}, not images")
        fields = {
            "size": spec.image_size,
            "mean": spec.mean,
            "std": spec.std,
            "scale": spec.scale,
            "layout": spec.layout,
            "color": spec.color or "RGB",
            "dtype": spec.dtype,
            "resize": spec.interpolation,
            "crop": crop_of(spec),
            "pad": 0.0 if spec.pad_pixel is None else spec.pad_pixel,
            "pad_value": spec.pad_value,
            "antialias": spec.antialias,
        }
        allowed = {f.name for f in dataclasses.fields(cls)}
        fields.update({k: v for k, v in extra.items() if k in allowed})
        fields.update(overrides)
        try:
            return cls(**fields)
        except ValueError as exc:
            raise SpecError(f"the model's preprocessing spec is invalid: {exc}") from exc

    def replace(self, **changes: Any) -> PreprocessSpec:
        return dataclasses.replace(self, **changes)

    def batch_shape(self, n: int, size: tuple[int, int] | None = None) -> tuple[int, ...]:
        h, w = size or self.size or (0, 0)
        c = self.channels
        return (n, h, w, c) if self.layout == "NHWC" else (n, c, h, w)

    def geometry(self, height: int, width: int) -> Geometry:
        """Where an image of this size lands in the output (see :class:`Geometry`)."""
        if self.size is None:
            return Geometry((height, width), (0, 0), (1.0, 1.0))
        fit, ratio = self._fit()
        if fit == "pad-end":
            rh, rw = pad_end_geometry(height, width, self.size)
            return Geometry((rh, rw), (0, 0), (rh / height, rw / width))
        rh, rw, top, left = native.preprocess_geometry(height, width, *self.size, fit, ratio)
        return Geometry((rh, rw), (top, left), (rh / height, rw / width))

    @property
    def draft_target(self) -> Any:
        """What the decoder may draft-decode large JPEGs toward (:meth:`target`), or None
        (always with ``antialias``: Pillow and torchvision resize the full image)."""
        use = self.draft and self.size is not None and not self.antialias
        return self.target if use else None

    def target(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of this size is resized to (what draft decoding aims at)."""
        return self.geometry(height, width).resized

    def _stacked(self, images: Any) -> tuple[np.ndarray, str] | None:
        """A uint8 batch array as (N, H, W, C) and its colour order; None for anything else.

        One batch is checked once, not image by image: 256 MNIST digits would
        otherwise spend longer in Python checks than in the kernel.
        """
        if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
                and is_batch(images)):
            return None
        batch = images if images.ndim == 4 else images[..., None]
        if not (batch.shape[0] and batch.shape[1] and batch.shape[2]):
            return None  # the per-image path names the empty image
        _, order = array_pixels(batch[0], "image 0", self.input_color)
        return batch, order

    def pixels(self, images: Any, threads: int | None = None) -> list[Pixels]:
        """Every item of ``images`` as checked uint8 (H, W, C) pixels and colour order."""
        stacked = self._stacked(images)
        if stacked is not None:
            batch, order = stacked
            return [(a, order) for a in batch]
        return self._item_pixels(images, threads)

    def _item_pixels(self, images: Any, threads: int | None) -> list[Pixels]:
        """Pixels item by item: files decoded, arrays and PIL images checked one by one."""
        return to_pixels(
            split_items(images),
            input_color=self.input_color,
            target=self.draft_target,
            max_image_bytes=self.max_image_bytes,
            threads=threads,
        )

    def fill(
        self, pixels: Sequence[Pixels], out: np.ndarray, threads: int | None = None
    ) -> np.ndarray:
        """Preprocess decoded pixels into the preallocated batch ``out`` (one slot each).

        The building block for batchers: ``out`` may be a slice ``batch[i:j]`` of a
        larger C-contiguous batch.
        """
        check_threads(threads)
        if uses_modes(self):
            return fill_with_modes(self, pixels, out, threads)
        fit, ratio = self._fit()
        arrays = [p[0] for p in pixels]
        colors = [p[1] for p in pixels]
        return native.preprocess_u8_batch(
            arrays, out, colors, self.resize, fit, ratio, self.pad, self.scale,
            list(self.mean), list(self.std), self.layout, self.color,
            0 if threads is None else int(threads),
        )

    def _fill_stack(self, batch: np.ndarray, order: str, out: np.ndarray,
                    threads: int | None) -> np.ndarray:
        if uses_modes(self):
            return fill_with_modes(self, [(a, order) for a in batch], out, threads)
        fit, ratio = self._fit()
        return native.preprocess_u8_stack(
            batch, out, order, self.resize, fit, ratio, self.pad, self.scale,
            list(self.mean), list(self.std), self.layout, self.color,
            0 if threads is None else int(threads),
        )

    def model_input(self, images: Any, threads: int | None = None) -> np.ndarray:
        """The model's batch for anything a user passes: what ``Classifier`` feeds the model.

        uint8 pixels, files and PIL images go through the native pass (:meth:`__call__`);
        float arrays are taken as ``pixels * scale`` already at the model's size
        (:meth:`from_floats`).  Training normalizes through this method too, so a
        deployed model sees exactly the numbers it was trained on.
        """
        if isinstance(images, np.ndarray):
            if images.dtype.kind == "f":
                return self.from_floats(images)
            # One dtype for all its images: the array is taken (and checked) whole, so
            # a uint8 batch reaches the native kernel in one piece.
            return self(images, threads=threads)
        items = split_items(images)
        if not items:
            raise EmptyBatchError("no images given: the batch is empty")
        if not any(isinstance(i, np.ndarray) and i.dtype.kind == "f" for i in items):
            return self(items, threads=threads)
        parts = [
            self.from_floats(item, f"image {i}")
            if isinstance(item, np.ndarray) and item.dtype.kind == "f"
            else self([item], threads=threads)
            for i, item in enumerate(items)
        ]
        return np.concatenate(parts)

    def from_floats(self, arr: np.ndarray, where: str = "image") -> np.ndarray:
        """The batch for float images already scaled like ``pixels * scale``.

        They must already have the output size and channels: only uint8 pixels are
        resized and colour-converted.  ``(x - mean[c]) / std[c]`` in float32, then
        the output layout and dtype.
        """
        if arr.ndim == 2:  # one grayscale image
            arr = arr[None, :, :, None]
        elif arr.ndim == 3:
            arr = arr[..., None] if is_batch(arr) else arr[None]
        elif arr.ndim != 4:
            raise InputRankError(
                f"{where}: an image array must have rank 2 (H, W), 3 (H, W, C) or (N, H, W), "
                f"or 4 (N, H, W, C); got shape {arr.shape}"
            )
        if arr.shape[0] == 0:
            raise EmptyBatchError("no images given: the batch is empty")
        if arr.shape[-1] != self.channels:
            raise ChannelError(
                f"{where}: the model takes {self.channels}-channel ({self.color}) images, got "
                f"{arr.shape[-1]} channels (shape {arr.shape}); only uint8 pixels are converted"
            )
        if self.size is not None and tuple(arr.shape[1:3]) != self.size:
            raise InputShapeError(
                f"{where}: float images must already be {self.size[0]}x{self.size[1]}, got "
                f"{arr.shape[1]}x{arr.shape[2]} (shape {arr.shape}); pass uint8 pixels, files "
                "or PIL images, which are resized for you"
            )
        lo, hi = self.value_range
        if arr.size and not np.isfinite(arr).all():
            raise InputDtypeError(f"{where}: float image contains NaN or infinity")
        if arr.size and (arr.min() < lo - 1e-6 or arr.max() > hi + 1e-6):
            raise InputDtypeError(
                f"{where}: float images must already be scaled to [{lo:g}, {hi:g}] "
                f"(pixels * {self.scale:g}), got values in [{arr.min():g}, {arr.max():g}]; "
                "pass uint8 pixels instead, or scale the floats"
            )
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        batch = (arr.astype(np.float32) - mean) / std
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=np.dtype(self.dtype))

    def __call__(
        self,
        images: Any,
        out: np.ndarray | None = None,
        threads: int | None = None,
        return_geometry: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, list[Geometry]]:
        """The batch for ``images``; see :func:`preprocess`."""
        check_threads(threads)
        stacked = self._stacked(images)
        if stacked is not None:
            batch, order = stacked
            sizes = {batch.shape[1:3]}
        else:
            pixels = self._item_pixels(images, threads)
            if not pixels:
                raise EmptyBatchError("no images given: the batch is empty")
            sizes = {p[0].shape[:2] for p in pixels}
        size = self.size
        if size is None:
            if len(sizes) > 1:
                raise InputShapeError(
                    f"images have different sizes {sorted(sizes)}; pass size= to resize them"
                )
            size = next(iter(sizes))
        n = len(batch) if stacked is not None else len(pixels)
        shape = self.batch_shape(n, size)
        if out is None:
            out = empty_batch(shape, self.dtype)
        elif out.shape != shape or out.dtype != np.dtype(self.dtype):
            raise InputShapeError(
                f"out must be a {self.dtype} array of shape {shape}, got {out.dtype} {out.shape}"
            )
        spec = self if self.size is not None else self.replace(size=size)
        if stacked is not None:
            spec._fill_stack(batch, order, out, threads)
            if return_geometry:
                return out, [spec.geometry(*batch.shape[1:3])] * n
            return out
        spec.fill(pixels, out, threads)
        if return_geometry:
            return out, [spec.geometry(*p[0].shape[:2]) for p in pixels]
        return out


def preprocess(
    images: Any,
    size: int | Sequence[int] | None = None,
    resize: str = "bilinear",
    crop: str | float | None = None,
    mean: float | Sequence[float] = (0.0,),
    std: float | Sequence[float] = (1.0,),
    scale: float = 1.0 / 255.0,
    layout: str = "NHWC",
    color: str = "RGB",
    dtype: str = "float32",
    out: np.ndarray | None = None,
    threads: int | None = None,
    *,
    pad: float = 0.0,
    pad_value: float | None = None,
    antialias: bool = False,
    input_color: str | None = None,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    return_geometry: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[Geometry]]:
    """Turn images of any size into one normalized batch, in one native pass each.

    ``images`` is a path, PIL image or uint8 array (H, W), (H, W, C) or a batch
    (N, H, W[, C]), or a list mixing those; sizes may differ.  Files are decoded in
    parallel threads.  The arguments are those of :class:`PreprocessSpec`; ``out``
    is an optional preallocated batch to fill, ``threads`` the worker threads
    (``None`` or 0: every core; the result is the same for every count).  With
    ``return_geometry`` the per-image :class:`Geometry` list comes back too, e.g.
    to map letterboxed detections back to the original image.

    Bad input raises a :class:`~dlinfer.DlinferError` naming the file or index.
    """
    spec = PreprocessSpec(
        size=_size(size), resize=resize, crop=crop, mean=tuple(np.atleast_1d(mean)),
        std=tuple(np.atleast_1d(std)), scale=scale, layout=layout, color=color, dtype=dtype,
        pad=pad, pad_value=pad_value, antialias=antialias, input_color=input_color,
        max_image_bytes=max_image_bytes,
    )
    return spec(images, out=out, threads=threads, return_geometry=return_geometry)
