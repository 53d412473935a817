"""The one rule for "one image or a batch?", and the checks every image array passes.

Everything that takes images (``preprocess``, ``Classifier``, the ``Batcher``, the
server) asks this module, so an array is read the same way everywhere:

- rank 2 ``(H, W)`` is one grayscale image;
- rank 3 ``(H, W, C)`` with ``C`` in 1, 3, 4 is one image, any other rank 3 is a
  batch of grayscale images ``(N, H, W)``;
- rank 4 ``(N, H, W, C)`` is a batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import (
    ChannelError,
    InputDtypeError,
    InputError,
    InputRankError,
    InputShapeError,
    InputTypeError,
)

__all__ = [
    "CHANNEL_ORDERS",
    "Pixels",
    "array_pixels",
    "is_batch",
    "item_name",
    "split_items",
    "unsupported_item",
]

# (uint8 (H, W, C) array, its colour order: GRAY, RGB, BGR, RGBA or BGRA)
Pixels = tuple[np.ndarray, str]

# Colour orders an image array may be in, and the channels each has.
CHANNEL_ORDERS = {"GRAY": 1, "RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4}
# How an array's channel count is read when the caller names no order.
_DEFAULT_ORDER = {1: "GRAY", 3: "RGB", 4: "RGBA"}


def is_batch(arr: np.ndarray) -> bool:
    """True when ``arr`` holds several images (see the module docstring)."""
    return arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in _DEFAULT_ORDER)


def split_items(images: Any) -> list[Any]:
    """Split the user's argument into per-image items.

    A path, PIL image or one image array is one item; a batch array is its
    images; a list or tuple is its elements.
    """
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if is_batch(images) else [images]
    if isinstance(images, Sequence) and not isinstance(images, (bytes, bytearray)):
        return list(images)
    raise InputTypeError(f"images must be {IMAGE_KINDS}, or a list of those; got "
                         f"{type(images).__name__}{_BYTES_HINT if _is_bytes(images) else ''}")


# What every "unsupported image" message lists.
IMAGE_KINDS = "a path, a PIL image or a uint8 numpy array"
_BYTES_HINT = " (encoded image bytes: decode them with dlinfer.preprocessing.decode_bytes)"


def _is_bytes(item: Any) -> bool:
    return isinstance(item, (bytes, bytearray, memoryview))


def unsupported_item(item: Any, where: str) -> InputTypeError:
    """The error for one item of an image list that is none of the kinds dlinfer reads."""
    return InputTypeError(f"{where}: an image must be {IMAGE_KINDS}; got "
                          f"{type(item).__name__}{_BYTES_HINT if _is_bytes(item) else ''}")


def item_name(item: Any, i: int, n: int) -> str:
    """How an error names item ``i`` of ``n``: its path, or its index."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"image {i}" if n > 1 else "image"


def array_pixels(arr: np.ndarray, where: str, input_color: str | None = None) -> Pixels:
    """Check one image array and view it as (H, W, C) uint8 with its colour order."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim != 3:
        raise InputRankError(
            f"{where}: an image array must have rank 2 (H, W) or 3 (H, W, C), or rank 4 "
            f"for a batch; got shape {arr.shape}"
        )
    if arr.dtype != np.uint8:
        raise InputDtypeError(
            f"{where}: images must be uint8 pixels, got dtype {arr.dtype} (shape {arr.shape})"
        )
    channels = arr.shape[2]
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputShapeError(f"{where}: the image is empty (shape {arr.shape})")
    if channels not in _DEFAULT_ORDER:
        raise ChannelError(
            f"{where}: an image must have 1, 3 or 4 channels, got {channels} "
            f"(shape {arr.shape}); they are read as GRAY, RGB/BGR or RGBA/BGRA"
        )
    order = input_color or _DEFAULT_ORDER[channels]
    expected = CHANNEL_ORDERS.get(order)
    if expected is None:
        raise InputError(f"input_color must be GRAY, RGB, BGR, RGBA or BGRA, got {order!r}")
    if expected != channels:
        raise ChannelError(
            f"{where}: input_color {order} needs {expected} channel(s), got {channels} "
            f"(shape {arr.shape})"
        )
    return arr, order
