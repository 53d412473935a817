"""Backward rules of the layers: convolution, pooling, dense, normalization.

A convolution's input gradient is the transposed convolution with the same weights
(and a transposed convolution's, the convolution); pooling goes through onnxruntime's
MaxPool Indices (a scatter-add, since overlapping windows can pick one pixel twice) or a
transposed convolution with a box kernel (average pooling).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backward import Builder
from .backward_ops import _attr, _Refused, _where, rule

__all__: list[str] = []


def _explicit_pads(b: Builder, node: Any, x: str, kernel: list[int], strides: list[int],
                   dilations: list[int]) -> list[int]:
    """The pads, with auto_pad resolved from the static spatial size where it is set."""
    n = len(kernel)
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0] * 2 * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        shape = b.static_shape(x)
        spatial = shape[2:] if shape is not None else []
        if len(spatial) != n or not all(isinstance(d, int) and d > 0 for d in spatial):
            raise _Refused(f"auto_pad={auto_pad} with a spatial size unknown before running")
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin + end
    return list(_attr(node, "pads", [0] * 2 * n))


def _kernel(b: Builder, node: Any, w: str | None) -> list[int]:
    shape = _attr(node, "kernel_shape")
    if shape is None and w is not None:
        static = b.static_shape(w)
        if static is not None and all(isinstance(d, int) for d in static[2:]):
            shape = static[2:]
    if shape is None:
        raise _Refused("a kernel shape unknown before running")
    return list(shape)


def _begin_only(pads: list[int]) -> list[int]:
    """Pads for the transposed convolution that undoes a forward one: crop the leading
    padding only; fit_spatial then sizes the end, since a stride may skip the end padding
    (and even real rows), which an end crop would wrongly take off."""
    n = len(pads) // 2
    return list(pads[:n]) + [0] * n


@rule("Conv")
def _conv(b: Builder, node: Any, gy: list, want: list) -> list:
    if any(want[1:]):
        raise _Refused("a gradient with respect to the weights or bias")
    x, w = node.input[0], node.input[1]
    kernel = _kernel(b, node, w)
    n = len(kernel)
    strides = list(_attr(node, "strides", [1] * n))
    dilations = list(_attr(node, "dilations", [1] * n))
    pads = _explicit_pads(b, node, x, kernel, strides, dilations)
    dx = b.op("ConvTranspose", [gy[0], w], group=_attr(node, "group", 1), strides=strides,
              dilations=dilations, pads=_begin_only(pads), kernel_shape=kernel)
    return [b.fit_spatial(dx, x)] + [None] * (len(node.input) - 1)


@rule("ConvTranspose")
def _conv_transpose(b: Builder, node: Any, gy: list, want: list) -> list:
    if any(want[1:]):
        raise _Refused("a gradient with respect to the weights or bias")
    if _attr(node, "output_shape") is not None or _attr(node, "auto_pad", "NOTSET") not in (
            "NOTSET", "VALID"):
        raise _Refused("output_shape or auto_pad SAME (only explicit pads)")
    w = node.input[1]
    kernel = _kernel(b, node, w)
    n = len(kernel)
    pads = list(_attr(node, "pads", [0] * 2 * n))
    if _attr(node, "auto_pad", "NOTSET") == "VALID":
        pads = [0] * 2 * n
    dx = b.op("Conv", [gy[0], w], group=_attr(node, "group", 1),
              strides=list(_attr(node, "strides", [1] * n)), pads=pads, kernel_shape=kernel,
              dilations=list(_attr(node, "dilations", [1] * n)))
    return [dx] + [None] * (len(node.input) - 1)


@rule("MaxPool")
def _max_pool(b: Builder, node: Any, gy: list, want: list) -> list:
    if _attr(node, "storage_order", 0):
        raise _Refused("storage_order=1")
    x = node.input[0]
    if _tiles(node, b.rank(x)):
        return [_max_pool_tiles(b, node, gy[0])]
    if len(node.output) < 2 or not node.output[1]:  # ask the forward node for its argmax
        del node.output[1:]
        node.output.append(b.fresh("maxpool_indices"))
    # Indices are flat positions in all of x, batch and channel included.
    size = b.op("Reshape", [b.op("Size", [x]), b.ints([1])])
    flat = b.op("ScatterElements", [b.zeros_of(size),
                                    b.op("Reshape", [node.output[1], b.ints([-1])]),
                                    b.op("Reshape", [gy[0], b.ints([-1])])],
                axis=0, reduction="add")
    return [b.op("Reshape", [flat, b.shape(x)])]


def _tiles(node: Any, rank: int | None) -> bool:
    """A 2-D max pooling whose windows tile the input (Keras's MaxPooling2D default)."""
    kernel = list(_attr(node, "kernel_shape", []))
    return (rank == 4 and len(kernel) == 2 and not (len(node.output) > 1 and node.output[1])
            and list(_attr(node, "strides", [1, 1])) == kernel and kernel[0] == kernel[1]
            and not any(_attr(node, "pads", [0] * 4)) and not _attr(node, "ceil_mode", 0)
            and _attr(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID")
            and all(d == 1 for d in _attr(node, "dilations", [1, 1])))


def _max_pool_tiles(b: Builder, node: Any, g: str) -> str:
    """Each window's gradient to its first maximum in row-major order (as onnxruntime's
    Indices, and TensorFlow).  SpaceToDepth lays each window's k*k taps along a new axis;
    the first tap equal to the output (a cumulative count of hits equal to one) gets the
    gradient; DepthToSpace puts the taps back.  A few element-wise passes, against a
    MaxPool with Indices (which onnxruntime runs without its blocked layout: 8x slower on
    small_convnet) and a scatter."""
    x, y = node.input[0], node.output[0]
    k = _attr(node, "kernel_shape")[0]
    nchw = b.op("Concat", [b.dims(y, 0, 2), b.op("Mul", [b.dims(y, 2), b.ints([k, k])])],
                axis=0)
    if not b.same_shape(x, y) and not _divides(b, x, k):  # drop the rows no window reads
        x = b.op("Slice", [x, b.ints([0, 0]), b.op("Slice", [nchw, b.ints([2]), b.ints([4])]),
                           b.ints([2, 3])])
    taps_shape = b.op("Concat", [b.dims(y, 0, 1), b.ints([k * k, -1]), b.dims(y, 2)], axis=0)
    taps = b.op("Reshape", [b.op("SpaceToDepth", [x], blocksize=k), taps_shape])
    hit = b.op("Equal", [taps, b.op("Unsqueeze", [y, b.ints([1])])])
    count = b.op("CumSum", [b.op("Cast", [hit], to=6), b.const(np.int64(1), np.int64)])
    first = b.op("And", [hit, b.op("Equal", [count, b.const(np.int32(1), np.int32)])])
    spread = _where(b, first, b.op("Unsqueeze", [g, b.ints([1])]))
    depth = b.op("Concat", [b.dims(y, 0, 1), b.ints([-1]), b.dims(y, 2)], axis=0)
    full = b.op("DepthToSpace", [b.op("Reshape", [spread, depth])], blocksize=k, mode="DCR")
    return b.fit_spatial(full, node.input[0])


def _divides(b: Builder, x: str, k: int) -> bool:
    shape = b.static_shape(x)
    return (shape is not None and len(shape) == 4
            and all(isinstance(d, int) and d % k == 0 for d in shape[2:]))


@rule("AveragePool")
def _average_pool(b: Builder, node: Any, gy: list, want: list) -> list:
    x = node.input[0]
    kernel = list(_attr(node, "kernel_shape"))
    n = len(kernel)
    strides = list(_attr(node, "strides", [1] * n))
    dilations = list(_attr(node, "dilations", [1] * n))
    pads = _explicit_pads(b, node, x, kernel, strides, dilations)
    ceil = _attr(node, "ceil_mode", 0)
    include_pad = _attr(node, "count_include_pad", 0)
    if ceil and (any(s > 1 for s in strides) or any(pads)):
        raise _Refused("ceil_mode=1 with strides or pads")
    # Per channel: (N*C, 1, spatial...) through a one-channel transposed convolution.
    box = b.const(np.ones([1, 1, *kernel]))
    geometry = dict(strides=strides, dilations=dilations, pads=pads, kernel_shape=kernel)
    g = b.op("Reshape", [gy[0], b.op("Concat", [b.ints([-1, 1]), b.dims(gy[0], 2)], axis=0)])
    if include_pad or not any(pads):
        g = b.op("Div", [g, b.const(float(np.prod(kernel)))])
    else:  # each window averaged over its in-bounds part: count it with the same geometry
        ones = b.op("ConstantOfShape", [b.op("Concat", [b.ints([1, 1]), b.dims(x, 2)], axis=0)],
                    value=b._numpy_helper.from_array(np.ones(1, b.dtype), "value"))
        g = b.op("Div", [g, b.op("Conv", [ones, box], **geometry)])
    geometry["pads"] = _begin_only(pads)
    dx = b.fit_spatial(b.op("ConvTranspose", [g, box], **geometry), x)
    return [b.op("Reshape", [dx, b.shape(x)])]


@rule("BatchNormalization")
def _batch_norm(b: Builder, node: Any, gy: list, want: list) -> list:
    if any(want[1:]) or _attr(node, "training_mode", 0):
        raise _Refused("training mode, or a gradient with respect to its statistics")
    x, scale, _, _, var = node.input[:5]
    rank = b.rank(x)
    if rank is None:
        raise _Refused("an input of unknown rank")
    eps = b.const(_attr(node, "epsilon", 1e-5))
    factor = b.op("Div", [scale, b.op("Sqrt", [b.op("Add", [var, eps])])])
    factor = b.op("Reshape", [factor, b.ints([-1] + [1] * (rank - 2))])
    return [b.op("Mul", [gy[0], factor])] + [None] * (len(node.input) - 1)


@rule("LRN")
def _lrn(b: Builder, node: Any, gy: list, want: list) -> list:
    # y_c = x_c s_c^-beta, s_c = bias + alpha/size * sum over the window of x^2.
    # dx_i = g_i s_i^-beta - 2 alpha beta / size * x_i * sum_{c: i in window(c)} g_c y_c / s_c.
    x, y, g = node.input[0], node.output[0], gy[0]
    size = int(_attr(node, "size"))
    alpha, beta = _attr(node, "alpha", 1e-4), _attr(node, "beta", 0.75)
    low, high = (size - 1) // 2, size - 1 - (size - 1) // 2
    # (N, 1, C, rest): the channel window becomes a (size, 1) pooling window.
    shape4 = b.op("Concat", [b.dims(x, 0, 1), b.ints([1]), b.dims(x, 1, 2), b.ints([-1])],
                  axis=0)

    def window_sum(t: str, before: int, after: int) -> str:
        pooled = b.op("AveragePool", [b.op("Reshape", [t, shape4])], kernel_shape=[size, 1],
                      pads=[before, 0, after, 0], count_include_pad=1)
        return b.op("Reshape", [b.op("Mul", [pooled, b.const(float(size))]), b.shape(x)])

    s = b.op("Add", [b.const(_attr(node, "bias", 1.0)),
                     b.op("Mul", [b.const(alpha / size), window_sum(b.op("Mul", [x, x]), low,
                                                                       high)])])
    direct = b.op("Mul", [g, b.op("Pow", [s, b.const(-beta)])])
    spread = window_sum(b.op("Div", [b.op("Mul", [g, y]), s]), high, low)
    cross = b.op("Mul", [b.op("Mul", [x, spread]), b.const(2 * alpha * beta / size)])
    return [b.op("Sub", [direct, cross])]


@rule("Gemm")
def _gemm(b: Builder, node: Any, gy: list, want: list) -> list:
    a, w, g = node.input[0], node.input[1], gy[0]
    alpha, beta = _attr(node, "alpha", 1.0), _attr(node, "beta", 1.0)
    ta, tb = _attr(node, "transA", 0), _attr(node, "transB", 0)
    grads: list[str | None] = [None] * len(node.input)
    if want[0]:  # d(A') = alpha g B'^T, then transposed back if A was
        grads[0] = (b.op("Gemm", [g, w], alpha=alpha, transB=1 - tb) if not ta
                    else b.op("Gemm", [w, g], alpha=alpha, transA=tb, transB=1))
    if want[1]:  # d(B') = alpha A'^T g
        grads[1] = (b.op("Gemm", [a, g], alpha=alpha, transA=1 - ta) if not tb
                    else b.op("Gemm", [g, a], alpha=alpha, transA=1, transB=ta))
    if len(want) > 2 and want[2]:
        grads[2] = b.unbroadcast(b.op("Mul", [g, b.const(beta)]), node.input[2], node.output[0])
    return grads


@rule("MatMul")
def _matmul(b: Builder, node: Any, gy: list, want: list) -> list:
    (a, w), g = node.input, gy[0]
    ra, rw = b.rank(a), b.rank(w)
    if ra is None or rw is None or ra < 2 or rw < 2:
        raise _Refused("1-D operands or operands of unknown rank")

    def swap(t: str, rank: int) -> str:
        return b.op("Transpose", [t], perm=list(range(rank - 2)) + [rank - 1, rank - 2])

    # A dense layer (2-D a and w): g w^T as one Gemm, no transposed copy of the weights
    # (that copy also made onnxruntime's forward MatMul 4x slower on small_convnet).
    if want[0] and ra == 2 and rw == 2:
        first = b.op("Gemm", [g, w], transB=1)
    else:
        first = b.op("MatMul", [g, swap(w, rw)]) if want[0] else None
    if first is not None and rw != 2:
        first = b.unbroadcast(first, a, first)
    second = b.op("MatMul", [swap(a, ra), g]) if want[1] else None
    second = b.unbroadcast(second, w, second) if second is not None else None
    return [first, second]


@rule("Resize", "Upsample")
def _resize(b: Builder, node: Any, gy: list, want: list) -> list:
    # Nearest-neighbour upsampling by whole factors copies each pixel into a block, so the
    # gradient sums each block: g reshaped to (d0, f0, d1, f1, ...) and summed over the f.
    if _attr(node, "mode", "nearest") != "nearest":
        raise _Refused(f"mode={_attr(node, 'mode')} (only nearest)")
    x = node.input[0]
    factors = _resize_factors(b, node)
    for f in factors:
        if not _copies_blocks(node, f):
            raise _Refused(
                f"coordinate_transformation_mode="
                f"{_attr(node, 'coordinate_transformation_mode', 'half_pixel')} with "
                f"nearest_mode={_attr(node, 'nearest_mode', 'round_prefer_floor')} at "
                f"factor {f} (not a block copy)")
    rank = len(factors)
    shape = b.op("Concat", [b.op("Concat", [b.dims(x, a, a + 1), b.ints([f])], axis=0)
                            for a, f in enumerate(factors)], axis=0)
    summed = b.op("ReduceSum", [b.op("Reshape", [gy[0], shape]),
                                b.ints(list(range(1, 2 * rank, 2)))], keepdims=0)
    return [summed] + [None] * (len(node.input) - 1)


def _resize_factors(b: Builder, node: Any) -> list[int]:
    scales = b.constant(node.input[2] if node.op_type == "Resize" and len(node.input) > 2
                        else node.input[1] if node.op_type == "Upsample" else "")
    if scales is None or scales.size == 0:
        sizes, shape = b.constant(node.input[3] if len(node.input) > 3 else ""), \
            b.static_shape(node.input[0])
        if sizes is None or shape is None or not all(isinstance(d, int) for d in shape):
            raise _Refused("scales not fixed in the graph")
        scales = np.asarray(sizes, np.float64) / np.asarray(shape, np.float64)
    if _attr(node, "axes") is not None:
        raise _Refused("the axes attribute")
    factors = [int(round(float(f))) for f in np.asarray(scales).ravel()]
    if any(f < 1 or abs(f - float(s)) > 1e-6 for f, s in zip(factors, np.ravel(scales))):
        raise _Refused(f"scales {np.ravel(scales).tolist()} (only whole upsampling factors)")
    return factors


def _copies_blocks(node: Any, factor: int, length: int = 64) -> bool:
    """Whether output index i reads input index i // factor (onnx's nearest formulas)."""
    if factor == 1:
        return True
    mode = _attr(node, "coordinate_transformation_mode", "half_pixel")
    i = np.arange(length * factor, dtype=np.float64)
    source = {"half_pixel": (i + 0.5) / factor - 0.5,
              "pytorch_half_pixel": (i + 0.5) / factor - 0.5,
              "asymmetric": i / factor,
              "tf_half_pixel_for_nn": (i + 0.5) / factor}.get(mode)
    if source is None:
        return False
    nearest = _attr(node, "nearest_mode", "round_prefer_floor")
    pick = {"round_prefer_floor": np.ceil(source - 0.5),
            "round_prefer_ceil": np.floor(source + 0.5),
            "floor": np.floor(source), "ceil": np.ceil(source)}.get(nearest)
    return pick is not None and bool(np.all(np.clip(pick, 0, length - 1) == i // factor))
