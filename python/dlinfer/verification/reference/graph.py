"""The executor: an ONNX graph checked once, then run node by node.

Loop, Scan and If hold subgraphs.  A subgraph runs with this same executor and sees
the enclosing graphs' tensors by name (ONNX lexical scoping): its own inputs,
initializers and results first, then whatever the enclosing scope holds.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from ..._optional import import_optional
from ...errors import InputError, InputRankError, InputShapeError, ModelLoadError
from ...runtime.tensors import fmt_shape
from .node import OPS, Node, UnsupportedOpError

__all__ = ["Body", "ControlNode", "Graph", "load", "run"]

_GRAPH = 5  # onnx.AttributeProto.GRAPH, without importing onnx at module import


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
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    for info in graph.input:
        if info.name in arrays and info.type.tensor_type.HasField("shape"):
            _check_shape(info.name, arrays[info.name].shape, info.type.tensor_type.shape.dim)
    return arrays


def _check_shape(name: str, shape: tuple[int, ...], dims: Any) -> None:
    """The rank and fixed sizes the graph declares, so a wrong input is an InputError
    naming it, not an IndexError from some kernel deep inside."""
    want = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in dims)
    if len(shape) != len(want):
        raise InputRankError(f"reference executor: input {name!r} needs rank {len(want)} "
                             f"{fmt_shape(want)}, got shape {shape}")
    for axis, (w, g) in enumerate(zip(want, shape)):
        if w is not None and w != g:
            raise InputShapeError(f"reference executor: input {name!r} needs size {w} on "
                                  f"axis {axis} {fmt_shape(want)}, got shape {shape}")


def _check_ops(graph: Any, where: str = "") -> None:
    """Refuse, before anything runs, an op the executor lacks, at any depth of subgraphs."""
    for node in graph.node:
        name = node.name or (node.output[0] if node.output else "?")
        if node.op_type not in OPS or node.domain not in ("", "ai.onnx"):
            domain = f" (domain {node.domain!r})" if node.domain not in ("", "ai.onnx") else ""
            raise UnsupportedOpError(
                f"reference executor: op {node.op_type!r}{domain} (node {name!r}{where}) "
                f"is not supported; supported ops: {', '.join(sorted(OPS))}"
            )
        for attr in node.attribute:
            if attr.type == _GRAPH:
                _check_ops(attr.g, f", in the {attr.name} graph of {node.op_type} {name!r}{where}")


class Body:
    """One graph (the model's, or a subgraph of a Loop, Scan or If), unpacked once.

    ``reads[i]`` is everything node ``i`` needs from its scope: its inputs and, through
    its subgraphs, the enclosing-scope tensors they use.  That one list drives both
    which nodes run and when a tensor is freed, so a tensor a loop body reads lives
    until the Loop node is done.
    """

    def __init__(self, graph: Any, opset: int):
        from onnx import numpy_helper

        if len(graph.sparse_initializer):
            raise UnsupportedOpError(
                f"reference executor: graph {graph.name!r}: sparse initializers are not supported"
            )
        self.proto = graph
        self.opset = opset
        self.nodes = list(graph.node)
        self.initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.input_names = [i.name for i in graph.input]
        self.output_names = [o.name for o in graph.output]
        self.subgraphs: list[dict[str, Body]] = [
            {a.name: Body(a.g, opset) for a in n.attribute if a.type == _GRAPH}
            for n in self.nodes
        ]
        self.reads: list[list[str]] = []
        for n, subs in zip(self.nodes, self.subgraphs):
            outer = set().union(*(s.outer for s in subs.values())) - set(n.input)
            self.reads.append([x for x in n.input if x] + sorted(outer))
        produced = {o for n in self.nodes for o in n.output}
        defined = set(self.initializers) | set(self.input_names) | produced
        used = {x for r in self.reads for x in r} | set(self.output_names)
        self.outer: set[str] = used - defined  # what this graph takes from enclosing scopes
        self._plans: dict[tuple[tuple[str, ...], bool], tuple[list[bool], dict[str, int]]] = {}

    def _plan(self, wanted: Sequence[str], everything: bool) -> tuple[list[bool], dict[str, int]]:
        """Which nodes run, and after which node each tensor is last read."""
        key = (tuple(wanted), everything)
        if key not in self._plans:
            nodes, needed = self.nodes, set(wanted)
            active = [False] * len(nodes)
            for i in range(len(nodes) - 1, -1, -1):
                if everything or any(o in needed for o in nodes[i].output):
                    active[i] = True
                    needed.update(self.reads[i])
            last_use = {name: i for i in range(len(nodes)) if active[i] for name in self.reads[i]}
            self._plans[key] = (active, last_use)
        return self._plans[key]

    def execute(
        self,
        env: MutableMapping[str, np.ndarray],
        wanted: Sequence[str],
        on_tensor: Callable[[str, np.ndarray], None] | None = None,
    ) -> None:
        """Run the nodes ``wanted`` depends on (every node with ``on_tensor``) in ``env``.

        Intermediates are dropped from ``env`` after their last reader unless wanted.
        For a subgraph ``env`` is a ChainMap whose first map is the subgraph's own, so
        popping never touches the enclosing scope.
        """
        active, last_use = self._plan(wanted, on_tensor is not None)
        keep = set(wanted) | set(self.initializers)
        for i, proto in enumerate(self.nodes):
            if not active[i]:
                continue
            inputs = [env[name] if name else None for name in proto.input]
            subs = self.subgraphs[i]
            node = (ControlNode(proto, inputs, subs, env, self.opset) if subs
                    else Node(proto, inputs, self.opset))
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
            for name, value in zip(proto.output, results):
                if name and value is not None:
                    env[name] = value
                    if on_tensor is not None:
                        on_tensor(name, value)
            for name in self.reads[i]:
                if last_use.get(name) == i and name not in keep:
                    env.pop(name, None)

    def call(
        self, values: Sequence[np.ndarray], scope: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """Run as a subgraph: ``values`` bind its inputs in order; ``scope`` encloses it."""
        if len(values) != len(self.input_names):
            raise ValueError(
                f"subgraph {self.proto.name!r} takes {len(self.input_names)} inputs, "
                f"got {len(values)}"
            )
        local: dict[str, np.ndarray] = dict(self.initializers)
        local.update(zip(self.input_names, values))
        env = ChainMap(local, scope)  # type: ignore[arg-type]
        self.execute(env, self.output_names)
        return [env[name] for name in self.output_names]


class ControlNode(Node):
    """A node holding subgraphs (Loop, Scan, If): it runs them in its own scope."""

    def __init__(self, proto: Any, inputs: list[np.ndarray | None], subgraphs: dict[str, Body],
                 scope: Mapping[str, np.ndarray], opset: int):
        super().__init__(proto, inputs, opset)  # Scan-8 and Scan-9 differ, among others
        self.subgraphs = subgraphs
        self.scope = scope

    def body(self, key: str) -> Body:
        if key not in self.subgraphs:
            raise self.unsupported(f"a node without its {key!r} graph")
        return self.subgraphs[key]

    def call(self, key: str, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the subgraph ``key`` on ``values``; it sees this node's scope."""
        return self.body(key).call(values, self.scope)


def _opset(model: Any) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return versions[0] if versions else 1


class Graph:
    """An ONNX graph checked and unpacked once, to run many times (see :func:`run`)."""

    def __init__(self, model: Any):
        self.proto = load(model)
        _check_ops(self.proto.graph)
        self.body = Body(self.proto.graph, _opset(self.proto))
        if self.body.outer:  # read somewhere, defined nowhere: a broken file, not a bad input
            raise ModelLoadError(
                "reference executor: the graph reads tensor(s) it never defines: "
                + ", ".join(map(repr, sorted(self.body.outer)))
            )
        self.nodes = self.body.nodes
        self.initializers = self.body.initializers
        self.output_names = list(self.body.output_names)
        self.tensor_names = (
            set(self.initializers)
            | set(self.body.input_names)
            | {o for n in self.nodes for o in n.output}
        )

    def run(
        self,
        inputs: Any,
        outputs: Iterable[str] | None = None,
        on_tensor: Callable[[str, np.ndarray], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """See :func:`run`."""
        env: dict[str, np.ndarray] = dict(self.initializers)
        env.update(_normalize_inputs(self.proto.graph, set(self.initializers), inputs))
        wanted = list(outputs) if outputs is not None else list(self.output_names)
        unknown = [w for w in wanted if w not in self.tensor_names]
        if unknown:
            raise InputError(f"no tensor named {', '.join(map(repr, unknown))} in the graph")
        self.body.execute(env, wanted, on_tensor)
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
    ``outputs`` names the tensors to return, any tensor of the main graph included
    (default: the graph outputs); only the nodes they depend on run.
    ``on_tensor(name, array)``, if given, sees every tensor of the main graph as it
    is produced (then every node runs); tensors inside Loop/Scan/If bodies are not
    reported, only what those nodes output.  Returns a dict name -> array, in the
    order asked.

    Raises :class:`UnsupportedOpError` naming the op and node for anything it
    cannot execute, at any depth of subgraphs, before running anything.
    """
    graph = model if isinstance(model, Graph) else Graph(model)
    return graph.run(inputs, outputs, on_tensor)
