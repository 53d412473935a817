"""Resize (opset 11+): nearest and linear, one axis at a time, in plain NumPy.

Both modes are separable: the N-linear interpolation of a point is the linear
interpolation, axis after axis, of the previous axes' results, and nearest picks
an index per axis.  Cubic, antialiasing and exclude_outside are refused.
"""

from __future__ import annotations

import numpy as np

from .node import Node, op

_ATTRS = ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
          "exclude_outside", "extrapolation_value", "antialias", "axes",
          "keep_aspect_ratio_policy")

# Modes that move samples even at scale 1: those axes are resampled too.
_SHIFTING = ("tf_half_pixel_for_nn", "tf_crop_and_resize")


def _source(mode: str, out: int, size: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """Input coordinates of the output positions 0..out-1 along one axis.

    The spec's "resized length" is size * scale, unrounded (it differs from ``out``
    when scales, not sizes, were given).
    """
    x = np.arange(out, dtype=np.float64)
    length = size * scale
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out / (size * scale)
        offset = size / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if length > 1 else np.zeros(out)
    if mode == "align_corners":
        return x * (size - 1) / (length - 1) if length > 1 else np.zeros(out)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    # tf_crop_and_resize
    start, end = roi
    if out > 1:
        return start * (size - 1) + x * (end - start) * (size - 1) / (out - 1)
    return np.full(out, 0.5 * (start + end) * (size - 1))


def _nearest(mode: str, coord: np.ndarray) -> np.ndarray:
    if mode == "round_prefer_floor":
        return np.ceil(coord - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(coord + 0.5)
    if mode == "floor":
        return np.floor(coord)
    return np.ceil(coord)


@op("Resize")
def _resize(node: Node) -> np.ndarray:
    node.only(*_ATTRS)
    x = node.input(0)
    if len(node.inputs) < 3:
        raise node.unsupported("the opset-10 form (scales only, no coordinate mode)")
    mode = node.attr("mode", "nearest")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel")
    nearest_mode = node.attr("nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear", "cubic"):
        raise node.unsupported(f"mode={mode}")
    if node.attr("antialias", 0):
        raise node.unsupported("antialias=1")
    if ctm not in ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                   "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"):
        raise node.unsupported(f"coordinate_transformation_mode={ctm}")
    if nearest_mode not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        raise node.unsupported(f"nearest_mode={nearest_mode}")
    if mode != "nearest" and x.dtype.kind != "f":
        raise node.unsupported(f"linear mode on dtype {x.dtype}")
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise node.unsupported(f"keep_aspect_ratio_policy={policy}")

    axes = [a % x.ndim for a in node.attr("axes", list(range(x.ndim)))]
    roi_in, scales, sizes = node.input(1), node.input(2), node.input(3)
    roi = [(0.0, 1.0)] * x.ndim
    if roi_in is not None and roi_in.size and ctm == "tf_crop_and_resize":
        k = len(axes)
        for i, a in enumerate(axes):
            roi[a] = (float(roi_in[i]), float(roi_in[i + k]))
    scale = [1.0] * x.ndim
    out = list(x.shape)
    if sizes is not None and sizes.size:
        sizes = [int(s) for s in sizes]
        ratios = [sizes[i] / x.shape[a] for i, a in enumerate(axes)]
        if policy != "stretch":
            pick = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [pick] * len(axes)
            # round half away from zero, as the spec's reference implementation
            sizes = [int(np.floor(pick * x.shape[a] + 0.5)) for a in axes]
        for i, a in enumerate(axes):
            scale[a], out[a] = ratios[i], sizes[i]
    elif scales is not None and scales.size:
        for i, a in enumerate(axes):
            scale[a] = float(scales[i])
            lo, hi = roi[a]
            out[a] = int(np.floor(x.shape[a] * (hi - lo) * scale[a]))
    else:
        raise ValueError("Resize needs scales or sizes")

    extrapolation = node.attr("extrapolation_value", 0.0)
    y = x
    for a in range(x.ndim):
        if out[a] == x.shape[a] and scale[a] == 1.0 and ctm not in _SHIFTING:
            continue
        size = x.shape[a]
        coord = _source(ctm, out[a], size, scale[a], roi[a])
        outside = (coord < 0) | (coord > size - 1)
        if mode == "nearest":
            idx = np.clip(_nearest(nearest_mode, coord), 0, size - 1).astype(np.int64)
            y = np.take(y, idx, axis=a)
        elif mode == "cubic":
            y = _cubic(node, y, a, coord, out[a])
        else:
            lo = np.floor(coord)
            frac = coord - lo
            i0 = np.clip(lo, 0, size - 1).astype(np.int64)
            i1 = np.clip(lo + 1, 0, size - 1).astype(np.int64)
            shape = [1] * x.ndim
            shape[a] = out[a]
            frac = frac.reshape(shape)
            y = np.take(y, i0, axis=a) * (1 - frac) + np.take(y, i1, axis=a) * frac
        if ctm == "tf_crop_and_resize" and outside.any():
            index = [slice(None)] * x.ndim
            index[a] = outside
            y = np.array(y, copy=True)
            y[tuple(index)] = extrapolation
    return np.asarray(y).astype(x.dtype)


def _cubic(node: Node, y: np.ndarray, axis: int, coord: np.ndarray, out: int) -> np.ndarray:
    """Keys' cubic convolution over 4 neighbours (edge-clamped) with the spec's coeff a."""
    a = node.attr("cubic_coeff_a", -0.75)
    size = y.shape[axis]
    base = np.floor(coord)
    r = coord - base
    weights = np.stack([
        ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
        ((a + 2) * r - (a + 3)) * r * r + 1,
        ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1,
        ((a * (2 - r) - 5 * a) * (2 - r) + 8 * a) * (2 - r) - 4 * a,
    ])
    taps = base[None, :] + np.arange(-1, 3)[:, None]
    if node.attr("exclude_outside", 0):
        weights = np.where((taps < 0) | (taps > size - 1), 0, weights)
        weights = weights / weights.sum(axis=0, keepdims=True)
    shape = [1] * y.ndim
    shape[axis] = out
    total = 0
    for k in range(4):
        idx = np.clip(taps[k], 0, size - 1).astype(np.int64)
        total = total + np.take(y, idx, axis=axis) * weights[k].reshape(shape)
    return total
