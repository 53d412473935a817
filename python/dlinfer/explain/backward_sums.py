"""Gradients summed over a layer's map, as Grad-CAM needs them, without the backward
nodes that only move the gradient around inside the map.

Grad-CAM weighs each channel of a layer by the mean over the map of its gradient, so
``build(..., summed_over=(2, 3))`` returns only each channel's sum.  Two exact shortcuts
reach it from further down the graph, where the layer feeds a pooling:

- **the pooling**: a max pooling sends each window's gradient whole to one input
  position (its maximum: padding never wins), so over the map the input gradient sums
  to the output gradient's sum; a global average pooling spreads g / size over size
  positions, which sum to g.  On small_convnet's last block (15x15 pooled to 7x7) that
  skips a dozen layout and element-wise nodes, a crop and a pad: 10 ms of 170 at batch 32.
- **the dense layer after it**: where the pooled map reaches a dense layer only through
  layout ops (a Transpose keeping the batch first, Flatten, Reshape), each channel's sum
  of the dense input gradient g W^T is g times W's rows of that channel, summed: a
  (channels x units) matrix computed here once instead of a (features x units) product
  at every run (small_convnet: 6272 x 512 -> 128 x 512, 3.6 ms at batch 32).

Anything else reaching the layer gets its full gradient, summed at the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backward import Builder
from .backward_ops import _attr

__all__ = ["SummedGradients"]

_POOLS = ("MaxPool", "GlobalAveragePool")
_LAYOUT = ("Transpose", "Reshape", "Flatten", "Identity")


class SummedGradients:
    """Collects each ``wrt`` tensor's gradient summed over ``axes`` (kept, size 1)."""

    def __init__(self, b: Builder, on_path: list[Any], wrt: Sequence[str],
                 axes: Sequence[int]):
        self.b = b
        self.axes = [int(a) for a in axes]
        made = {o for n in on_path for o in n.output}
        # A wrt tensor made on the path passes its full gradient on upstream: no shortcut.
        self.wrt = {w for w in wrt if w not in made}
        self.uses = Counter(i for n in on_path for i in n.input if i)
        self.producer = {o: n for n in on_path for o in n.output if o}
        self.parts: dict[str, list[str]] = {}

    def take(self, node: Any, out_grads: list[str | None]) -> bool:
        """Whether ``node``'s backward pass is replaced by part of a summed gradient."""
        g = out_grads[0] if out_grads else None
        if g is None or not node.input:
            return False
        if node.op_type in ("MatMul", "Gemm"):
            found = self._dense(node, g)
        elif node.input[0] in self.wrt and self._pool(node):
            found = node.input[0], (g if node.op_type == "GlobalAveragePool" else self.b.op(
                "ReduceSum", [g, self.b.ints(self.axes)], keepdims=1))
        else:
            return False
        if found is None:
            return False
        self.parts.setdefault(found[0], []).append(found[1])
        return True

    def total(self, w: str, full: str | None) -> str | None:
        """``w``'s summed gradient: the shortcuts' parts plus ``full`` summed."""
        parts = list(self.parts.get(w, []))
        if full is not None:
            parts.append(self.b.op("ReduceSum", [full, self.b.ints(self.axes)], keepdims=1))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else self.b.op("Sum", parts)

    def _pool(self, node: Any) -> bool:
        """A pooling whose input is summed over exactly its spatial axes."""
        rank = self.b.rank(node.input[0])
        return (node.op_type in _POOLS and rank is not None and rank >= 3
                and sorted(a % rank for a in self.axes) == list(range(2, rank))
                and not (len(node.output) > 1 and node.output[1]))

    def _dense(self, node: Any, g: str) -> tuple[str, str] | None:
        """(wrt, its summed gradient) through a dense layer fed by a pooled wrt, or None."""
        b = self.b
        weights = b.constant(node.input[1])
        if weights is None or weights.ndim != 2 or b.rank(node.input[0]) != 2:
            return None
        if node.op_type == "Gemm" and _attr(node, "transA", 0):
            return None
        alpha = float(_attr(node, "alpha", 1.0)) if node.op_type == "Gemm" else 1.0
        rows = weights.T if node.op_type == "Gemm" and _attr(node, "transB", 0) else weights
        chain, t = [], node.input[0]
        while True:  # back through layout ops to the pooling
            if self.uses[t] != 1 or t in self.wrt or t not in self.producer:
                return None
            p = self.producer[t]
            if p.op_type in _LAYOUT:
                chain.append(p)
                t = p.input[0]
                continue
            if p.op_type in _POOLS and p.input[0] in self.wrt and self._pool(p):
                break
            return None
        channel = _channel_of_feature(b, t, chain[::-1])
        if channel is None or channel.size != rows.shape[0]:
            return None
        count = int(channel.max()) + 1
        order = np.argsort(channel, kind="stable")
        starts = np.searchsorted(channel[order], np.arange(count))
        summed = np.add.reduceat(rows[order].astype(np.float64), starts, axis=0)
        part = b.op("Gemm", [g, b.const(summed)], alpha=alpha, transB=1)
        rank = b.rank(t) or 4
        return p.input[0], b.op("Reshape", [part, b.ints([0, count] + [1] * (rank - 2))])


def _channel_of_feature(b: Builder, pooled: str, chain: list[Any]) -> np.ndarray | None:
    """The channel of ``pooled`` that each feature of the dense input comes from: channel
    numbers laid out like one sample of ``pooled``, through the layout ops of ``chain``."""
    shape = b.static_shape(pooled)
    if shape is None or len(shape) < 3 or not all(isinstance(d, int) and d > 0
                                                   for d in shape[1:]):
        return None
    rank = len(shape)
    ids = np.broadcast_to(np.arange(shape[1]).reshape((1, -1) + (1,) * (rank - 2)),
                          [1, *shape[1:]])
    for i, p in enumerate(chain):
        last = i == len(chain) - 1
        if p.op_type == "Transpose":
            perm = _attr(p, "perm")
            if perm is None or perm[0] != 0:
                return None
            ids = ids.transpose(perm)
        elif p.op_type == "Flatten":
            if _attr(p, "axis", 1) != 1:
                return None
            ids = ids.reshape(1, -1)
        elif p.op_type == "Reshape":
            out = b.static_shape(p.output[0])
            if last:  # the dense input: (batch, features), checked against the weights
                ids = ids.reshape(1, -1)
            elif (out is not None and all(isinstance(d, int) and d > 0 for d in out[1:])
                  and int(np.prod(out[1:])) == ids.size):
                ids = ids.reshape([1, *out[1:]])
            else:
                return None
    return np.ascontiguousarray(ids).reshape(-1)
