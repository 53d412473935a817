"""Named preprocessing conventions, and the one function that applies them to a spec.

Each preset is the convention a user knows by name, written as the spec fields it sets
(model input = ``(pixels * scale - mean[c]) / std[c]``, see :mod:`dlinfer.spec`):

- ``keras-tf``: ``x / 127.5 - 1`` ([-1, 1]): ``keras.applications`` MobileNet, Inception,
  Xception, ResNetV2, NASNet;
- ``keras-torch``: ``x / 255``, then ImageNet mean and std, RGB: DenseNet;
- ``keras-caffe``: BGR, ImageNet means (BGR order) subtracted, scale 1: VGG16/19, ResNet50;
- ``torchvision``: shorter side to 256 (antialiased bilinear, as Pillow), centre crop 224
  (crop fraction 0.875), ``x / 255``, ImageNet mean and std, RGB;
- ``unit``: ``x / 255``;
- ``raw``: ``x`` (0..255).

This module is the one owner of those numbers: the exporter, ``dlinfer spec set``, the
Python API (``preprocess=``) and export's convention detection all read them from here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

from ..errors import SpecError
from ..spec import InputSpec, channel_values, shape_text

__all__ = ["PRESETS", "PRESET_NAMES", "apply_preprocess", "channel_values", "pad_end_width",
           "preset_fields", "sized_shape"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# keras.applications.imagenet_utils "caffe" mode: the ImageNet means, in BGR order, in pixels.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# ``color`` applies to 3-channel inputs only (a grayscale model keeps GRAY); ``size`` is a
# default for a dynamic height and width (a fixed size keeps its own, the crop fraction
# still applies).  Fields a preset leaves out keep their value.
PRESETS: dict[str, dict[str, Any]] = {
    "keras-tf": {"scale": 1 / 127.5, "mean": (1.0,), "std": (1.0,)},
    "keras-torch": {"scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                    "color": "RGB"},
    "keras-caffe": {"scale": 1.0, "mean": CAFFE_MEAN_BGR, "std": (1.0,), "color": "BGR"},
    "torchvision": {"scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                    "color": "RGB", "resize": "center-crop", "crop_fraction": 0.875,
                    "interpolation": "bilinear", "antialias": True, "size": (224, 224)},
    "unit": {"scale": 1 / 255, "mean": (0.0,), "std": (1.0,)},
    "raw": {"scale": 1.0, "mean": (0.0,), "std": (1.0,)},
}
PRESET_NAMES = tuple(PRESETS)

# The fields apply_preprocess takes, besides ``size``: each is an InputSpec field.
FIELDS = ("scale", "mean", "std", "color", "resize", "crop_fraction", "pad_value",
          "pad_pixel", "interpolation", "antialias", "layout", "batch_axis")


def preset_fields(name: str, channels: int | None = None) -> dict[str, Any]:
    """The spec fields preset ``name`` sets, for an input with ``channels`` channels."""
    if name not in PRESETS:
        raise SpecError(f"unknown preprocessing preset {name!r}; the presets are "
                        f"{', '.join(PRESET_NAMES)}")
    fields = dict(PRESETS[name])
    if channels == 1 and "color" in fields:
        if len(fields["mean"]) == 3:
            raise SpecError(f"preset {name} normalizes 3 colour channels (a mean and std per "
                            "channel), and this input has 1")
        fields.pop("color")
    return fields


def apply_preprocess(spec: InputSpec, preset: str | None = None, *,
                     size: Sequence[int] | int | None = None, **changes: Any) -> InputSpec:
    """``spec`` with a preset's fields, then ``changes`` (None leaves a field as it is).

    ``changes`` are InputSpec fields (see :data:`FIELDS`); ``mean`` and ``std`` take a
    number or one per channel.  ``size`` (an int or (height, width)) fills a dynamic
    height and width and must agree with a static one.  The result is validated.
    """
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise SpecError(f"unknown preprocessing field(s) {unknown}; known: {list(FIELDS)}")
    if spec.kind != "image":
        raise SpecError(f"input {spec.name!r} takes {spec.kind}, and preprocessing describes "
                        "an image input")
    if changes.get("pad_value") is not None and changes.get("pad_pixel") is not None:
        raise SpecError("give the pad as pad_value (--pad-value, model-input units) or "
                        "pad_pixel (--pad-pixel, 0..255), not both")
    fields: dict[str, Any] = {}
    preset_size = None
    if preset is not None:
        fields = preset_fields(preset, spec.channels)
        preset_size = fields.pop("size", None)
    fields.update({k: v for k, v in changes.items() if v is not None})
    resize = fields.get("resize", spec.resize)
    if resize != "center-crop" and changes.get("crop_fraction") is None:
        fields["crop_fraction"] = 1.0  # a fraction the mode does not use
    if resize not in ("letterbox", "pad-end") and changes.get("pad_value") is None \
            and changes.get("pad_pixel") is None:
        fields.update(pad_value=None, pad_pixel=None)  # a pad the mode does not use
    for key in ("mean", "std"):
        if key in fields:
            fields[key] = channel_values(fields[key], key)
    for key in ("scale", "crop_fraction", "pad_value", "pad_pixel"):
        if fields.get(key) is not None:
            fields[key] = float(fields[key])
    if fields.get("pad_value") is not None:
        fields["pad_pixel"] = None  # one pad, in the units the user gave last
    elif fields.get("pad_pixel") is not None:
        fields["pad_value"] = None
    try:
        result = dataclasses.replace(spec, **fields)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"input {spec.name!r}: {exc}") from exc
    if size is not None:
        result = dataclasses.replace(result, shape=sized_shape(result, size, strict=True))
    elif preset_size is not None:
        result = dataclasses.replace(result, shape=sized_shape(result, preset_size,
                                                               strict=False))
    result.validate()
    return result


def sized_shape(spec: InputSpec, size: Sequence[int] | int,
                strict: bool = True) -> tuple[int | None, ...]:
    """``spec``'s shape with its height and width set to ``size`` where dynamic.

    A static side that differs is an error when ``strict`` (the user asked for that
    size), else kept (a preset's default size yields to the model's own).
    """
    h, w = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
    axes = (1, 2) if spec.layout == "NHWC" else (2, 3)
    shape = list(spec.shape)
    for axis, want in zip(axes, (int(h), int(w))):
        if shape[axis] is not None and shape[axis] != want:
            if strict:
                raise SpecError(f"--size {h}x{w} contradicts input {spec.name!r}'s static "
                                f"shape {shape_text(spec.shape)} ({spec.layout})")
            continue
        shape[axis] = want
    return tuple(shape)


def pad_end_width(height: int, width: int, out_height: int, out_width: int) -> int:
    """The resized width of a ``pad-end`` input: the height fits, the aspect is kept, up to
    the output width (PaddleOCR: ``min(W, ceil(H * w / h))``)."""
    return max(1, min(out_width, math.ceil(out_height * width / height)))
