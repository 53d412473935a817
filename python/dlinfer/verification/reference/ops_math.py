"""Elementwise arithmetic, comparisons, logic and activations, in plain NumPy."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .node import Node, op
from .ops_tensor import check_dtype


def _legacy_broadcast(node: Node, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Before opset 7, broadcast=1 with axis=k laid B's dims over A's from axis k."""
    node.only("broadcast", "axis", "consumed_inputs")
    if len(xs) == 2 and node.attr("broadcast", 0) and "axis" in node.attrs:
        a, b = xs
        axis = node.attr("axis") % a.ndim
        xs = [a, b.reshape(b.shape + (1,) * (a.ndim - axis - b.ndim))]
    return xs


def _elementwise(fn: Callable[..., np.ndarray]) -> Callable[[Node], np.ndarray]:
    def run(node: Node) -> np.ndarray:
        xs = _legacy_broadcast(node, [check_dtype(node, x) for x in node.inputs])
        with np.errstate(all="ignore"):  # inf and NaN are answers here, as in ONNX
            out = fn(*xs)
        # Python scalars and NumPy's promotion rules must not widen float32.
        return np.asarray(out).astype(node.inputs[0].dtype, copy=False)

    return run


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # ONNX's integer Div truncates toward zero; NumPy's // floors.
    if a.dtype.kind == "f":
        return a / b
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


_erf = np.frompyfunc(math.erf, 1, 1)

for _name, _fn in {
    "Relu": lambda x: np.maximum(x, 0),
    "Sigmoid": _sigmoid,
    "Tanh": np.tanh,
    "Exp": np.exp,
    "Log": np.log,
    "Sqrt": np.sqrt,
    "Neg": np.negative,
    "Abs": np.abs,
    "Reciprocal": lambda x: 1 / x,
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Round": np.round,  # half to even, as ONNX
    "Sign": np.sign,
    "Erf": lambda x: _erf(x.astype(np.float64)).astype(np.float64),
    "Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Asin": np.arcsin, "Acos": np.arccos,
    "Atan": np.arctan, "Sinh": np.sinh, "Cosh": np.cosh, "Asinh": np.arcsinh,
    "Acosh": np.arccosh, "Atanh": np.arctanh,
    "Softplus": lambda x: np.logaddexp(0, x.astype(np.float64)),
    "Softsign": lambda x: x / (1 + np.abs(x)),
    "HardSwish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": _int_div,
    "Pow": lambda a, b: np.power(a.astype(np.float64), b) if a.dtype.kind == "f"
    else np.power(a, b.astype(a.dtype)),
}.items():
    op(_name)(_elementwise(_fn))

# Activations with parameters: (function of x and the node, its attributes).
_PARAM = {
    "Elu": (lambda x, n: np.where(x > 0, x, n.attr("alpha", 1.0) * np.expm1(x)), ("alpha",)),
    "Celu": (lambda x, n: np.maximum(x, 0) + np.minimum(
        0, n.attr("alpha", 1.0) * np.expm1(x / n.attr("alpha", 1.0))), ("alpha",)),
    "Selu": (lambda x, n: n.attr("gamma", 1.0507009873554805) * np.where(
        x > 0, x, n.attr("alpha", 1.6732632423543772) * np.expm1(x)), ("alpha", "gamma")),
    "HardSigmoid": (lambda x, n: np.clip(
        n.attr("alpha", 0.2) * x + n.attr("beta", 0.5), 0, 1), ("alpha", "beta")),
    "LeakyRelu": (lambda x, n: np.where(x >= 0, x, x * n.attr("alpha", 0.01)), ("alpha",)),
    "ThresholdedRelu": (lambda x, n: np.where(x > n.attr("alpha", 1.0), x, 0), ("alpha",)),
    "Shrink": (lambda x, n: np.where(
        x < -n.attr("lambd", 0.5), x + n.attr("bias", 0.0),
        np.where(x > n.attr("lambd", 0.5), x - n.attr("bias", 0.0), 0)), ("lambd", "bias")),
    "Gelu": (lambda x, n: _gelu(x, n), ("approximate",)),
}


def _gelu(x: np.ndarray, node: Node) -> np.ndarray:
    x = x.astype(np.float64)
    if node.attr("approximate", "none") == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if node.attr("approximate", "none") != "none":
        raise node.unsupported(f"approximate={node.attr('approximate')}")
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(np.float64))


def _param_op(fn, attrs):
    def run(node: Node) -> np.ndarray:
        node.only(*attrs)
        x = check_dtype(node, node.input(0))
        if x.dtype.kind != "f":
            raise node.unsupported(f"dtype {x.dtype}")
        with np.errstate(all="ignore"):
            return np.asarray(fn(x, node)).astype(x.dtype)
    return run


for _name, (_fn, _attrs) in _PARAM.items():
    op(_name)(_param_op(_fn, _attrs))


@op("PRelu")
def _prelu(node: Node) -> np.ndarray:
    x, slope = node.input(0), node.input(1)
    if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))  # opset 1-6: one slope per channel
    return np.where(x >= 0, x, x * slope).astype(x.dtype)


@op("Clip")
def _clip(node: Node) -> np.ndarray:
    node.only("min", "max")
    x = check_dtype(node, node.input(0))
    lo = node.input(1) if node.input(1) is not None else node.attr("min")
    hi = node.input(2) if node.input(2) is not None else node.attr("max")
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo, x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi, x.dtype))
    return out.astype(x.dtype)


@op("Mod")
def _mod(node: Node) -> np.ndarray:
    a, b = node.input(0), node.input(1)
    if node.attr("fmod", 0):
        return np.fmod(a, b).astype(a.dtype)
    with np.errstate(all="ignore"):
        return np.mod(a, b).astype(a.dtype)


# ---- variadic -----------------------------------------------------------------

def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], mean: bool = False):
    def run(node: Node) -> np.ndarray:
        xs = [check_dtype(node, x) for x in node.inputs if x is not None]
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        if mean:
            out = out / len(xs)
        return np.asarray(out).astype(xs[0].dtype)
    return run


op("Max")(_variadic(np.maximum))  # NaN propagates, as ONNX
op("Min")(_variadic(np.minimum))
op("Sum")(_variadic(np.add))
op("Mean")(_variadic(np.add, mean=True))


# ---- comparisons and logic: boolean results --------------------------------

def _boolean(fn: Callable[..., np.ndarray]) -> Callable[[Node], np.ndarray]:
    def run(node: Node) -> np.ndarray:
        xs = node.inputs if node.op == "Equal" else [check_dtype(node, x) for x in node.inputs]
        return np.asarray(fn(*_legacy_broadcast(node, xs)), np.bool_)
    return run


for _name, _fn in {
    "Equal": np.equal, "Less": np.less, "Greater": np.greater,
    "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor, "Not": np.logical_not,
    "IsNaN": np.isnan,
}.items():
    op(_name)(_boolean(_fn))


@op("IsInf")
def _isinf(node: Node) -> np.ndarray:
    x = node.input(0)
    pos, neg = node.attr("detect_positive", 1), node.attr("detect_negative", 1)
    return (np.isposinf(x) & bool(pos)) | (np.isneginf(x) & bool(neg))


@op("Where")
def _where(node: Node) -> np.ndarray:
    cond, a, b = node.inputs[:3]
    return np.where(cond.astype(bool), a, b).astype(a.dtype)


@op("Einsum")
def _einsum(node: Node) -> np.ndarray:
    equation = node.attr("equation").replace(" ", "")
    xs = [check_dtype(node, x) for x in node.inputs]
    return np.asarray(np.einsum(equation, *xs)).astype(xs[0].dtype)
