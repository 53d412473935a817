"""Elementwise arithmetic and activations, in plain NumPy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .node import Node, op


def _elementwise(fn: Callable[..., np.ndarray]) -> Callable[[Node], np.ndarray]:
    def run(node: Node) -> np.ndarray:
        out = fn(*node.inputs)
        # Python scalars and NumPy's promotion rules must not widen float32.
        dtype = node.inputs[0].dtype
        return np.asarray(out).astype(dtype, copy=False)

    return run


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


@op("Clip")
def _clip(node: Node) -> np.ndarray:
    lo = node.input(1) if node.input(1) is not None else node.attr("min")
    hi = node.input(2) if node.input(2) is not None else node.attr("max")
    return np.clip(node.input(0), lo, hi).astype(node.input(0).dtype)


for _name, _fn in {
    "Relu": lambda x: np.maximum(x, 0),
    "Sigmoid": _sigmoid,
    "Tanh": np.tanh,
    "Exp": np.exp,
    "Sqrt": np.sqrt,
    "Neg": np.negative,
    "Abs": np.abs,
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    # Integer Div truncates toward zero in ONNX; NumPy's // floors.
    "Div": lambda a, b: a / b if a.dtype.kind == "f" else np.trunc(a / b),
    "Pow": np.power,
}.items():
    op(_name)(_elementwise(_fn))

op("LeakyRelu")(lambda n: np.where(
    n.input(0) >= 0, n.input(0), n.input(0) * np.float32(n.attr("alpha", 0.01))
).astype(n.input(0).dtype))
