"""What an op implementation sees, the op registry, and the executor's one error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import DlinferError

__all__ = ["OPS", "Node", "UnsupportedOpError", "op"]


class UnsupportedOpError(DlinferError, NotImplementedError):
    """The graph uses an op (or an attribute, dtype or mode of one) the executor lacks."""


# op type -> implementation.  An implementation returns one array, or a tuple with one
# entry per output of the node.
OPS: dict[str, Callable[[Node], Any]] = {}


def op(*names: str) -> Callable[[Callable[[Node], Any]], Callable[[Node], Any]]:
    """Register an implementation for the ONNX op types ``names``."""
    def register(fn: Callable[[Node], Any]) -> Callable[[Node], Any]:
        for name in names:
            OPS[name] = fn
        return fn
    return register


class Node:
    """What an op implementation sees: inputs as arrays, attributes as Python values."""

    # The model's ai.onnx opset where the executor passes it; None reads as a current
    # one.  A few ops changed meaning across opsets (Softmax's axis before 13).
    opset: int | None = None

    def __init__(self, proto: Any, inputs: list[np.ndarray | None], opset: int | None = None):
        from onnx import helper

        if opset is not None:
            self.opset = opset
        self.proto = proto
        self.op = proto.op_type
        self.name = proto.name or (proto.output[0] if proto.output else "?")
        self.inputs = inputs
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}

    def attr(self, key: str, default: Any = None) -> Any:
        value = self.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    def input(self, i: int) -> np.ndarray | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def wants(self, i: int) -> bool:
        """Whether the graph names output ``i`` (an unnamed or absent one is not computed)."""
        return i < len(self.proto.output) and bool(self.proto.output[i])

    def only(self, *known: str) -> None:
        """Refuse any attribute outside ``known``: never ignore what changes the answer."""
        extra = sorted(set(self.attrs) - set(known))
        if extra:
            raise self.unsupported(f"the attribute(s) {', '.join(extra)}")

    def unsupported(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            f"reference executor: {self.op} node {self.name!r}: {what} is not supported"
        )
