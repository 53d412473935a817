"""Which execution provider runs each node of a session, and which nodes fell back to CPU.

onnxruntime 1.31 records the assignment when the session option
``session.record_ep_graph_assignment_info`` is ``"1"`` (dlinfer's session options set
it) and returns it from ``InferenceSession.get_provider_graph_assignment_info()``: one
entry per subgraph, with its provider and its nodes (name, op type).  A session asked
for CUDA whose ``get_providers()`` lists CUDA first can still run some nodes on CPU
(an op without a CUDA kernel, shape arithmetic onnxruntime keeps on the host); those
nodes are named here as fallbacks, since each costs a device round trip.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort

__all__ = ["RECORD_KEY", "describe", "node_assignment", "of_model", "summarize"]

RECORD_KEY = "session.record_ep_graph_assignment_info"
CPU = "CPUExecutionProvider"


def node_assignment(session: ort.InferenceSession) -> list[dict[str, Any]] | None:
    """``[{"provider", "name", "op_type"}]`` per node, or None where nothing was recorded
    (an onnxruntime without the API, or session options without :data:`RECORD_KEY`)."""
    getter = getattr(session, "get_provider_graph_assignment_info", None)
    if getter is None:
        return None
    try:
        subgraphs = getter()
    except Exception:  # noqa: BLE001 - not recorded for this session
        return None
    nodes = [{"provider": sub.ep_name, "name": node.name, "op_type": node.op_type}
             for sub in subgraphs for node in sub.get_nodes()]
    return nodes or None


def summarize(nodes: list[dict[str, Any]] | None, wanted: str) -> dict[str, Any]:
    """Node counts per provider and the nodes that ran on CPU although ``wanted`` was not
    CPU (``{"recorded", "wanted", "nodes_per_provider", "cpu_fallbacks"}``)."""
    if nodes is None:
        return {"recorded": False, "wanted": wanted, "nodes_per_provider": {},
                "cpu_fallbacks": []}
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node["provider"]] = counts.get(node["provider"], 0) + 1
    fallbacks = [] if wanted == CPU else [
        {"name": n["name"], "op_type": n["op_type"]} for n in nodes if n["provider"] == CPU]
    return {"recorded": True, "wanted": wanted, "nodes_per_provider": counts,
            "cpu_fallbacks": fallbacks}


def of_model(model: Any) -> dict[str, Any]:
    """:func:`summarize` for a :class:`~dlinfer.Model`'s session and its active provider.

    OpenVINO has no providers to assign: its CPU plugin runs every node."""
    if getattr(model, "backend", "onnxruntime") != "onnxruntime":
        return {"recorded": False, "wanted": model.providers[0], "nodes_per_provider": {},
                "cpu_fallbacks": [], "backend": model.backend}
    return summarize(node_assignment(model.session), model.providers[0])


def describe(summary: dict[str, Any]) -> list[str]:
    """Text lines for ``dlinfer info``, ``bench`` and ``doctor``."""
    if summary.get("backend", "onnxruntime") != "onnxruntime":
        return [f"every node runs on {summary['wanted']}"]
    if not summary["recorded"]:
        return ["not recorded (session options without "
                f"{RECORD_KEY}=1, or an onnxruntime without the API)"]
    counts = ", ".join(f"{p} {n}" for p, n in summary["nodes_per_provider"].items())
    lines = [f"nodes per provider: {counts}"]
    fallbacks = summary["cpu_fallbacks"]
    if fallbacks:
        shown = ", ".join(f"{f['name'] or '?'} ({f['op_type']})" for f in fallbacks[:12])
        more = f" and {len(fallbacks) - 12} more" if len(fallbacks) > 12 else ""
        lines.append(f"CPU fallbacks ({len(fallbacks)} nodes not on {summary['wanted']}): "
                     f"{shown}{more}")
    elif summary["wanted"] != CPU:
        lines.append(f"no CPU fallbacks: every node runs on {summary['wanted']}")
    return lines
