"""Control flow: Loop, Scan and If, each running its subgraph with this executor."""

from __future__ import annotations

from typing import Any

import numpy as np

from .graph import Body, ControlNode
from .node import op


def _tensors_only(node: ControlNode, key: str) -> Body:
    """The subgraph ``key``, refused if it takes or gives a sequence, map or optional."""
    body = node.body(key)
    for value in list(body.proto.input) + list(body.proto.output):
        kind = value.type.WhichOneof("value")
        if kind not in (None, "tensor_type"):
            raise node.unsupported(f"{key} {value.name!r} of type {kind} (tensors only)")
    return body


def _scalar(node: ControlNode, value: np.ndarray, what: str) -> Any:
    if value.size != 1:
        raise ValueError(f"{what} must hold one element, got shape {value.shape}")
    return value.reshape(-1)[0]


def _stack(node: ControlNode, body: Body, position: int, values: list[np.ndarray]) -> np.ndarray:
    """Per-iteration values stacked on a new axis 0 (onnxruntime's Loop and Scan).

    With zero iterations the element shape comes only from the body's declared output
    type; where that is not fully static the result is refused rather than guessed.
    """
    if values:
        return np.stack(values)
    from onnx import helper

    out = body.proto.output[position]
    tensor = out.type.tensor_type
    dims = tensor.shape.dim if tensor.HasField("shape") else None
    if dims is None or any(not d.HasField("dim_value") for d in dims) or not tensor.elem_type:
        raise node.unsupported(
            f"zero iterations with scan output {out.name!r} of no static shape"
        )
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    return np.zeros((0, *(d.dim_value for d in dims)), dtype)


@op("Loop")
def _loop(node: ControlNode) -> tuple[np.ndarray, ...]:
    body = _tensors_only(node, "body")
    trip, cond = node.input(0), node.input(1)
    carried = list(node.inputs[2:])
    if any(v is None for v in carried):
        raise node.unsupported("an omitted loop-carried input")
    if len(body.input_names) != 2 + len(carried):
        raise ValueError(
            f"the body takes {len(body.input_names)} inputs; it must take 2 + "
            f"{len(carried)} (iteration, condition, loop-carried values)"
        )
    n_scan = len(body.output_names) - 1 - len(carried)
    if n_scan < 0:
        raise ValueError(f"the body gives {len(body.output_names)} outputs, fewer than 1 + "
                         f"{len(carried)} (condition, loop-carried values)")
    if trip is None and cond is None:
        raise node.unsupported("a Loop with neither a trip count M nor cond (it never ends)")
    limit = None if trip is None else int(_scalar(node, trip, "M"))
    go = True if cond is None else bool(_scalar(node, cond, "cond"))
    scans: list[list[np.ndarray]] = [[] for _ in range(n_scan)]
    i = 0
    while go and (limit is None or i < limit):
        outs = node.call("body", [np.array(i, np.int64), np.array(go), *carried])
        go = bool(_scalar(node, outs[0], "the body's condition output"))
        if cond is None and not go and i + 1 < limit:  # type: ignore[operator]
            # The spec ignores the body's condition when the Loop has no cond input;
            # onnxruntime stops on it.  Rather than pick one, refuse.
            raise node.unsupported(
                "a body condition turning false in a Loop without a cond input"
            )
        if cond is None:
            go = True
        carried = outs[1:1 + len(carried)]
        for k, value in enumerate(outs[1 + len(carried):]):
            scans[k].append(value)
        i += 1
    stacked = [_stack(node, body, 1 + len(carried) + k, v) for k, v in enumerate(scans)]
    return (*carried, *stacked)


def _ints(node: ControlNode, key: str, count: int, default: int) -> list[int]:
    values = node.attr(key)
    values = [default] * count if values is None else [int(v) for v in values]
    if len(values) != count:
        raise ValueError(f"{key} has {len(values)} entries for {count} scan values")
    return values


