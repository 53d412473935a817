"""What a convnet's layers hold: every channel of an intermediate tensor for one image,
and what each filter responds to.

- :func:`activations` runs the model once with the tensor as an extra output (through
  :func:`dlinfer.verification.per_layer.onnxruntime_tensors`, the one place dlinfer
  reads a graph's insides).
- :func:`filters`: the first convolution's kernels are shown as they are (a 3x3 RGB
  kernel is a 3x3 picture); for a deeper layer, the input pattern that maximizes the
  filter's centre unit, found by gradient ascent on the input (Erhan et al. 2009) with
  :func:`dlinfer.explain.gradient.gradient`: normalized-gradient steps from grey noise,
  clipped to the pixel range the spec's normalization can produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_int
from ..errors import InputError
from .cam import prepare, resolve_layer
from .layers import LayerTensor, graph_info, save_temporary
from .render import enlarge

__all__ = ["FilterPatterns", "activations", "filters"]

# Filters drawn by default: a deep layer has hundreds, each one a gradient ascent.
DEFAULT_FILTERS = 16
DEFAULT_STEPS = 30
# Each ascent step moves the input by this fraction of its value range (the gradient
# is divided by its root mean square first, so steps do not depend on its scale).
STEP_FRACTION = 0.02


def _layer(clf: Any, layer: str | None, sample: np.ndarray) -> tuple[Any, LayerTensor]:
    if clf.preprocessing is None or clf._multi:
        raise InputError(f"{clf.model.path} takes no single image input to visualize")
    info = graph_info(clf.model, clf.preprocessing.layout)
    return info, resolve_layer(clf, info, layer, sample)


def activations(clf: Any, image: Any, layer: str | None = None) -> tuple[LayerTensor,
                                                                         np.ndarray]:
    """The layer's tensor for one image, as (channels, height, width)."""
    from ..verification.per_layer import onnxruntime_tensors

    prepared = prepare(clf, image)
    if len(prepared.batch) != 1:
        raise InputError(f"activations shows one image; got {len(prepared.batch)}")
    info, found = _layer(clf, layer, prepared.batch)
    value = onnxruntime_tensors(info.proto, {clf.model.inputs[0].name: prepared.batch},
                                [found.tensor])[found.tensor][0]
    if found.layout == "NHWC":
        value = value.transpose(2, 0, 1)
    return found, value


@dataclass
class FilterPatterns:
    """One picture per filter: (height, width) grey or (height, width, 3) RGB, in [0, 1]."""

    layer: LayerTensor
    kind: str  # "kernels" (the first convolution's weights) or "ascent"
    tiles: list[np.ndarray]
    activations: list[float]  # ascent: the unit's value at the end (kernels: [])


def filters(clf: Any, layer: str | None = None, *, count: int = DEFAULT_FILTERS,
            steps: int = DEFAULT_STEPS, seed: int = 0) -> FilterPatterns:
    """The first ``count`` filters of ``layer`` as pictures (see the module docstring)."""
    count = check_int(count, "count", min=1, max=4096)
    steps = check_int(steps, "steps", min=1, max=10_000)
    spec = clf.preprocessing
    start = _grey_noise(clf, 1, np.random.default_rng(seed))
    info, found = _layer(clf, layer, start)
    conv = info.conv_feeding(found.tensor)
    first = info.conv_nodes()[:1]
    if conv is not None and first and conv is first[0]:
        w = info.weights(conv.input[1])
        if w is not None and w.shape[1] in (1, 3):
            return FilterPatterns(found, "kernels", _kernel_tiles(w[:count], spec.color), [])
    return _ascent(clf, found, count, steps, seed)


def _kernel_tiles(w: np.ndarray, color: str) -> list[np.ndarray]:
    """(O, I, kh, kw) kernels on one shared scale, so their strengths compare."""
    lo, hi = float(w.min()), float(w.max())
    scaled = (w - lo) / (hi - lo) if hi > lo else np.zeros_like(w)
    tiles = []
    for k in scaled:
        tile = k[0] if k.shape[0] == 1 else k.transpose(1, 2, 0)
        if tile.ndim == 3 and color == "BGR":
            tile = tile[..., ::-1]
        tiles.append(enlarge(tile))
    return tiles


