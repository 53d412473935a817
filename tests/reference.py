"""Naive NumPy references for dlinfer's kernels, and one assertion helper.

References compute in float64 with plain loops or the most literal NumPy, so that
they are obviously right; the kernels are checked against them.
"""

from __future__ import annotations

import zlib

import numpy as np
from dlinfer.verification.compare import mismatch


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
                 rtol: float = 0.0, context: str = "", layout: str | None = None) -> None:
    """Shape, then dtype, then values within atol + rtol*|expected|: the one test helper.

    The rule is dlinfer's own (:func:`dlinfer.verification.compare.mismatch`, the one
    `dlinfer verify` uses).  With atol = rtol = 0 this is exact equality.  A failure
    names how many elements are off and the worst one; with ``layout`` ("NHWC" or
    "NCHW") it names the batch, pixel and channel too.
    """
    problem = mismatch(actual, expected, atol=atol, rtol=rtol, layout=layout)
    if problem is not None:
        raise AssertionError(f"{context}: {problem}" if context else problem)


def seed_of(*parts: object) -> int:
    """A seed that replays across runs: a CRC of the case's repr (hash() of str does not)."""
    return zlib.crc32(repr(parts).encode())


# ---- neural-network kernels (issue 5) --------------------------------------
# NHWC float64 references written as literally as possible: explicit zero
# padding, one loop over kernel taps or output pixels, NumPy only for the
# batch/channel dimensions.  Weights in Keras layout.

def pool_out_size(size: int, k: int, s: int, pb: int, pa: int, ceil_mode: bool) -> int:
    """ONNX/PyTorch pooling output length (ceil_mode drops a window starting in the trailing pad)."""
    span = size + pb + pa - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + pb:
        out -= 1
    return out


def conv2d_nhwc(x, w, bias=None, strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1,
                activation=None, alpha=0.01) -> np.ndarray:
    """y[n,oy,ox,co] = sum_{ky,kx,ci} xpad[n, oy*sh+ky*dh, ox*sw+kx*dw, g*cig+ci] * w[ky,kx,ci,co]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    t, b, left, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
    n, hp, wp, cin = xp.shape
    kh, kw, cig, cout = w.shape
    sh, sw = strides
    dh, dw = dilations
    ho = (hp - (kh - 1) * dh - 1) // sh + 1
    wo = (wp - (kw - 1) * dw - 1) // sw + 1
    cog = cout // groups
    y = np.zeros((n, ho, wo, cout))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky * dh: ky * dh + (ho - 1) * sh + 1: sh,
                       kx * dw: kx * dw + (wo - 1) * sw + 1: sw, :]
            for g in range(groups):
                y[..., g * cog:(g + 1) * cog] += (
                    patch[..., g * cig:(g + 1) * cig] @ w[ky, kx, :, g * cog:(g + 1) * cog])
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return activate(y, activation, alpha)


def conv2d_transpose_nhwc(x, w, bias=None, strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0),
                          output_padding=(0, 0), groups=1, activation=None, alpha=0.01) -> np.ndarray:
    """Scatter form (the kernel gathers): every input pixel adds x @ w[ky,kx] to the full output,
    which the pads then crop.  w is (kh, kw, cin, cout/groups)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, cin = x.shape
    kh, kw, _, cog = w.shape
    sh, sw = strides
    dh, dw = dilations
    cig = cin // groups
    full = np.zeros((n, (h - 1) * sh + (kh - 1) * dh + 1 + output_padding[0],
                     (wd - 1) * sw + (kw - 1) * dw + 1 + output_padding[1], cog * groups))
    for ky in range(kh):
        for kx in range(kw):
            for g in range(groups):
                full[:, ky * dh: ky * dh + (h - 1) * sh + 1: sh, kx * dw: kx * dw + (wd - 1) * sw + 1: sw,
                     g * cog:(g + 1) * cog] += x[..., g * cig:(g + 1) * cig] @ w[ky, kx, g * cig:(g + 1) * cig]
    t, b, left, r = pads
    y = full[:, t: full.shape[1] - b, left: full.shape[2] - r, :]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return activate(y, activation, alpha)


def pool2d_nhwc(x, pool, strides, pads=(0, 0, 0, 0), ceil_mode=False, mode="max",
                count_include_pad=False) -> np.ndarray:
    """One output pixel at a time over the in-bounds part of its window."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    kh, kw = pool
    sh, sw = strides
    t, b, left, r = pads
    ho = pool_out_size(h, kh, sh, t, b, ceil_mode)
    wo = pool_out_size(w, kw, sw, left, r, ceil_mode)
    y = np.zeros((n, ho, wo, c))
    for oy in range(ho):
        for ox in range(wo):
            y0, x0 = oy * sh - t, ox * sw - left
            win = x[:, max(y0, 0):min(y0 + kh, h), max(x0, 0):min(x0 + kw, w), :]
            if mode == "max":
                y[:, oy, ox] = win.max(axis=(1, 2))
            else:
                if count_include_pad:  # explicit pads count, the ceil overhang does not
                    count = (min(y0 + kh, h + b) - y0) * (min(x0 + kw, w + r) - x0)
                else:
                    count = win.shape[1] * win.shape[2]
                y[:, oy, ox] = win.sum(axis=(1, 2)) / count
    return y


def activate(y, activation, alpha=0.01):
    if activation in (None, "none"):
        return y
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "leaky_relu":
        return np.where(y >= 0, y, alpha * y)
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-y))
    if activation == "tanh":
        return np.tanh(y)
    raise ValueError(activation)


def dense(x, w, bias=None, activation=None, alpha=0.01) -> np.ndarray:
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return activate(y, activation, alpha)


def softmax(x, axis=-1) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def batch_norm(x, gamma, beta, mean, var, eps, axis=-1) -> np.ndarray:
    shape = [1] * np.ndim(x)
    shape[axis] = -1
    f = [np.asarray(v, np.float64).reshape(shape) for v in (gamma, beta, mean, var)]
    return (np.asarray(x, np.float64) - f[2]) / np.sqrt(f[3] + eps) * f[0] + f[1]
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


# ImageNet's mean and std for pixels scaled to [0, 1], as torchvision uses them.
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
# Preprocessing against the float64 reference: the kernel computes in float32.
PREPROCESS_ATOL = 1e-4


def preprocess_batch(images, size, *, in_colors, **kw) -> np.ndarray:
    """The reference batch: each image through :func:`preprocess`, stacked."""
    return np.stack([preprocess(im, size, in_color=c, **kw) for im, c in zip(images, in_colors)])
