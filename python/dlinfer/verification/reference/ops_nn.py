"""Convolution, pooling, dense, softmax and batch norm, on dlinfer's own kernels.

The kernels are 2-D and float32.  1-D tensors run through them with a unit height
and 3-D convolution as a sum of 2-D ones over the depth taps; pooling they cannot
do (other ranks, dilation, other dtypes, Indices) falls back to ops_pool.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .node import Node, op
from .ops_pool import pool_nd
from .ops_tensor import axis_of

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _float32(node: Node, *xs: np.ndarray | None) -> None:
    for x in xs:
        if x is not None and x.dtype != np.float32:
            raise node.unsupported(f"dtype {x.dtype} (the kernels are float32)")


def _conv_pads(node: Node, spatial: tuple[int, ...], kernel: tuple[int, ...],
               strides: list[int], dilations: list[int]) -> tuple[list[int], list[int]]:
    """Explicit (begin, end) pads per spatial axis."""
    n = len(spatial)
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0] * n, [0] * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [kernels.same_pads(spatial[a], kernel[a], strides[a], dilations[a],
                                   upper=auto_pad == "SAME_UPPER") for a in range(n)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if auto_pad != "NOTSET":
        raise node.unsupported(f"auto_pad={auto_pad}")
    pads = list(node.attr("pads", [0] * 2 * n))
    if len(pads) != 2 * n:
        raise ValueError(f"{len(pads)} pads for {n} spatial axes")
    return pads[:n], pads[n:]


@op("Conv")
def _conv(node: Node) -> np.ndarray:
    node.only(*_CONV_ATTRS)
    x, w, b = node.input(0), node.input(1), node.input(2)
    _float32(node, x, w, b)
    n = x.ndim - 2
    if n not in (1, 2, 3):
        raise node.unsupported(f"{n}-D convolution")
    strides = list(node.attr("strides", [1] * n))
    dil = list(node.attr("dilations", [1] * n))
    begin, end = _conv_pads(node, x.shape[2:], w.shape[2:], strides, dil)
    groups = node.attr("group", 1)
    if n == 1:
        y = kernels.conv2d(x[:, :, None, :], w[:, :, None, :], b, strides=(1, strides[0]),
                           padding=(0, 0, begin[0], end[0]), dilations=(1, dil[0]),
                           groups=groups, layout="NCHW")
        return y[:, :, 0, :]
    if n == 2:
        return kernels.conv2d(x, w, b, strides=strides, dilations=dil, groups=groups,
                              padding=(begin[0], end[0], begin[1], end[1]), layout="NCHW")
    # 3-D: output depth od sums the 2-D convolutions of input slices od*s + kd*d.
    xp = np.pad(x, [(0, 0), (0, 0), (begin[0], end[0]), (0, 0), (0, 0)])
    depth = (xp.shape[2] - (w.shape[2] - 1) * dil[0] - 1) // strides[0] + 1
    planes = []
    for od in range(depth):
        acc = None
        for kd in range(w.shape[2]):
            y = kernels.conv2d(xp[:, :, od * strides[0] + kd * dil[0]], w[:, :, kd],
                               strides=strides[1:], dilations=dil[1:], groups=groups,
                               padding=(begin[1], end[1], begin[2], end[2]), layout="NCHW")
            acc = y if acc is None else acc + y
        planes.append(acc)
    y = np.stack(planes, axis=2)
    return y if b is None else (y + b.reshape(1, -1, 1, 1, 1)).astype(np.float32)


@op("ConvTranspose")
def _conv_transpose(node: Node) -> np.ndarray:
    node.only(*_CONV_ATTRS, "output_padding", "output_shape")
    x, w, b = node.input(0), node.input(1), node.input(2)
    _float32(node, x, w, b)
    n = x.ndim - 2
    if n not in (1, 2):
        raise node.unsupported(f"{n}-D transposed convolution")
    strides = list(node.attr("strides", [1] * n))
    dil = list(node.attr("dilations", [1] * n))
    out_pad = list(node.attr("output_padding", [0] * n))
    full = [(x.shape[2 + a] - 1) * strides[a] + out_pad[a] + (w.shape[2 + a] - 1) * dil[a] + 1
            for a in range(n)]
    auto_pad = node.attr("auto_pad", "NOTSET")
    shape = node.attr("output_shape")
    if shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # The crop that gives output_shape (or input * stride), split as the spec says:
        # the odd one at the end for SAME_UPPER (and for output_shape, measured).
        shape = list(shape)[-n:] if shape is not None else [
            x.shape[2 + a] * strides[a] for a in range(n)]
        total = [full[a] - shape[a] for a in range(n)]
        for a in range(n):
            if total[a] < 0:  # longer than the full output: extend its end
                out_pad[a] -= total[a]
                total[a] = 0
        upper = auto_pad != "SAME_LOWER"
        begin = [t // 2 if upper else t - t // 2 for t in total]
        end = [t - bg for t, bg in zip(total, begin, strict=True)]
    elif auto_pad in ("NOTSET", "VALID"):
        pads = list(node.attr("pads", [0] * 2 * n)) if auto_pad == "NOTSET" else [0] * 2 * n
        begin, end = pads[:n], pads[n:]
    else:
        raise node.unsupported(f"auto_pad={auto_pad}")
    groups = node.attr("group", 1)
    if n == 1:
        y = kernels.conv2d_transpose(x[:, :, None, :], w[:, :, None, :], b,
                                     strides=(1, strides[0]), dilations=(1, dil[0]),
                                     padding=(0, 0, begin[0], end[0]), groups=groups,
                                     output_padding=(0, out_pad[0]), layout="NCHW")
        return y[:, :, 0, :]
    return kernels.conv2d_transpose(x, w, b, strides=strides, dilations=dil, groups=groups,
                                    padding=(begin[0], end[0], begin[1], end[1]),
                                    output_padding=out_pad, layout="NCHW")


@op("MaxPool", "AveragePool", "LpPool")
def _pool(node: Node) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    node.only("auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape",
              "pads", "strides", "storage_order", "p")
    x = node.input(0)
    if x.dtype.kind not in "fiu" or x.dtype == np.float16 and node.op != "MaxPool":
        raise node.unsupported(f"dtype {x.dtype}")
    kind = {"MaxPool": "max", "AveragePool": "avg", "LpPool": "lp"}[node.op]
    plain = (x.ndim == 4 and x.dtype == np.float32 and kind != "lp" and not node.wants(1)
             and all(d == 1 for d in node.attr("dilations", [1, 1]))
             and node.attr("auto_pad", "NOTSET") == "NOTSET")
    if not plain:
        return pool_nd(node, x, kind)
    begin, end = _conv_pads(node, x.shape[2:], tuple(node.attr("kernel_shape")),
                            list(node.attr("strides", [1, 1])), [1, 1])
    args = dict(pool_size=node.attr("kernel_shape"), strides=node.attr("strides", [1, 1]),
                padding=(begin[0], end[0], begin[1], end[1]),
                ceil_mode=bool(node.attr("ceil_mode", 0)), layout="NCHW")
    if kind == "max":
        return kernels.max_pool2d(x, **args)
    return kernels.avg_pool2d(x, count_include_pad=bool(node.attr("count_include_pad", 0)), **args)


@op("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(node: Node) -> np.ndarray:
    node.only("p")
    x = node.input(0)
    if x.ndim == 4 and x.dtype == np.float32 and node.op != "GlobalLpPool":
        fn = (kernels.global_avg_pool2d if node.op == "GlobalAveragePool"
              else kernels.global_max_pool2d)
        return fn(x, layout="NCHW", keepdims=True)
    axes = tuple(range(2, x.ndim))
    if node.op == "GlobalMaxPool":
        return np.max(x, axis=axes, keepdims=True)
    if node.op == "GlobalLpPool":
        p = node.attr("p", 2)
        wide = np.abs(x.astype(np.float64)) ** p
        return (np.sum(wide, axis=axes, keepdims=True) ** (1.0 / p)).astype(x.dtype)
    return np.mean(x.astype(np.float64), axis=axes, keepdims=True).astype(x.dtype)


@op("MatMul")
def _matmul(node: Node) -> np.ndarray:
    a, b = node.input(0), node.input(1)
    if b.ndim == 2 and a.ndim >= 1 and a.dtype == np.float32 and b.dtype == np.float32:
        return kernels.dense(a, b)
    return np.matmul(a, b)


@op("Gemm")
def _gemm(node: Node) -> np.ndarray:
    node.only("alpha", "beta", "transA", "transB", "broadcast")
    a, b, c = node.input(0), node.input(1), node.input(2)
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if a.dtype != np.float32 or b.dtype != np.float32:
        y = alpha * np.matmul(a, b) + (0 if c is None else beta * c)
        return np.asarray(y).astype(a.dtype)
    if alpha == 1.0 and beta == 1.0 and (c is None or (c.ndim == 1 and c.shape[0] == b.shape[1])):
        return kernels.dense(a, b, c)
    y = alpha * kernels.dense(a, b)
    return (y + beta * c).astype(np.float32) if c is not None else y.astype(np.float32)


def _along(node: Node, x: np.ndarray, fn) -> np.ndarray:
    """Apply fn(x2d) over one axis; before opset 13 the axis meant "flatten from here"."""
    node.only("axis")
    if node.opset is not None:
        return _along_as(node, x, fn, old=node.opset < 13)
    # The opset unknown: answer only where both readings agree (rank 2, the last axis).
    new = _along_as(node, x, fn, old=False)
    if x.ndim > 2 and not np.array_equal(new, _along_as(node, x, fn, old=True), equal_nan=True):
        raise node.unsupported(f"a rank-{x.ndim} input without the model's opset "
                               "(the axis meant 'flatten from here' before opset 13)")
    return new


def _along_as(node: Node, x: np.ndarray, fn, old: bool) -> np.ndarray:
    axis = axis_of(node, node.attr("axis", 1 if old else -1), x.ndim)
    if old:
        return fn(x.reshape(int(np.prod(x.shape[:axis])), -1)).reshape(x.shape)
    moved = np.moveaxis(x, axis, -1)
    return np.moveaxis(fn(moved.reshape(-1, x.shape[axis])).reshape(moved.shape), -1, axis)


@op("Softmax")
def _softmax(node: Node) -> np.ndarray:
    x = node.input(0)
    if x.dtype != np.float32:
        return _along(node, x, lambda v: _softmax64(v).astype(x.dtype))
    return _along(node, x, lambda v: kernels.softmax(v, axis=-1))


def _softmax64(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@op("LogSoftmax")
def _log_softmax(node: Node) -> np.ndarray:
    def fn(v: np.ndarray) -> np.ndarray:
        s = v.astype(np.float64) - v.max(axis=-1, keepdims=True)
        return (s - np.log(np.exp(s).sum(axis=-1, keepdims=True))).astype(v.dtype)
    return _along(node, node.input(0), fn)


@op("Hardmax")
def _hardmax(node: Node) -> np.ndarray:
    def fn(v: np.ndarray) -> np.ndarray:
        out = np.zeros_like(v)
        out[np.arange(v.shape[0]), np.argmax(v, axis=-1)] = 1
        return out
    return _along(node, node.input(0), fn)


@op("BatchNormalization")
def _batch_norm(node: Node) -> np.ndarray:
    node.only("epsilon", "momentum", "training_mode", "spatial", "is_test", "consumed_inputs")
    if node.attr("training_mode", 0) or any(node.wants(i) for i in range(1, 5)):
        raise node.unsupported("training mode (batch statistics, running-stat outputs)")
    if "is_test" in node.attrs and not node.attr("is_test"):
        raise node.unsupported("is_test=0 (training mode)")
    if not node.attr("spatial", 1):
        raise node.unsupported("spatial=0")
    x, scale, bias, mean, var = node.inputs[:5]
    eps = node.attr("epsilon", 1e-5)
    if all(t.dtype == np.float32 for t in (x, scale, bias, mean, var)):
        return kernels.batch_norm(x, scale, bias, mean, var, eps, layout="NCHW")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = ((x.astype(np.float64) - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
         * scale.reshape(shape) + bias.reshape(shape))
    return y.astype(x.dtype)


@op("Dropout")
def _dropout(node: Node) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    node.only("ratio", "seed", "is_test", "consumed_inputs")
    x = node.input(0)
    training = node.input(2) is not None and bool(node.input(2).reshape(()))
    if "is_test" in node.attrs and not node.attr("is_test"):
        training = True
    if node.opset is not None and node.opset < 7 and not node.attr("is_test", 0):
        training = True
    ratio = node.input(1) if node.input(1) is not None else node.attr("ratio", 0.5)
    if training and float(np.asarray(ratio).reshape(())) != 0:
        raise node.unsupported("training mode with a non-zero ratio (random masks)")
    if not node.wants(1):
        return x
    # Nothing is dropped at inference: every element is kept.  Before opset 10 the
    # mask has x's type, from 10 on it is boolean.
    old = node.opset is not None and node.opset < 10 or "is_test" in node.attrs
    return x, np.ones(x.shape, x.dtype if old else np.bool_)
