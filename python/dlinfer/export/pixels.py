"""How a Keras image model wants its pixels: what the model itself says, or what export assumes.

The exporter reads the model from its image input to the first operation that computes
on the pixels, looking inside nested models and past layers that leave the values
alone (augmentation, resizing, padding).  That operation decides:

- a ``Rescaling`` or ``Normalization`` layer, arithmetic written in the model
  (``keras.applications.*.preprocess_input`` called on the input tensor leaves
  ``true_divide``/``subtract``/``get_item`` operations), or a ``Lambda`` that maps
  pixels affinely (``x / 127.5 - 1``): the model scales its own pixels, so it takes
  them as they are, 0..255 (preset ``raw``).  This covers the families that carry
  their own preprocessing (EfficientNet, ConvNeXt, MobileNetV3, RegNet), nested or not;
- the first convolution of a ``keras.applications`` base (a nested model named as
  Keras names it, or the family's own layer names in the model): that family's
  ``preprocess_input`` convention (``caffe``: VGG, ResNet v1; ``tf``: MobileNet V1/V2,
  Inception, Xception, ResNetV2, NASNet; ``torch``: DenseNet);
- anything else says nothing: export assumes ``x / 255`` (preset ``unit``) and says
  so, with the flag that changes it.

The presets' numbers live in :mod:`dlinfer.preprocessing.presets`; this module only
names one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .prepare import all_layers, is_augmentation

__all__ = ["ASSUMED_PRESET", "KERAS_FAMILIES", "PixelConvention", "detect_convention"]

#: What export takes when nothing in the model or the flags says how pixels are scaled.
ASSUMED_PRESET = "unit"

# (family, preset, how Keras names the base model, layer names only that family has).
# The names are Keras 3's (keras.applications); a nested base keeps its name when saved.
KERAS_FAMILIES: tuple[tuple[str, str, str, frozenset[str]], ...] = (
    ("VGG16/VGG19", "keras-caffe", r"vgg(16|19)",
     frozenset({"block1_conv1", "block1_pool", "block5_conv3"})),
    ("ResNetV2", "keras-tf", r"resnet(50|101|152)v2", frozenset({"conv2_block1_preact_bn"})),
    ("ResNet", "keras-caffe", r"resnet(50|101|152)",
     frozenset({"conv1_conv", "conv2_block1_0_conv", "conv2_block1_add"})),
    ("MobileNetV2", "keras-tf", r"mobilenetv2_[\d.]+_\d+",
     frozenset({"Conv1", "bn_Conv1", "block_1_expand"})),
    ("MobileNet", "keras-tf", r"mobilenet_[\d.]+_\d+", frozenset({"conv_dw_1", "conv_pw_1"})),
    # Only without its own Rescaling (include_preprocessing=False) does this rule apply.
    ("MobileNetV3", "keras-tf", r"mobilenetv3(small|large)", frozenset()),
    ("InceptionResNetV2", "keras-tf", r"inception_resnet_v2",
     frozenset({"mixed_5b", "block35_1_mixed", "conv_7b"})),
    ("InceptionV3", "keras-tf", r"inception_v3", frozenset({"mixed0", "mixed1", "mixed2"})),
    ("Xception", "keras-tf", r"xception", frozenset({"block1_conv1_bn", "block2_sepconv1"})),
    ("DenseNet", "keras-torch", r"densenet(121|169|201)",
     frozenset({"conv2_block1_concat", "pool2_conv"})),
    ("NASNet", "keras-tf", r"nasnet(_mobile|_large)?", frozenset({"stem_conv1", "stem_bn1"})),
)

# Layers that move or resize pixels without changing their scale.
_PASS_THROUGH = frozenset({"InputLayer", "Identity", "Resizing", "ZeroPadding2D",
                           "Cropping2D", "CenterCrop", "Dropout", "SpatialDropout2D",
                           "Cast"})
# Keras operations (keras.src.ops) that compute pixel normalization in a functional model.
_ARITHMETIC_OPS = frozenset({"TrueDivide", "Divide", "Subtract", "Add", "Multiply",
                             "GetItem", "Stack", "Flip", "Concatenate"})
_SELF_SCALING = frozenset({"Rescaling", "Normalization"})


@dataclass(frozen=True)
class PixelConvention:
    """The preset export applies to an image input, and why."""

    preset: str
    reason: str
    assumed: bool = False  # nothing in the model said it


def _operations(model: Any) -> list[Any]:
    """``model``'s operations in the order they run (a functional model's include the
    bare ``keras.ops`` calls that ``model.layers`` leaves out)."""
    ops = getattr(model, "operations", None)
    if ops is None:  # Sequential: its layers are its operations
        ops = getattr(model, "layers", ())
    return list(ops)


def _affine(layer: Any, channels: int) -> np.ndarray | None:
    """``layer``'s per-pixel affine map (a (C+1, C) matrix: weights, then offsets), or None
    when it is not one or cannot be probed."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 4, 4, channels)).astype(np.float32)
    try:
        y = np.asarray(layer(x), dtype=np.float64)
    except Exception:  # noqa: BLE001 - a Lambda may only run on its own shapes: not probed
        return None
    if y.shape != x.shape:
        return None
    flat = x.reshape(-1, channels).astype(np.float64)
    design = np.concatenate([flat, np.ones((len(flat), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, y.reshape(-1, channels), rcond=None)
    residual = np.abs(design @ coef - y.reshape(-1, channels)).max()
    # float32 arithmetic on values up to 255: a true affine map fits to ~1e-5 of its scale.
    if residual > 1e-4 * max(1.0, float(np.abs(y).max())):
        return None
    return coef


def _describe_affine(coef: np.ndarray) -> str:
    channels = coef.shape[1]
    low, high = coef[channels], coef[channels] + 255.0 * coef[:channels].sum(axis=0)
    ranges = sorted({(round(float(a), 3), round(float(b), 3)) for a, b in zip(low, high)})
    text = ", ".join(f"[{a:g}, {b:g}]" for a, b in ranges)
    return f"maps pixels 0..255 to {text}"


def _first_computation(model: Any, channels: int, trail: tuple[Any, ...] = ()
                       ) -> tuple[Any, tuple[Any, ...], str | None]:
    """The first operation on the pixel path, the models around it (outermost first),
    and for an affine ``Lambda`` what it computes."""
    for op in _operations(model):
        name = type(op).__name__
        if name in _PASS_THROUGH or is_augmentation(op):
            continue
        if hasattr(op, "layers"):  # a nested model: its first computation is the one
            found, inner, note = _first_computation(op, channels, (*trail, op))
            if found is not None:
                return found, inner, note
            continue
        if name == "Lambda":
            coef = _affine(op, channels)
            if coef is not None:
                identity = (np.allclose(coef[:channels], np.eye(channels), atol=1e-6)
                            and np.allclose(coef[channels], 0, atol=1e-6))
                if identity:
                    continue
                return op, trail, _describe_affine(coef)
        return op, trail, None
    return None, trail, None


def _family(model: Any, trail: tuple[Any, ...]) -> tuple[str, str, str] | None:
    """``(family, preset, where)`` of the keras.applications base the pixels enter."""
    for nested in reversed(trail):  # innermost first: the base itself
        for family, preset, pattern, _ in KERAS_FAMILIES:
            if re.fullmatch(pattern, nested.name, flags=re.IGNORECASE):
                return family, preset, f"nested model {nested.name!r}"
    names = {layer.name for layer in all_layers(model)}
    for family, preset, _, signature in KERAS_FAMILIES:
        if signature and signature <= names:
            return family, preset, f"layers {', '.join(sorted(signature))}"
    return None


def detect_convention(model: Any, channels: int) -> PixelConvention:
    """How the single image input of ``model`` (with ``channels`` channels) wants its
    pixels; see the module doc."""
    op, trail, affine = _first_computation(model, channels)
    if op is None:
        return PixelConvention(ASSUMED_PRESET, "the model has no layer that computes on "
                               "the pixels", assumed=True)
    cls = type(op).__name__
    where = f"{op.name!r} ({cls})" + (f" in nested model {trail[-1].name!r}" if trail else "")
    if cls in _SELF_SCALING:
        return PixelConvention("raw", f"the model scales its own pixels: its first layer "
                               f"{where} takes them as they are, 0..255")
    if cls == "Lambda" and affine is not None:
        return PixelConvention("raw", f"the model scales its own pixels: its first layer "
                               f"{where} {affine}")
    if cls in _ARITHMETIC_OPS and type(op).__module__.startswith("keras.src.ops"):
        return PixelConvention("raw", f"the model scales its own pixels: its first "
                               f"operation {where} is arithmetic on them (preprocess_input "
                               "called inside the model)")
    family = _family(model, trail)
    if family is not None:
        name, preset, seen = family
        return PixelConvention(preset, f"the pixels enter a keras.applications {name} base "
                               f"({seen}), trained with preprocess_input's "
                               f"{preset.removeprefix('keras-')!r} convention")
    return PixelConvention(ASSUMED_PRESET, f"nothing in the model says how pixels are scaled "
                           f"(its first computation is {where})", assumed=True)
