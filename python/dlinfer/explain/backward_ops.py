"""One backward rule per ONNX op, each written in plain ONNX ops.

A rule gets the :class:`~.backward.Builder`, the forward node, the gradient of each of
its outputs (None where no gradient flows) and which inputs need a gradient; it returns
one gradient tensor name (or None) per input.  The rules read the forward tensors they
need by name: they stay in the same graph.  Where a rule may use either a node's input
or its output it uses the output (Relu, Sigmoid, Clip, ...), so that onnxruntime can
still fuse the producing Conv with its activation.

Element-wise rules follow the usual conventions at kinks: Relu, Clip and the hard
activations pass the gradient only strictly inside their linear range, as TensorFlow
does; MaxPool sends it to the first maximum of each window (onnxruntime's Indices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UnsupportedGradientError
from .backward import Builder

__all__ = ["RULES"]

Rule = Callable[[Builder, Any, list, list], list]
RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in ops:
            RULES[name] = fn
        return fn
    return register


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _input(node: Any, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


class _Refused(UnsupportedGradientError):
    """A mode of an op without a gradient; backward.build adds the op and node."""


# -- shape plumbing ---------------------------------------------------------------------
@rule("Identity", "Dropout")
def _identity(b: Builder, node: Any, gy: list, want: list) -> list:
    return [gy[0]] + [None] * (len(node.input) - 1)


@rule("Cast")
def _cast(b: Builder, node: Any, gy: list, want: list) -> list:
    elem = b.types[node.input[0]].elem_type if node.input[0] in b.types else 1
    return [b.op("Cast", [gy[0]], to=elem or 1)]


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(b: Builder, node: Any, gy: list, want: list) -> list:
    x = node.input[0]
    return [b.op("Reshape", [gy[0], b.shape(x)])] + [None] * (len(node.input) - 1)


@rule("Transpose")
def _transpose(b: Builder, node: Any, gy: list, want: list) -> list:
    perm = _attr(node, "perm")
    if perm is None:
        rank = b.rank(node.input[0])
        if rank is None:
            raise _Refused("Transpose without perm on a tensor of unknown rank")
        perm = list(range(rank))[::-1]
    inverse = list(np.argsort(perm))
    return [b.op("Transpose", [gy[0]], perm=[int(p) for p in inverse])]


@rule("Concat")
def _concat(b: Builder, node: Any, gy: list, want: list) -> list:
    axis = _attr(node, "axis")
    sizes = b.op("Concat", [b.op("Gather", [b.shape(x), b.ints([axis])]) for x in node.input],
                 axis=0)
    parts = b.op("Split", [gy[0], sizes], outputs=len(node.input), axis=axis)
    parts = parts if isinstance(parts, list) else [parts]
    return [p if w else None for p, w in zip(parts, want)]


@rule("Split")
def _split(b: Builder, node: Any, gy: list, want: list) -> list:
    parts = [g if g is not None else b.zeros_of(b.shape(y)) for g, y in zip(gy, node.output)]
    return [b.op("Concat", parts, axis=_attr(node, "axis", 0)), None]


@rule("Slice")
def _slice(b: Builder, node: Any, gy: list, want: list) -> list:
    # Slice the flat positions of x the same way, then scatter the gradient back to them.
    x = node.input[0]
    size = b.op("Size", [x])
    positions = b.op("Reshape", [b.op("Range", [b.const(0, np.int64), size,
                                                b.const(1, np.int64)]), b.shape(x)])
    taken = b.op("Slice", [positions, *node.input[1:]])
    flat = b.op("ScatterElements", [b.zeros_of(b.op("Reshape", [size, b.ints([1])])),
                                    b.op("Reshape", [taken, b.ints([-1])]),
                                    b.op("Reshape", [gy[0], b.ints([-1])])], axis=0)
    return [b.op("Reshape", [flat, b.shape(x)])] + [None] * (len(node.input) - 1)


@rule("Pad")
def _pad(b: Builder, node: Any, gy: list, want: list) -> list:
    mode = _attr(node, "mode", "constant")
    if mode != "constant":
        raise _Refused(f"mode={mode}")
    # Padding by -pads crops the padding off again (and where pads were negative,
    # pads back zeros for what the forward Pad cropped).
    inputs = [gy[0], b.op("Neg", [node.input[1]])]
    if _input(node, 3):
        inputs += ["", node.input[3]]
    return [b.op("Pad", inputs)] + [None] * (len(node.input) - 1)


@rule("Expand")
def _expand(b: Builder, node: Any, gy: list, want: list) -> list:
    return [b.unbroadcast(gy[0], node.input[0], node.output[0]), None]


@rule("Gather")
def _gather(b: Builder, node: Any, gy: list, want: list) -> list:
    # Scatter-add g back at the gathered positions, with the gathered axis moved first
    # (ScatterND indexes leading axes); an index gathered twice gets both gradients.
    data, indices = node.input
    rank, q = b.rank(data), b.rank(indices)
    if rank is None or q is None:
        raise _Refused("operands of unknown rank")
    axis = _attr(node, "axis", 0) % rank
    size = b.op("Gather", [b.shape(data), b.ints([axis])])
    where = b.op("Where", [b.op("Less", [indices, b.const(0, np.int64)]),
                           b.op("Add", [indices, b.op("Squeeze", [size])]), indices])
    front = [axis] + [a for a in range(rank) if a != axis]
    g = b.op("Transpose", [gy[0]], perm=list(range(axis, axis + q)) + list(range(axis))
             + list(range(axis + q, rank + q - 1)))
    zeros = b.zeros_of(b.op("Gather", [b.shape(data), b.ints(front)]))
    summed = b.op("ScatterND", [zeros, b.op("Unsqueeze", [where, b.ints([-1])]), g],
                  reduction="add")
    return [b.op("Transpose", [summed], perm=[int(a) for a in np.argsort(front)]), None]


# -- element-wise arithmetic --------------------------------------------------------------
@rule("Add", "Sum")
def _add(b: Builder, node: Any, gy: list, want: list) -> list:
    y = node.output[0]
    return [b.unbroadcast(gy[0], x, y) if w else None for x, w in zip(node.input, want)]


@rule("Sub")
def _sub(b: Builder, node: Any, gy: list, want: list) -> list:
    y = node.output[0]
    first = b.unbroadcast(gy[0], node.input[0], y) if want[0] else None
    second = b.unbroadcast(b.op("Neg", [gy[0]]), node.input[1], y) if want[1] else None
    return [first, second]


@rule("Mul")
def _mul(b: Builder, node: Any, gy: list, want: list) -> list:
    (a, c), y = node.input, node.output[0]
    first = b.unbroadcast(b.op("Mul", [gy[0], c]), a, y) if want[0] else None
    second = b.unbroadcast(b.op("Mul", [gy[0], a]), c, y) if want[1] else None
    return [first, second]


@rule("Div")
def _div(b: Builder, node: Any, gy: list, want: list) -> list:
    (a, c), y = node.input, node.output[0]
    first = b.unbroadcast(b.op("Div", [gy[0], c]), a, y) if want[0] else None
    second = (b.unbroadcast(b.op("Neg", [b.op("Div", [b.op("Mul", [gy[0], y]), c])]), c, y)
              if want[1] else None)
    return [first, second]


@rule("Pow")
def _pow(b: Builder, node: Any, gy: list, want: list) -> list:
    (x, p), y = node.input, node.output[0]
    first = second = None
    if want[0]:  # p x^(p-1)
        slope = b.op("Mul", [p, b.op("Pow", [x, b.op("Sub", [p, b.op("CastLike", [
            b.const(1.0), p])])])])
        first = b.unbroadcast(b.op("Mul", [gy[0], b.op("CastLike", [slope, x])]), x, y)
    if want[1]:  # x^p ln x
        second = b.unbroadcast(b.op("Mul", [gy[0], b.op("Mul", [y, b.op("Log", [x])])]), p, y)
    return [first, second]


@rule("Max", "Min")
def _max_min(b: Builder, node: Any, gy: list, want: list) -> list:
    # To every input equal to the result (ties: to each of them).
    y = node.output[0]
    return [b.unbroadcast(_where(b, b.op("Equal", [x, y]), gy[0]), x, y) if w else None
            for x, w in zip(node.input, want)]


@rule("Where")
def _where_op(b: Builder, node: Any, gy: list, want: list) -> list:
    cond, a, c = node.input
    y, zero = node.output[0], b.const(0.0)
    first = b.unbroadcast(b.op("Where", [cond, gy[0], zero]), a, y) if want[1] else None
    second = b.unbroadcast(b.op("Where", [cond, zero, gy[0]]), c, y) if want[2] else None
    return [None, first, second]


@rule("Erf")
def _erf(b: Builder, node: Any, gy: list, want: list) -> list:
    x = node.input[0]
    bell = b.op("Exp", [b.op("Neg", [b.op("Mul", [x, x])])])
    return [b.op("Mul", [gy[0], b.op("Mul", [bell, b.const(2 / np.sqrt(np.pi))])])]


@rule("Neg")
def _neg(b: Builder, node: Any, gy: list, want: list) -> list:
    return [b.op("Neg", [gy[0]])]


@rule("Abs")
def _abs(b: Builder, node: Any, gy: list, want: list) -> list:
    return [b.op("Mul", [gy[0], b.op("Sign", [node.input[0]])])]


@rule("Exp")
def _exp(b: Builder, node: Any, gy: list, want: list) -> list:
    return [b.op("Mul", [gy[0], node.output[0]])]


@rule("Log")
def _log(b: Builder, node: Any, gy: list, want: list) -> list:
    return [b.op("Div", [gy[0], node.input[0]])]


@rule("Sqrt")
def _sqrt(b: Builder, node: Any, gy: list, want: list) -> list:
    return [b.op("Div", [gy[0], b.op("Mul", [node.output[0], b.const(2.0)])])]


# -- activations ----------------------------------------------------------------------
def _where(b: Builder, mask: str, g: str, otherwise: str | None = None) -> str:
    """``g`` where ``mask`` holds, else ``otherwise`` (default zero: then g * mask, which
    onnxruntime runs twice as fast as Where)."""
    if otherwise is None:
        return b.op("Mul", [g, b.op("Cast", [mask], to=_onnx_type(b))])
    return b.op("Where", [mask, g, otherwise])


@rule("Relu")
def _relu(b: Builder, node: Any, gy: list, want: list) -> list:
    return [_where(b, b.op("Greater", [node.output[0], b.const(0.0)]), gy[0])]


@rule("LeakyRelu")
def _leaky_relu(b: Builder, node: Any, gy: list, want: list) -> list:
    alpha = b.const(_attr(node, "alpha", 0.01))
    mask = b.op("Greater", [node.input[0], b.const(0.0)])
    return [_where(b, mask, gy[0], b.op("Mul", [gy[0], alpha]))]


@rule("PRelu")
def _prelu(b: Builder, node: Any, gy: list, want: list) -> list:
    if want[1]:
        raise _Refused("a gradient with respect to the slope")
    x, slope = node.input
    mask = b.op("Greater", [x, b.const(0.0)])
    return [_where(b, mask, gy[0], b.op("Mul", [gy[0], slope])), None]


@rule("Elu")
def _elu(b: Builder, node: Any, gy: list, want: list) -> list:
    alpha = b.const(_attr(node, "alpha", 1.0))
    mask = b.op("Greater", [node.input[0], b.const(0.0)])
    inside = b.op("Mul", [gy[0], b.op("Add", [node.output[0], alpha])])
    return [_where(b, mask, gy[0], inside)]


@rule("Selu")
def _selu(b: Builder, node: Any, gy: list, want: list) -> list:
    alpha = _attr(node, "alpha", 1.67326319217681884765625)  # the ONNX defaults
    gamma = _attr(node, "gamma", 1.05070102214813232421875)
    mask = b.op("Greater", [node.input[0], b.const(0.0)])
    below = b.op("Mul", [gy[0], b.op("Add", [node.output[0], b.const(alpha * gamma)])])
    return [_where(b, mask, b.op("Mul", [gy[0], b.const(gamma)]), below)]


@rule("Clip")
def _clip(b: Builder, node: Any, gy: list, want: list) -> list:
    y, low, high = node.output[0], _input(node, 1), _input(node, 2)
    if any(want[1:]):
        raise _Refused("a gradient with respect to the bounds")
    masks = ([b.op("Greater", [y, low])] if low else []) + ([b.op("Less", [y, high])]
                                                             if high else [])
    if not masks:
        return [gy[0]] + [None] * (len(node.input) - 1)
    mask = masks[0] if len(masks) == 1 else b.op("And", masks)
    return [_where(b, mask, gy[0])] + [None] * (len(node.input) - 1)


@rule("Sigmoid")
def _sigmoid(b: Builder, node: Any, gy: list, want: list) -> list:
    y = node.output[0]
    return [b.op("Mul", [gy[0], b.op("Mul", [y, b.op("Sub", [b.const(1.0), y])])])]


@rule("Tanh")
def _tanh(b: Builder, node: Any, gy: list, want: list) -> list:
    y = node.output[0]
    return [b.op("Mul", [gy[0], b.op("Sub", [b.const(1.0), b.op("Mul", [y, y])])])]


@rule("Softplus")
def _softplus(b: Builder, node: Any, gy: list, want: list) -> list:
    return [b.op("Mul", [gy[0], b.op("Sigmoid", [node.input[0]])])]


@rule("HardSigmoid")
def _hard_sigmoid(b: Builder, node: Any, gy: list, want: list) -> list:
    y = node.output[0]
    mask = b.op("And", [b.op("Greater", [y, b.const(0.0)]), b.op("Less", [y, b.const(1.0)])])
    return [_where(b, mask, b.op("Mul", [gy[0], b.const(_attr(node, "alpha", 0.2))]))]


@rule("HardSwish")
def _hard_swish(b: Builder, node: Any, gy: list, want: list) -> list:
    # y = x * clip(x / 6 + 1/2, 0, 1): dy/dx = 0 below -3, 1 above 3, (2x + 3) / 6 between.
    x = node.input[0]
    ramp = b.op("Add", [b.op("Mul", [x, b.const(1 / 3)]), b.const(0.5)])
    slope = _where(b, b.op("Greater", [x, b.const(3.0)]), b.const(1.0), ramp)
    slope = _where(b, b.op("Less", [x, b.const(-3.0)]), b.const(0.0), slope)
    return [b.op("Mul", [gy[0], slope])]


@rule("Softmax")
def _softmax(b: Builder, node: Any, gy: list, want: list) -> list:
    y = node.output[0]
    gy_y = b.op("Mul", [gy[0], y])
    total = b.op("ReduceSum", [gy_y, b.ints([_attr(node, "axis", -1)])], keepdims=1)
    return [b.op("Sub", [gy_y, b.op("Mul", [y, total])])]


@rule("LogSoftmax")
def _log_softmax(b: Builder, node: Any, gy: list, want: list) -> list:
    total = b.op("ReduceSum", [gy[0], b.ints([_attr(node, "axis", -1)])], keepdims=1)
    return [b.op("Sub", [gy[0], b.op("Mul", [b.op("Exp", [node.output[0]]), total])])]


# -- reductions -----------------------------------------------------------------------
def _reduce_axes(b: Builder, node: Any) -> str | None:
    """The axes input (or attribute) of a Reduce* node; None: every axis."""
    if _input(node, 1):
        return node.input[1]
    axes = _attr(node, "axes")
    return None if axes is None else b.ints(axes)


def _expand_back(b: Builder, node: Any, g: str) -> str:
    """``g`` of a Reduce* output put back in the input's shape (summed axes restored)."""
    x = node.input[0]
    axes = _reduce_axes(b, node)
    if axes is None and _attr(node, "noop_with_empty_axes", 0):
        return g
    if not _attr(node, "keepdims", 1) and axes is not None:
        g = b.op("Unsqueeze", [g, axes])
    return b.op("Expand", [g, b.shape(x)])