def _grey_noise(clf: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """Mid-grey pixels with a little noise, through the model's own preprocessing."""
    spec = clf.preprocessing
    if spec.size is None:
        raise InputError(f"{clf.model.path} takes any image size; filters needs a fixed one")
    h, w = spec.size
    px = np.clip(128 + rng.normal(0, 20, (n, h, w, 3)), 0, 255).astype(np.uint8)
    return spec.model_input(px, clf.threads)


def _input_bounds(clf: Any, like: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest model-input values per channel (black and white)."""
    spec = clf.preprocessing
    h, w = like.shape[1:3] if spec.layout == "NHWC" else like.shape[2:4]
    black = spec.model_input(np.zeros((1, h, w, 3), np.uint8), clf.threads)
    white = spec.model_input(np.full((1, h, w, 3), 255, np.uint8), clf.threads)
    return np.minimum(black, white), np.maximum(black, white)


_EXPOSED: dict[tuple[str, str], str] = {}


def _exposing(info: Any, tensor: str) -> str:
    """A copy of the model file with ``tensor`` as one more output (gradients are taken
    of outputs), kept for this process."""
    from onnx import ValueInfoProto

    key = (info.where, tensor)
    if key not in _EXPOSED:
        proto = type(info.proto)()
        proto.CopyFrom(info.proto)
        if tensor not in {o.name for o in proto.graph.output}:
            proto.graph.output.append(ValueInfoProto(name=tensor))
        _EXPOSED[key] = save_temporary(proto, "exposed")
    return _EXPOSED[key]


def _ascent(clf: Any, found: LayerTensor, count: int, steps: int,
            seed: int) -> FilterPatterns:
    from ..verification.per_layer import onnxruntime_tensors
    from .gradient import gradient

    spec = clf.preprocessing
    info = graph_info(clf.model, spec.layout)
    name = clf.model.inputs[0].name
    probe = _grey_noise(clf, 1, np.random.default_rng(seed))
    shape = onnxruntime_tensors(info.proto, {name: probe}, [found.tensor])[found.tensor].shape
    if len(shape) != 4:
        raise InputError(f"layer {found.asked or found.tensor!r} has no spatial axes")
    c_axis = found.channel_axis
    channels = shape[c_axis]
    count = min(count, channels)
    h, w = (shape[2], shape[3]) if found.layout == "NCHW" else (shape[1], shape[2])
    centre = (h // 2, w // 2)
    index = [(k, *centre) if found.layout == "NCHW" else (*centre, k) for k in range(count)]
    x = _grey_noise(clf, count, np.random.default_rng(seed))
    lo, hi = _input_bounds(clf, x)
    step = STEP_FRACTION * float((hi - lo).max())
    axes = tuple(range(1, x.ndim))
    model = _exposing(info, found.tensor)
    for _ in range(steps):
        g = gradient(model, x, output=found.tensor, index=index,
                     logits=False).astype(np.float32)
        rms = np.sqrt((g * g).mean(axis=axes, keepdims=True)) + 1e-12
        x = np.clip(x + step * g / rms, lo, hi).astype(x.dtype)
    final = onnxruntime_tensors(info.proto, {name: x}, [found.tensor])[found.tensor]
    values = [float(final[(k, *i)]) for k, i in enumerate(index)]
    tiles = []
    for img in x:
        hwc = img if spec.layout == "NHWC" else img.transpose(1, 2, 0)
        lo_i, hi_i = float(hwc.min()), float(hwc.max())
        t = (hwc - lo_i) / (hi_i - lo_i) if hi_i > lo_i else np.zeros_like(hwc)
        if t.shape[-1] == 1:
            t = t[..., 0]
        elif spec.color == "BGR":
            t = t[..., ::-1]
        tiles.append(enlarge(t.astype(np.float32), 64))
    return FilterPatterns(found, "ascent", tiles, values)
