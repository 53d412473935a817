"""Turning what users pass (file paths, PIL images, arrays) into model input batches.

Everything ends as one C-contiguous float32 batch built by the native kernel:
uint8 pixels go through ``normalize_u8_to_f32_nhwc`` in a single pass straight
into the batch buffer.  Errors name the item (file path or batch index) and the
problem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._native_loader import native
from .errors import (
    ChannelError,
    EmptyBatchError,
    ImageDecodeError,
    InputDtypeError,
    InputRankError,
    InputShapeError,
)
from .spec import InputSpec

__all__ = ["as_batch", "load_image", "normalize_pixels"]

PathLike = str | os.PathLike


def load_image(path: PathLike, color: str = "RGB") -> Image.Image:
    """Decode an image file, honouring EXIF orientation, in mode "L" or "RGB"."""
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncation fails here and names this file
            img = ImageOps.exif_transpose(img)
            return _to_mode(img, color)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{path}: corrupt or truncated image ({exc})") from exc


def _to_mode(img: Image.Image, color: str) -> Image.Image:
    mode = "L" if color == "GRAY" else "RGB"
    if img.mode == mode:
        return img
    if img.mode in ("P", "PA", "LA", "RGBA") or "transparency" in img.info:
        # Composite transparent pixels onto black, the background MNIST-style models
        # were trained on, instead of exposing whatever colour the hidden pixels hold.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)


def _pil_to_array(img: Image.Image, spec: InputSpec) -> np.ndarray:
    img = _to_mode(img, spec.color or "RGB")
    size = spec.image_size
    if size is not None and (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _items(images: Any) -> list[Any]:
    """Split the user's argument into per-image items (arrays keep their batch axis)."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return [images]
    if isinstance(images, Sequence):
        return list(images)
    raise TypeError(
        "images must be a path, a PIL image, a numpy array, or a list of those; "
        f"got {type(images).__name__}"
    )


def _array_to_batch(arr: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """An array holding one image or a batch, as an NHWC batch with the model's channels."""
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
    if arr.shape[-1] != channels:
        raise ChannelError(
            f"{where}: the model takes {channels}-channel ({spec.color}) images, got "
            f"{arr.shape[-1]} channels (shape {arr.shape})"
        )
    size = spec.image_size
    if size is not None and tuple(arr.shape[1:3]) != size:
        raise InputShapeError(
            f"{where}: the model takes {size[0]}x{size[1]} images, got "
            f"{arr.shape[1]}x{arr.shape[2]} (shape {arr.shape}); resize arrays first, "
            "or pass files or PIL images, which are resized for you"
        )
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        lo, hi = spec.value_range
        if arr.size and not np.isfinite(arr).all():
            raise InputDtypeError(f"{where}: float image contains NaN or infinity")
        if arr.size and (arr.min() < lo - 1e-6 or arr.max() > hi + 1e-6):
            raise InputDtypeError(
                f"{where}: float images must already be scaled to [{lo:g}, {hi:g}] "
                f"(pixels * {spec.scale:g}), got values in [{arr.min():g}, {arr.max():g}]; "
                "pass uint8 pixels instead, or scale the floats"
            )
        return arr.astype(np.float32, copy=False)
    raise InputDtypeError(
        f"{where}: images must be uint8 pixels or scaled floats, got dtype {arr.dtype}"
    )


def normalize_pixels(
    pixels: np.ndarray, spec: InputSpec, threads: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """uint8 NHWC pixels -> float32 model input, in one native pass."""
    if out is None:
        out = np.empty(pixels.shape, dtype=np.float32)
    return native.normalize_u8_to_f32_nhwc(
        np.ascontiguousarray(pixels), out, spec.scale, list(spec.mean), list(spec.std),
        threads or 0,
    )


def as_batch(images: Any, spec: InputSpec, threads: int | None = None) -> np.ndarray:
    """Build the float32 NHWC model-input batch for ``images``."""
    if spec.kind != "image" or spec.layout != "NHWC":
        raise InputShapeError(f"input {spec.name!r} is not an NHWC image input")
    items = _items(images)
    if not items:
        raise EmptyBatchError("no images given: the batch is empty")
    parts: list[np.ndarray] = []
    for i, item in enumerate(items):
        where = f"image {i}" if len(items) > 1 else "image"
        if isinstance(item, (str, os.PathLike)):
            where = os.fspath(item)
            parts.append(_pil_to_array(load_image(item, spec.color or "RGB"), spec)[None])
        elif isinstance(item, Image.Image):
            parts.append(_pil_to_array(item, spec)[None])
        elif isinstance(item, np.ndarray) or np.ndim(item) > 0:
            parts.append(_array_to_batch(np.asarray(item), spec, where))
        else:
            raise TypeError(f"{where}: unsupported image type {type(item).__name__}")
    total = sum(p.shape[0] for p in parts)
    if total == 0:
        raise EmptyBatchError("no images given: the batch is empty")
    if all(p.dtype == np.uint8 for p in parts):
        pixels = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return normalize_pixels(pixels, spec, threads)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    scaled = [
        p.astype(np.float32) * np.float32(spec.scale) if p.dtype == np.uint8 else p for p in parts
    ]
    batch = np.concatenate(scaled) if len(scaled) > 1 else scaled[0]
    return np.ascontiguousarray((batch - mean) / std, dtype=np.float32)