@rule("ReduceSum")
def _reduce_sum(b: Builder, node: Any, gy: list, want: list) -> list:
    return [_expand_back(b, node, gy[0])] + [None] * (len(node.input) - 1)


@rule("ReduceMean")
def _reduce_mean(b: Builder, node: Any, gy: list, want: list) -> list:
    count = b.op("Cast", [b.op("Div", [b.op("Size", [node.input[0]]),
                                       b.op("Size", [node.output[0]])])], to=_onnx_type(b))
    g = _expand_back(b, node, gy[0])
    return [b.op("Div", [g, count])] + [None] * (len(node.input) - 1)


@rule("ReduceMax", "ReduceMin")
def _reduce_max(b: Builder, node: Any, gy: list, want: list) -> list:
    # To every element equal to its reduction's result (ties: to each of them).
    mask = b.op("Equal", [node.input[0], _expand_back(b, node, node.output[0])])
    return [_where(b, mask, _expand_back(b, node, gy[0]))] + [None] * (len(node.input) - 1)


@rule("GlobalAveragePool")
def _global_average_pool(b: Builder, node: Any, gy: list, want: list) -> list:
    x, y = node.input[0], node.output[0]
    count = b.op("Cast", [b.op("Div", [b.op("Size", [x]), b.op("Size", [y])])], to=_onnx_type(b))
    return [b.op("Expand", [b.op("Div", [gy[0], count]), b.shape(x)])]


@rule("GlobalMaxPool")
def _global_max_pool(b: Builder, node: Any, gy: list, want: list) -> list:
    x, y = node.input[0], node.output[0]
    return [_where(b, b.op("Equal", [x, y]), b.op("Expand", [gy[0], b.shape(x)]))]


def _onnx_type(b: Builder) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(b.dtype)
