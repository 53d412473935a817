"""Recurrent ops (LSTM, GRU, RNN) and ReverseSequence, in plain float64 NumPy.

One loop over time steps, written as the ONNX operator spec states each equation.
Each batch element runs for its own ``sequence_lens`` steps; a reverse direction
walks each sequence from its own last valid step back to 0.  Outputs past a
sequence's end are zero and its state stops there (onnxruntime's behaviour).
"""

from __future__ import annotations

import numpy as np

from .node import Node, op

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"], "RNN": ["tanh"]}
_ATTRS = {"hidden_size", "direction", "layout", "activations", "activation_alpha",
          "activation_beta", "clip"}
_EXTRA_ATTRS = {"LSTM": {"input_forget"}, "GRU": {"linear_before_reset"}, "RNN": set()}
_FLOATS = (np.float16, np.float32, np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _check(node: Node, dirs: int) -> None:
    """Refuse, by name, every attribute or value this implementation does not compute."""
    unknown = set(node.attrs) - _ATTRS - _EXTRA_ATTRS[node.op]
    if unknown:
        raise node.unsupported(f"attribute(s) {', '.join(sorted(unknown))}")
    acts = node.attr("activations")
    if acts is not None:
        names = [a.decode() if isinstance(a, bytes) else a for a in acts]
        if [a.lower() for a in names] not in (_ACTIVATIONS[node.op], _ACTIVATIONS[node.op] * dirs):
            raise node.unsupported(f"activations {names} (only the defaults)")
    for key in ("activation_alpha", "activation_beta", "clip"):
        if node.attr(key) is not None:
            raise node.unsupported(f"the {key} attribute")
    if node.attr("input_forget", 0):
        raise node.unsupported("input_forget=1")
    if node.attr("layout", 0) not in (0, 1):
        raise node.unsupported(f"layout={node.attr('layout')}")
    if node.inputs[0].dtype not in _FLOATS:
        raise node.unsupported(f"dtype {node.inputs[0].dtype}")


def _cell(node: Node, w, r, b, p, x, h, c):
    """One time step for a whole batch: (new h, new c) by the op's equations."""
    hidden = r.shape[-1]
    wb, rb = b[: b.size // 2], b[b.size // 2:]
    if node.op == "RNN":
        return np.tanh(x @ w.T + h @ r.T + wb + rb), c
    if node.op == "LSTM":  # gates i, o, f, c; peepholes i, o, f
        g = x @ w.T + h @ r.T + wb + rb
        gi, go, gf, gc = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))
        pi, po, pf = (p[k * hidden:(k + 1) * hidden] for k in range(3))
        i = _sigmoid(gi + pi * c)
        f = _sigmoid(gf + pf * c)
        c_new = f * c + i * np.tanh(gc)
        o = _sigmoid(go + po * c_new)
        return o * np.tanh(c_new), c_new
    # GRU: gates z, r, h
    xw = x @ w.T + wb
    xz, xr, xh = (xw[:, k * hidden:(k + 1) * hidden] for k in range(3))
    rz, rr, rh = (r[k * hidden:(k + 1) * hidden] for k in range(3))
    bz, br, bh = (rb[k * hidden:(k + 1) * hidden] for k in range(3))
    z = _sigmoid(xz + h @ rz.T + bz)
    reset = _sigmoid(xr + h @ rr.T + br)
    if node.attr("linear_before_reset", 0):
        candidate = np.tanh(xh + reset * (h @ rh.T + bh))
    else:
        candidate = np.tanh(xh + (reset * h) @ rh.T + bh)
    return (1 - z) * candidate + z * h, c