def _scan_loop(node: ControlNode, states: list[np.ndarray], xs: list[np.ndarray],
               dirs: list[int], axes: list[int]) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Run the body once per slice of the scan inputs: final states, per-step scan outputs."""
    lengths = {x.shape[a] for x, a in zip(xs, axes)}
    if len(lengths) > 1:
        raise ValueError(f"scan inputs of different lengths {sorted(lengths)}")
    steps = lengths.pop() if lengths else 0
    scans: list[list[np.ndarray]] = [[] for _ in range(len(node.body("body").output_names)
                                                     - len(states))]
    for t in range(steps):
        elems = [np.take(x, steps - 1 - t if d else t, axis=a) for x, d, a in zip(xs, dirs, axes)]
        outs = node.call("body", [*states, *elems])
        states = outs[:len(states)]
        for j, value in enumerate(outs[len(states):]):
            scans[j].append(value)
    return states, scans


def _scan_shape(node: ControlNode, body: Body, inputs: list[np.ndarray]) -> tuple[int, int, int]:
    """(state count N, scan input count M, scan output count K), checked against the body."""
    m = node.attr("num_scan_inputs")
    if m is None:
        raise ValueError("the num_scan_inputs attribute is required")
    n_state = len(inputs) - m
    k = len(body.output_names) - n_state
    if n_state < 0 or k < 0 or len(body.input_names) != n_state + m:
        raise ValueError(
            f"{len(inputs)} inputs with num_scan_inputs={m} do not fit a body of "
            f"{len(body.input_names)} inputs and {len(body.output_names)} outputs"
        )
    return n_state, m, k


def _scan8(node: ControlNode, body: Body) -> tuple[np.ndarray, ...]:
    """Scan-8: every state and scan input has a batch axis 0; each batch row scans alone."""
    lens, inputs = node.input(0), list(node.inputs[1:])
    n_state, m, k = _scan_shape(node, body, inputs)
    dirs = _ints(node, "directions", m, 0)
    if any(d not in (0, 1) for d in dirs) or any(x.ndim < 2 for x in inputs[n_state:]):
        raise ValueError("a direction other than 0 and 1, or a scan input without a time axis")
    batch = {x.shape[0] for x in inputs}
    if len(batch) != 1:
        raise ValueError(f"inputs of different batch sizes {sorted(batch)}")
    if lens is not None and m and (np.asarray(lens) != inputs[n_state].shape[1]).any():
        raise node.unsupported("Scan-8 sequence_lens shorter than the scan inputs")
    rows = [_scan_loop(node, [x[b] for x in inputs[:n_state]], [x[b] for x in inputs[n_state:]],
                       dirs, [0] * m) for b in range(batch.pop())]
    states = [np.stack([r[0][i] for r in rows]) for i in range(n_state)]
    scans = [np.stack([_stack(node, body, n_state + j, r[1][j]) for r in rows])
             for j in range(k)]
    return (*states, *scans)


@op("Scan")
def _scan(node: ControlNode) -> tuple[np.ndarray, ...]:
    body = _tensors_only(node, "body")
    if node.opset < 9:
        return _scan8(node, body)
    inputs = list(node.inputs)
    n_state, m, k = _scan_shape(node, body, inputs)
    xs = inputs[n_state:]
    in_dirs = _ints(node, "scan_input_directions", m, 0)
    out_dirs = _ints(node, "scan_output_directions", k, 0)
    in_axes = [a % x.ndim if -x.ndim <= a < x.ndim else None
               for a, x in zip(_ints(node, "scan_input_axes", m, 0), xs)]
    out_axes = _ints(node, "scan_output_axes", k, 0)
    if None in in_axes or any(d not in (0, 1) for d in in_dirs + out_dirs):
        raise ValueError("a scan input axis out of range or a direction other than 0 and 1")
    states, scans = _scan_loop(node, inputs[:n_state], xs, in_dirs, in_axes)  # type: ignore[arg-type]
    results = []
    for j, (values, direction, axis) in enumerate(zip(scans, out_dirs, out_axes)):
        stacked = _stack(node, body, n_state + j, values[::-1] if direction else values)
        if not -stacked.ndim <= axis < stacked.ndim:
            raise ValueError(f"scan output axis {axis} out of range for rank {stacked.ndim}")
        results.append(np.moveaxis(stacked, 0, axis))
    return (*states, *results)


@op("If")
def _if(node: ControlNode) -> tuple[np.ndarray, ...]:
    branch = "then_branch" if bool(_scalar(node, node.input(0), "cond")) else "else_branch"
    _tensors_only(node, branch)
    outs = node.call(branch, [])
    if len(outs) != len(node.proto.output):
        raise ValueError(f"{branch} gives {len(outs)} outputs for {len(node.proto.output)}")
    return tuple(outs)
