"""Convolution, pooling, dense and normalization ops, on dlinfer's own kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from .node import Node, op


def _conv_padding(node: Node, spatial: tuple[int, int]) -> Any:
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return "valid"
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return auto_pad.lower()
    if auto_pad != "NOTSET":
        raise node.unsupported(f"auto_pad={auto_pad}")
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    if len(pads) != 4:
        raise node.unsupported(f"{len(pads) // 2}-D pads")
    return (pads[0], pads[2], pads[1], pads[3])  # ONNX: begins then ends


def _require_2d(node: Node, x: np.ndarray) -> None:
    if x.ndim != 4:
        raise node.unsupported(f"a rank-{x.ndim} input (only 2-D NCHW images)")


@op("Conv")
def _conv(node: Node) -> np.ndarray:
    x, w, b = node.input(0), node.input(1), node.input(2)
    _require_2d(node, x)
    return kernels.conv2d(
        x,
        w,
        b,
        strides=node.attr("strides", [1, 1]),
        padding=_conv_padding(node, x.shape[2:]),
        dilations=node.attr("dilations", [1, 1]),
        groups=node.attr("group", 1),
        layout="NCHW",
    )


@op("ConvTranspose")
def _conv_transpose(node: Node) -> np.ndarray:
    x, w, b = node.input(0), node.input(1), node.input(2)
    _require_2d(node, x)
    if "output_shape" in node.attrs:
        raise node.unsupported("the output_shape attribute")
    padding = _conv_padding(node, x.shape[2:])
    if padding in ("same_upper", "same_lower"):
        # Output = input * stride; the crop is split as onnxruntime does it
        # (the odd one at the end for SAME_UPPER, measured against it).
        strides = node.attr("strides", [1, 1])
        dil = node.attr("dilations", [1, 1])
        op = node.attr("output_padding", [0, 0])
        pads = []
        for a in range(2):
            total = (x.shape[2 + a] - 1) * strides[a] + op[a] + (w.shape[2 + a] - 1) * dil[a] + 1
            total -= x.shape[2 + a] * strides[a]
            if total < 0:
                raise node.unsupported(
                    f"auto_pad={node.attr('auto_pad')} with a kernel smaller than the stride"
                )
            head = total // 2 if padding == "same_upper" else total - total // 2
            pads += [head, total - head]
        padding = tuple(pads)
    return kernels.conv2d_transpose(
        x,
        w,
        b,
        strides=node.attr("strides", [1, 1]),
        padding=padding,
        dilations=node.attr("dilations", [1, 1]),
        groups=node.attr("group", 1),
        output_padding=node.attr("output_padding", [0, 0]),
        layout="NCHW",
    )


@op("MaxPool", "AveragePool")
def _pool(node: Node) -> np.ndarray:
    x = node.input(0)
    _require_2d(node, x)
    if any(d != 1 for d in node.attr("dilations", [1, 1])):
        raise node.unsupported("dilated pooling")
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.unsupported("the Indices output")
    args = dict(
        pool_size=node.attr("kernel_shape"),
        strides=node.attr("strides", [1, 1]),
        padding=_conv_padding(node, x.shape[2:]),
        ceil_mode=bool(node.attr("ceil_mode", 0)),
        layout="NCHW",
    )
    if node.op == "MaxPool":
        return kernels.max_pool2d(x, **args)
    return kernels.avg_pool2d(x, count_include_pad=bool(node.attr("count_include_pad", 0)), **args)


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node: Node) -> np.ndarray:
    x = node.input(0)
    _require_2d(node, x)
    fn = kernels.global_avg_pool2d if node.op == "GlobalAveragePool" else kernels.global_max_pool2d
    return fn(x, layout="NCHW", keepdims=True)


@op("MatMul")
def _matmul(node: Node) -> np.ndarray:
    a, b = node.input(0), node.input(1)
    if b.ndim == 2 and a.ndim >= 1 and a.dtype == np.float32 and b.dtype == np.float32:
        return kernels.dense(a, b)
    return np.matmul(a, b)


@op("Gemm")
def _gemm(node: Node) -> np.ndarray:
    a, b, c = node.input(0), node.input(1), node.input(2)
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if alpha == 1.0 and beta == 1.0 and (c is None or (c.ndim == 1 and c.shape[0] == b.shape[1])):
        return kernels.dense(a, b, c)
    y = alpha * kernels.dense(a, b)
    return (y + beta * c).astype(np.float32) if c is not None else y.astype(np.float32)


@op("Softmax")
def _softmax(node: Node) -> np.ndarray:
    return kernels.softmax(node.input(0), axis=node.attr("axis", -1))


@op("BatchNormalization")
def _batch_norm(node: Node) -> np.ndarray:
    if node.attr("training_mode", 0):
        raise node.unsupported("training_mode=1")
    x, scale, bias, mean, var = node.inputs[:5]
    return kernels.batch_norm(x, scale, bias, mean, var, node.attr("epsilon", 1e-5), layout="NCHW")


@op("Dropout")
def _dropout(node: Node) -> np.ndarray:
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.unsupported("the mask output")
    return node.input(0)