@op("LSTM", "GRU", "RNN")
def _recurrent(node: Node) -> tuple[np.ndarray, ...]:
    direction = node.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise node.unsupported(f"direction {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    _check(node, dirs)
    x, w, r = (np.asarray(node.input(i), np.float64) for i in range(3))
    dtype = node.input(0).dtype
    b, lens, h0 = node.input(3), node.input(4), node.input(5)
    c0 = node.input(6) if node.op == "LSTM" else None
    p = node.input(7) if node.op == "LSTM" else None
    batch_first = node.attr("layout", 0) == 1
    if batch_first:  # layout 1: X, initial_h/c are batch-major; computed as layout 0
        x = x.swapaxes(0, 1)
        h0 = None if h0 is None else h0.swapaxes(0, 1)
        c0 = None if c0 is None else c0.swapaxes(0, 1)
    steps, batch, _ = x.shape
    gates, hidden = _GATES[node.op], r.shape[-1]
    if w.shape[0] != dirs or r.shape != (dirs, gates * hidden, hidden) or \
            w.shape[1] != gates * hidden or node.attr("hidden_size", hidden) != hidden:
        raise ValueError(f"W {w.shape} / R {r.shape} do not fit direction={direction} and "
                         f"hidden_size={node.attr('hidden_size')}")
    b = np.zeros((dirs, 2 * gates * hidden)) if b is None else np.asarray(b, np.float64)
    p = np.zeros((dirs, 3 * hidden)) if p is None else np.asarray(p, np.float64)
    h0 = np.zeros((dirs, batch, hidden)) if h0 is None else np.asarray(h0, np.float64)
    c0 = np.zeros((dirs, batch, hidden)) if c0 is None else np.asarray(c0, np.float64)
    lens = np.full(batch, steps) if lens is None else np.asarray(lens).astype(np.int64)
    if lens.shape != (batch,) or (lens > steps).any() or (lens < 0).any():
        raise ValueError(f"sequence_lens {lens.tolist()} must be {batch} values in 0..{steps}")
    if (lens == 0).any():  # the spec is silent; onnxruntime returns a zero state, not initial_h
        raise node.unsupported("a sequence_lens value of 0")

    y = np.zeros((steps, dirs, batch, hidden))
    y_h, y_c = h0.copy(), c0.copy()
    rows = np.arange(batch)
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        h, c = h0[d], c0[d]
        for step in range(steps):
            valid = step < lens
            t = np.where(valid, lens - 1 - step if reverse else step, 0)
            h_new, c_new = _cell(node, w[d], r[d], b[d], p[d], x[t, rows], h, c)
            h = np.where(valid[:, None], h_new, h)
            c = np.where(valid[:, None], c_new, c)
            y[t[valid], d, rows[valid]] = h_new[valid]
        y_h[d], y_c[d] = h, c
    if batch_first:
        y, y_h, y_c = y.transpose(2, 0, 1, 3), y_h.swapaxes(0, 1), y_c.swapaxes(0, 1)
    return y.astype(dtype), y_h.astype(dtype), y_c.astype(dtype)


@op("ReverseSequence")
def _reverse_sequence(node: Node) -> np.ndarray:
    x, lens = node.input(0), node.input(1)
    batch_axis, time_axis = node.attr("batch_axis", 1), node.attr("time_axis", 0)
    if {batch_axis, time_axis} != {0, 1}:
        raise ValueError(f"batch_axis={batch_axis}, time_axis={time_axis}: must be 0 and 1")
    if x.ndim < 2 or lens.shape != (x.shape[batch_axis],):
        raise ValueError(f"sequence_lens of shape {lens.shape} for input {x.shape}")
    if (lens < 0).any() or (lens > x.shape[time_axis]).any():
        raise ValueError(f"sequence_lens {lens.tolist()} out of 0..{x.shape[time_axis]}")
    y = x.copy()
    for b, length in enumerate(lens.tolist()):
        index = [slice(None)] * x.ndim
        index[batch_axis], index[time_axis] = slice(b, b + 1), slice(0, length)
        y[tuple(index)] = np.flip(x[tuple(index)], axis=time_axis)
    return y
