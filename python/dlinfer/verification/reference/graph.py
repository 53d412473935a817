"""The executor: an ONNX graph checked once, then run node by node."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..._optional import import_optional
from ...errors import InputError, ModelLoadError
from .node import OPS, Node, UnsupportedOpError

__all__ = ["Graph", "load", "run"]


def load(model: Any) -> Any:
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto."""
    onnx = import_optional("onnx", "reference", "dlinfer.reference and dlinfer verify")

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        if isinstance(model, (bytes, bytearray)):
            return onnx.load_from_string(bytes(model))
        return onnx.load(str(model))
    except FileNotFoundError:
        raise
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelLoadError(f"could not read ONNX model {model!r}: {exc}") from exc



def _normalize_inputs(
    graph: Any, initializer_names: set[str], inputs: Any
) -> dict[str, np.ndarray]:
    names = [i.name for i in graph.input if i.name not in initializer_names]
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise InputError(f"the model has {len(names)} inputs ({', '.join(names)}); pass a dict")
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InputError(f"missing model input(s): {', '.join(missing)}")
    unknown = [n for n in inputs if n not in names]
    if unknown:
        raise InputError(
            f"unknown input name(s) {', '.join(unknown)}; the model takes {', '.join(names)}"
        )
    return {k: np.asarray(v) for k, v in inputs.items()}


class Graph:
    """An ONNX graph checked and unpacked once, to run many times (see :func:`run`)."""

    def __init__(self, model: Any):
        from onnx import numpy_helper

        self.proto = load(model)
        graph = self.proto.graph
        for node in graph.node:
            if node.op_type not in OPS or node.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(
                    f"reference executor: op {node.op_type!r} (node "
                    f"{node.name or node.output[0]!r}) is not supported; "
                    f"supported ops: {', '.join(sorted(OPS))}"
                )
        self.nodes = list(graph.node)
        self.initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.output_names = [o.name for o in graph.output]
        self.tensor_names = (
            set(self.initializers)
            | {i.name for i in graph.input}
            | {o for n in self.nodes for o in n.output}
        )

    def run(
        self,
        inputs: Any,
        outputs: Iterable[str] | None = None,
        on_tensor: Callable[[str, np.ndarray], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """See :func:`run`."""
        init = self.initializers
        env: dict[str, np.ndarray] = dict(init)
        env.update(_normalize_inputs(self.proto.graph, set(init), inputs))
        wanted = list(outputs) if outputs is not None else list(self.output_names)
        unknown = [w for w in wanted if w not in self.tensor_names]
        if unknown:
            raise InputError(f"no tensor named {', '.join(map(repr, unknown))} in the graph")

        # Run only the nodes the wanted tensors depend on (all of them for on_tensor).
        nodes = self.nodes
        needed = set(wanted)
        active = [False] * len(nodes)
        for i in range(len(nodes) - 1, -1, -1):
            if on_tensor is not None or any(o in needed for o in nodes[i].output):
                active[i] = True
                needed.update(name for name in nodes[i].input if name)

        # Free every intermediate after its last consumer, unless it was asked for.
        last_use: dict[str, int] = {}
        for i, node in enumerate(nodes):
            if active[i]:
                for name in node.input:
                    last_use[name] = i
        keep = set(wanted)

        for i, proto_node in enumerate(nodes):
            if not active[i]:
                continue
            node = Node(proto_node, [env[name] if name else None for name in proto_node.input])
            try:
                result = OPS[node.op](node)
            except (UnsupportedOpError, InputError):
                raise
            except ValueError as exc:
                raise InputError(
                    f"reference executor: {node.op} node {node.name!r}: {exc}"
                ) from exc
            # One array for a one-output op, else one per output (an unused one: None).
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(proto_node.output, results):
                if name and value is not None:
                    env[name] = value
                    if on_tensor is not None:
                        on_tensor(name, value)
            for name in proto_node.input:
                if name and last_use.get(name) == i and name not in keep and name not in init:
                    env.pop(name, None)
        return {name: env[name] for name in wanted}


def run(
    model: Any,
    inputs: Any,
    outputs: Iterable[str] | None = None,
    on_tensor: Callable[[str, np.ndarray], None] | None = None,
) -> dict[str, np.ndarray]:
    """Execute an ONNX graph with dlinfer's kernels.

    ``model`` is a path, bytes, ``onnx.ModelProto`` or a prepared :class:`Graph`;
    ``inputs`` an array (for a single-input model) or a dict name -> array.
    ``outputs`` names the tensors to return, any tensor of the graph included
    (default: the graph outputs); only the nodes they depend on run.
    ``on_tensor(name, array)``, if given, sees every tensor as it is produced
    (then every node runs).  Returns a dict name -> array, in the order asked.

    Raises :class:`UnsupportedOpError` naming the op and node for anything it
    cannot execute, before running anything.
    """
    graph = model if isinstance(model, Graph) else Graph(model)
    return graph.run(inputs, outputs, on_tensor)
