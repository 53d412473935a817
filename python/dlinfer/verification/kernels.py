"""dlinfer's own neural-network kernels: an independent third opinion.

These run the workshop's layers in plain C++ (``dlinfer._native``), neither
TensorFlow nor onnxruntime, so that :mod:`dlinfer.reference` and
``dlinfer verify`` can tell which of the two is wrong when they disagree.

Every function takes float32 arrays (other dtypes raise ``ValueError``; nothing
is cast silently), any memory layout (non-contiguous inputs are copied once),
and ``threads`` (``None`` or 0: every core).  Results are bit-identical for
every thread count.

Layouts: NHWC is native.  ``layout="NCHW"`` accepts ONNX-style tensors and
weights and returns NCHW; it transposes at the boundary, never guesses.

=========================  =====================================  ==========================
function                   weights, NHWC (Keras)                  weights, NCHW (ONNX)
=========================  =====================================  ==========================
``conv2d``                 ``(kh, kw, cin/groups, cout)``         ``(cout, cin/groups, kh, kw)``
``conv2d_transpose``       ``(kh, kw, cout/groups, cin)``         ``(cin, cout/groups, kh, kw)``
``dense``                  ``(in, out)``                          same
=========================  =====================================  ==========================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

from .._native_loader import native as _native

__all__ = [
    "avg_pool2d",
    "batch_norm",
    "conv2d",
    "conv2d_transpose",
    "dense",
    "global_avg_pool2d",
    "global_max_pool2d",
    "max_pool2d",
    "same_pads",
    "softmax",
]

IntOrPair = Union[int, Sequence[int]]  # noqa: UP007 - a runtime alias, Python 3.10 safe
Padding = Union[str, Sequence[int]]  # noqa: UP007

_LAYOUTS = ("NHWC", "NCHW")


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    vals = tuple(int(v) for v in value)
    if len(vals) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return vals  # type: ignore[return-value]


def _threads(threads: int | None) -> int:
    return 0 if threads is None else int(threads)


def _check_layout(layout: str) -> str:
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
    return layout


def _rank4(x: np.ndarray, name: str, layout: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have rank 4 ({'N, H, W, C' if layout == 'NHWC' else 'N, C, H, W'}), "
            f"got shape {x.shape}"
        )
    return x


def _to_nhwc(x: np.ndarray, layout: str) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if layout == "NCHW" else x


def _from_nhwc(y: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if layout == "NCHW" else y


def _activation(activation: str | None) -> str:
    return "none" if activation is None else activation


def same_pads(
    size: int, kernel: int, stride: int, dilation: int = 1, *, upper: bool = True
) -> tuple[int, int]:
    """Pads (before, after) that make ``out = ceil(size / stride)``.

    ``upper=True`` puts the odd pad at the end: Keras/TensorFlow "same" and ONNX
    SAME_UPPER.  ``upper=False`` is ONNX SAME_LOWER.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def _pads(
    padding: Padding,
    hw: tuple[int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
) -> tuple[int, int, int, int]:
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode in ("same", "same_upper", "same_lower"):
            if min(strides) < 1:
                raise ValueError(f"strides must be >= 1, got {strides}")
            upper = mode != "same_lower"
            t, b = same_pads(hw[0], kernel[0], strides[0], dilations[0], upper=upper)
            left, r = same_pads(hw[1], kernel[1], strides[1], dilations[1], upper=upper)
            return (t, b, left, r)
        raise ValueError(
            f"padding must be 'valid', 'same', 'same_lower' or (top, bottom, left, right), "
            f"got {padding!r}"
        )
    pads = tuple(int(p) for p in padding)
    if len(pads) != 4:
        raise ValueError(
            f"padding must be 'valid', 'same' or (top, bottom, left, right), got {padding!r}"
        )
    return pads  # type: ignore[return-value]


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    strides: IntOrPair = 1,
    padding: Padding = "valid",
    dilations: IntOrPair = 1,
    groups: int = 1,
    activation: str | None = None,
    alpha: float = 0.01,
    layout: str = "NHWC",
    threads: int | None = None,
) -> np.ndarray:
    """2-D convolution (cross-correlation, as Keras and ONNX define it), float32.

    ``padding`` is ``"valid"``, ``"same"`` (Keras and ONNX SAME_UPPER: the odd
    pad goes at the bottom/right), ``"same_lower"``, or explicit
    ``(top, bottom, left, right)``.  ``groups == cin`` is a depthwise
    convolution.  ``activation`` (``None``, ``"relu"``, ``"leaky_relu"`` with
    slope ``alpha``, ``"sigmoid"``, ``"tanh"``) is fused after the bias.
    """
    layout, x, w = _conv_operands(x, w, layout)
    if layout == "NCHW":
        w = w.transpose(2, 3, 1, 0)
    s, d = _pair(strides, "strides"), _pair(dilations, "dilations")
    pads = _pads(padding, x.shape[1:3], w.shape[:2], s, d)
    y = _native.conv2d_nhwc_f32(x, w, bias, s, d, pads, (0, 0), int(groups),
                                _activation(activation), float(alpha), _threads(threads))
    return _from_nhwc(y, layout)


