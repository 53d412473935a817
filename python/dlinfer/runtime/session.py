"""The one place onnxruntime session options are decided, for direct calls and for serving."""

from __future__ import annotations

import os
from collections.abc import Mapping

import onnxruntime as ort

from ..json_limits import loads_limited

__all__ = ["SESSION_METADATA_KEY", "batching_session_options", "default_threads",
           "disabled_optimizers", "session_options"]

# Metadata a file carries about how it must be run (written by ``dlinfer optimize``).
SESSION_METADATA_KEY = "dlinfer.session"
# The onnxruntime optimizers a file may ask to run without, and why each may be asked:
# QDQPropagationTransformer moves an int8 model's QuantizeLinear above a float32
# MaxPool, onto onnxruntime's slow generic uint8 NCHW pooling (dlinfer.optimize.quantize).
_DISABLEABLE = frozenset({"QDQPropagationTransformer"})


def default_threads() -> int:
    """Threads when the caller says ``None`` or 0: every core."""
    return os.cpu_count() or 1


def session_options(threads: int | None = None, *, spinning: bool = True) -> ort.SessionOptions:
    """Session options for a dlinfer model.

    ``threads`` intra-op threads (``None`` or 0: every core).  onnxruntime's own
    log is kept at errors only: its warnings (a CUDA fallback, say) would reach
    the user's terminal, and dlinfer turns the ones that matter into exceptions.
    ``spinning=False`` stops idle intra-op threads from spinning (see
    :func:`batching_session_options`).  The provider of every node is recorded
    (:mod:`dlinfer.runtime.assignment`).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.log_severity_level = 3
    # Which provider runs each node (dlinfer.runtime.assignment): recorded once, at load.
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def batching_session_options(threads: int | None = None) -> ort.SessionOptions:
    """onnxruntime session options for a model served through a :class:`~dlinfer.Batcher`.

    Pass them as ``Classifier(path, threads=threads, session_options=...)``.  They
    turn off intra-op spinning: spinning threads hold every core for a while after
    each run, and behind a batcher those cores are needed right then by the Python
    threads that assemble the next batch and hand results back.  On the 2-core
    development machine, under load, that took 64 threaded clients from
    1,300-4,200 to 5,700-7,300 requests/s and cut CPU time per request by a third.
    """
    return session_options(threads, spinning=False)


def disabled_optimizers(metadata: Mapping[str, str]) -> list[str]:
    """The onnxruntime optimizers a model file asks to run without (its metadata).

    Only names dlinfer knows the reason for are honoured: a file must not be able to
    switch off arbitrary optimizations, and an unreadable entry is ignored, since the
    model runs correctly either way (only slower).
    """
    raw = metadata.get(SESSION_METADATA_KEY)
    if not raw:
        return []
    try:
        names = loads_limited(raw, what=SESSION_METADATA_KEY, error=ValueError).get(
            "disabled_optimizers", [])
    except (ValueError, AttributeError):
        return []
    return sorted(n for n in names if isinstance(n, str) and n in _DISABLEABLE)
