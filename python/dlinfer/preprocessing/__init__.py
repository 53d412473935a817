"""Images -> the model's batch tensor.

- :mod:`.batching`: the one "one image or a batch?" rule and the image-array checks;
- :mod:`.decode`: the one Pillow decoder, for files and for uploaded bytes, with
  the decompression-bomb budget;
- :mod:`.transform`: :class:`PreprocessSpec` and :func:`preprocess`, the native
  fused pass (resize, crop, colour, normalization) driven by the model's spec;
- :mod:`.resize_modes`: pad-end, antialiasing and a border in model-input units,
  around the native pass;
- :mod:`.presets`: the named conventions (keras-tf, torchvision, ...) as spec fields;
- :mod:`.tokens`: token id sequences for text models.
"""

from __future__ import annotations

from .batching import is_batch, split_items
from .decode import DEFAULT_MAX_IMAGE_BYTES, decode_bytes, decode_file
from .transform import Geometry, PreprocessSpec, preprocess

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "Geometry",
    "PreprocessSpec",
    "decode_bytes",
    "decode_file",
    "is_batch",
    "preprocess",
    "split_items",
]