def _conv_operands(x: np.ndarray, w: np.ndarray, layout: str) -> tuple[str, np.ndarray, np.ndarray]:
    """The checked layout, ``x`` as NHWC and ``w`` as a rank-4 array (still in ``layout``)."""
    layout = _check_layout(layout)
    x = _to_nhwc(_rank4(x, "x", layout), layout)
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"w must have rank 4, got shape {w.shape}")
    return layout, x, w


def conv2d_transpose(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    strides: IntOrPair = 1,
    padding: Padding = "valid",
    dilations: IntOrPair = 1,
    groups: int = 1,
    output_padding: IntOrPair = 0,
    activation: str | None = None,
    alpha: float = 0.01,
    layout: str = "NHWC",
    threads: int | None = None,
) -> np.ndarray:
    """Transposed 2-D convolution (Keras Conv2DTranspose, ONNX ConvTranspose).

    The full output is ``(H - 1) * stride + dilation * (K - 1) + 1 +
    output_padding``; explicit ``(top, bottom, left, right)`` pads crop it.
    ``"same"`` gives ``H * stride`` as Keras does (the odd crop at the end).
    """
    layout, x, w = _conv_operands(x, w, layout)
    cin_axis = 0 if layout == "NCHW" else 3
    if w.shape[cin_axis] != x.shape[3]:
        raise ValueError(
            f"w: shape {w.shape} has {w.shape[cin_axis]} input channels (axis {cin_axis}) "
            f"but x has {x.shape[3]}"
        )
    w = w.transpose(2, 3, 0, 1) if layout == "NCHW" else w.transpose(0, 1, 3, 2)
    s, d = _pair(strides, "strides"), _pair(dilations, "dilations")
    op = list(_pair(output_padding, "output_padding"))
    if isinstance(padding, str) and padding.lower() == "same":
        pads = []
        for axis in range(2):
            eff = (w.shape[axis] - 1) * d[axis] + 1
            total = eff - s[axis] + op[axis]
            if total < 0:  # the full output is short of H*stride: extend it instead
                op[axis] -= total
                total = 0
            pads += [total // 2, total - total // 2]
        pads_t = tuple(pads)
    elif isinstance(padding, str) and padding.lower() == "valid":
        pads_t = (0, 0, 0, 0)
    else:
        pads_t = _pads(padding, x.shape[1:3], w.shape[:2], s, d)
    y = _native.conv2d_transpose_nhwc_f32(x, w, bias, s, d, pads_t, tuple(op), int(groups),
                                          _activation(activation), float(alpha),
                                          _threads(threads))
    return _from_nhwc(y, layout)


def _pool(x, pool_size, strides, padding, ceil_mode, layout, average, count_include_pad, threads):
    layout = _check_layout(layout)
    x = _to_nhwc(_rank4(x, "x", layout), layout)
    k = _pair(pool_size, "pool_size")
    s = k if strides is None else _pair(strides, "strides")
    pads = _pads(padding, x.shape[1:3], k, s, (1, 1))
    if average:
        y = _native.avg_pool2d_nhwc_f32(
            x, k, s, pads, bool(ceil_mode), bool(count_include_pad), _threads(threads)
        )
    else:
        y = _native.max_pool2d_nhwc_f32(x, k, s, pads, bool(ceil_mode), _threads(threads))
    return _from_nhwc(y, layout)


def max_pool2d(
    x: np.ndarray,
    pool_size: IntOrPair,
    strides: IntOrPair | None = None,
    padding: Padding = "valid",
    ceil_mode: bool = False,
    layout: str = "NHWC",
    threads: int | None = None,
) -> np.ndarray:
    """Max pooling; ``strides`` defaults to ``pool_size`` (as in Keras).

    Padded positions never win.  ``ceil_mode`` keeps a last partial window, as
    ONNX and PyTorch define it (it must start inside the input or leading pad).
    """
    return _pool(x, pool_size, strides, padding, ceil_mode, layout, False, False, threads)


def avg_pool2d(
    x: np.ndarray,
    pool_size: IntOrPair,
    strides: IntOrPair | None = None,
    padding: Padding = "valid",
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    layout: str = "NHWC",
    threads: int | None = None,
) -> np.ndarray:
    """Average pooling.  ``count_include_pad`` divides by the window size
    including explicit pads (never the ``ceil_mode`` overhang); otherwise by the
    taps inside the input (Keras "same" behaviour)."""
    return _pool(
        x, pool_size, strides, padding, ceil_mode, layout, True, count_include_pad, threads
    )


def _global(x, layout, keepdims, average, threads):
    layout = _check_layout(layout)
    x = _rank4(x, "x", layout)
    hw = x.shape[2:4] if layout == "NCHW" else x.shape[1:3]
    y = _pool(x, hw, hw, "valid", False, layout, average, False, threads)
    return y if keepdims else y.reshape(y.shape[0], -1)


def global_avg_pool2d(
    x: np.ndarray, layout: str = "NHWC", keepdims: bool = False, threads: int | None = None
) -> np.ndarray:
    """Mean over H and W: (N, C), or with keepdims (N, 1, 1, C) / (N, C, 1, 1)."""
    return _global(x, layout, keepdims, True, threads)


def global_max_pool2d(
    x: np.ndarray, layout: str = "NHWC", keepdims: bool = False, threads: int | None = None
) -> np.ndarray:
    """Max over H and W: (N, C), or with keepdims (N, 1, 1, C) / (N, C, 1, 1)."""
    return _global(x, layout, keepdims, False, threads)


def dense(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    activation: str | None = None,
    alpha: float = 0.01,
    threads: int | None = None,
) -> np.ndarray:
    """``act(x @ w + bias)`` over the last axis of x; w is ``(in, out)``."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("x must have rank >= 1")
    lead = x.shape[:-1]
    y = _native.dense_f32(
        x.reshape(-1, x.shape[-1]),
        w,
        bias,
        _activation(activation),
        float(alpha),
        _threads(threads),
    )
    return y.reshape(*lead, y.shape[-1])


def softmax(x: np.ndarray, axis: int = -1, threads: int | None = None) -> np.ndarray:
    """Softmax along ``axis`` (max-subtracted, float32)."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("x must have rank >= 1")
    moved = np.moveaxis(x, axis, -1)
    y = _native.softmax_f32(moved, _threads(threads))
    return np.ascontiguousarray(np.moveaxis(y, -1, axis))


def batch_norm(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    epsilon: float = 1e-3,
    layout: str = "NHWC",
    threads: int | None = None,
) -> np.ndarray:
    """Inference batch normalization: ``(x - mean) / sqrt(var + eps) * gamma + beta``.

    Channels are the last axis for NHWC (any rank, e.g. (N, C) after a Dense),
    axis 1 for NCHW.
    """
    layout = _check_layout(layout)
    axis = -1 if layout == "NHWC" else 1
    return _native.batch_norm_f32(
        x, gamma, beta, mean, var, float(epsilon), axis, _threads(threads)
    )
