"""Naive NumPy references for dlinfer's kernels, and one assertion helper.

References compute in float64 with plain loops or the most literal NumPy, so that
they are obviously right; the kernels are checked against them.
"""

from __future__ import annotations

import numpy as np


def normalize_u8_to_f32_nhwc(x: np.ndarray, scale: float, mean, std) -> np.ndarray:
    """(x * scale - mean[c]) / std[c] in float64, rounded once to float32.

    The kernel receives scale/mean/std as float32, so the reference uses the same
    float32 values promoted to float64.
    """
    c = x.shape[-1]
    scale64 = np.float64(np.float32(scale))
    mean64 = np.broadcast_to(np.asarray(mean, np.float32).astype(np.float64), (c,))
    std64 = np.broadcast_to(np.asarray(std, np.float32).astype(np.float64), (c,))
    return ((x.astype(np.float64) * scale64 - mean64) / std64).astype(np.float32)


def assert_close(actual: np.ndarray, expected: np.ndarray, *, atol: float = 0.0,
                 rtol: float = 0.0, context: str = "") -> None:
    """Shape, then dtype, then values within max(atol, rtol*|expected|).

    With atol = rtol = 0 this is exact equality.  A failure names the first bad
    index and how many elements are off.
    """
    prefix = f"{context}: " if context else ""
    assert actual.shape == expected.shape, f"{prefix}shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{prefix}dtype {actual.dtype} != {expected.dtype}"
    exp64 = expected.astype(np.float64)
    err = np.abs(actual.astype(np.float64) - exp64)
    tol = np.maximum(atol, rtol * np.abs(exp64))
    bad = ~(err <= tol)  # NaN counts as bad
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{prefix}{int(bad.sum())} of {bad.size} elements differ; first at index {idx}: "
            f"got {actual[idx]!r}, expected {expected[idx]!r} (tolerance {tol[idx]:.3g}); "
            f"max error {np.nanmax(err):.3g}"
        )


# -- fused preprocessing (dlinfer.preprocess) ----------------------------------------------

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL and OpenCV
CHANNELS = {"GRAY": 1, "RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4}


def resize_matrix(mode: str, n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix M with resized = M @ source along one axis.

    nearest: src = floor(dst * in / out).  bilinear: half-pixel centres
    c = (dst + 0.5) * in / out - 0.5, clamped to the edge pixel.  area: each
    output pixel averages the source interval [dst, dst + 1) * in / out,
    weighting source pixels by their overlap.
    """
    m = np.zeros((n_out, n_in))
    for r in range(n_out):
        if mode == "nearest":
            m[r, min(r * n_in // n_out, n_in - 1)] = 1.0
        elif mode == "bilinear":
            c = (r + 0.5) * n_in / n_out - 0.5
            lo = int(np.floor(c))
            f = c - lo
            if lo < 0:
                lo, f = 0, 0.0
            if lo >= n_in - 1:
                lo, f = n_in - 1, 0.0
            m[r, lo] += 1.0 - f
            m[r, min(lo + 1, n_in - 1)] += f
        elif mode == "area":
            a, b = r * n_in / n_out, (r + 1) * n_in / n_out
            for u in range(int(np.floor(a)), min(int(np.ceil(b)), n_in)):
                m[r, u] = (min(u + 1, b) - max(u, a)) / (b - a)
        else:
            raise ValueError(mode)
    return m


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def geometry(h: int, w: int, out_h: int, out_w: int, fit: str, crop_ratio: float = 1.0):
    """(resized_h, resized_w, top, left): output (y, x) shows resized (y - top, x - left)."""
    if fit == "stretch":
        return out_h, out_w, 0, 0
    if fit == "crop":
        s = max(out_h / h, out_w / w) / crop_ratio
        rh, rw = max(out_h, _round_half_up(h * s)), max(out_w, _round_half_up(w * s))
        return rh, rw, -((rh - out_h) // 2), -((rw - out_w) // 2)
    s = min(out_h / h, out_w / w)
    rh = min(max(_round_half_up(h * s), 1), out_h)
    rw = min(max(_round_half_up(w * s), 1), out_w)
    return rh, rw, (out_h - rh) // 2, (out_w - rw) // 2


def _to_color(rgbish: np.ndarray, in_color: str, color: str) -> np.ndarray:
    """(..., C_in) float64 in the input's channel order -> (..., C_out) in ``color``."""
    if in_color == "GRAY":
        g = rgbish[..., 0]
        return g[..., None] if color == "GRAY" else np.stack([g, g, g], axis=-1)
    r, g, b = (rgbish[..., 2], rgbish[..., 1], rgbish[..., 0]) if in_color.startswith("BGR") \
        else (rgbish[..., 0], rgbish[..., 1], rgbish[..., 2])
    if color == "GRAY":
        return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b)[..., None]
    return np.stack([r, g, b] if color == "RGB" else [b, g, r], axis=-1)


def preprocess(image: np.ndarray, size: tuple[int, int], *, in_color: str, color: str,
               resize: str = "bilinear", fit: str = "stretch", crop_ratio: float = 1.0,
               pad: float = 0.0, scale: float = 1 / 255, mean=(0.0,), std=(1.0,),
               layout: str = "NHWC") -> np.ndarray:
    """One uint8 (H, W, C) image -> its float32 slot of the batch, computed in float64.

    Resize the whole image to the geometry's resized size with dense separable
    matrices, place it on a canvas of ``pad`` pixels, convert colour, normalize
    with the float32 parameters promoted to float64, round once to float32.
    """
    out_h, out_w = size
    h, w, _ = image.shape
    rh, rw, top, left = geometry(h, w, out_h, out_w, fit, crop_ratio)
    src = image.astype(np.float64)
    resized = np.einsum("ry,yxc->rxc", resize_matrix(resize, h, rh), src, optimize=True)
    resized = np.einsum("rxc,sx->rsc", resized, resize_matrix(resize, w, rw), optimize=True)
    resized = _to_color(resized, in_color, color)
    c = resized.shape[-1]
    canvas = np.full((out_h, out_w, c), float(np.float32(pad)))
    ys, xs = np.arange(out_h) - top, np.arange(out_w) - left
    iy, ix = (ys >= 0) & (ys < rh), (xs >= 0) & (xs < rw)
    canvas[np.ix_(iy, ix)] = resized[np.ix_(ys[iy], xs[ix])]
    scale64 = np.float64(np.float32(scale))
    mean64 = np.broadcast_to(np.asarray(mean, np.float32).astype(np.float64), (c,))
    std64 = np.broadcast_to(np.asarray(std, np.float32).astype(np.float64), (c,))
    out = ((canvas * scale64 - mean64) / std64).astype(np.float32)
    return out if layout == "NHWC" else np.ascontiguousarray(out.transpose(2, 0, 1))
