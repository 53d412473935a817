"""``backend="auto"``: the fastest installed backend for this file on this CPU, measured.

Each installed backend opens the file (with the precision the file was gated for,
:mod:`dlinfer.runtime.backends.openvino.loader`) and runs zeros of the input's shape at
batch 1 and at batch :data:`BATCH`, interleaved, for about :data:`BUDGET_S` seconds in
all; the backend with the lower geometric mean of the two per-item times wins.  The
choice is cached per file (path, size, modification time), CPU model and thread count in
``~/.cache/dlinfer/backends.json``, so it is measured once per model and machine.

Where ``threads`` allows more than one, onnxruntime is also timed on one intra-op thread:
a small model's operators are too short to share, and handing each to a second thread
costs more than it saves (mnist_cnn int8 at batch 1, quiet VM: 26.9 us on one thread,
42.2 us on two, LiteRT 34.4 us on two; at batch 32 two threads win, 402 against 637 us).
``auto`` keeps whichever is faster over the batch sizes timed; the reason says so.

Where there is nothing to measure, the choice says why: a GPU device or onnxruntime-only
options (onnxruntime), OpenVINO not installed, or an input whose shape is dynamic beyond
the batch axis (no traffic to time without the user's data).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import threading
import time
from typing import Any

import numpy as np

from ...errors import DlinferError
from ..provider_options import cache_root
from ..providers import parse_device
from . import available_backends, parse_backend

__all__ = ["BATCH", "BUDGET_S", "ONE_THREAD", "cached_choices", "configuration", "cpu_name",
           "gated_backends", "measure", "pick", "resolve"]

logger = logging.getLogger("dlinfer")

ENV = "DLINFER_BACKEND"  # Model's backend when none is given (resolve)
BATCH = 8  # the batched size timed beside batch 1: large enough to show batching's gain
BUDGET_S = 0.4  # per backend, both batch sizes together, after one warm-up run each
_ORT_ONLY = ("session_options", "provider_options", "cuda", "tensorrt")
_lock = threading.Lock()
_memo: dict[str, dict[str, Any]] = {}


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s ``flags``, or ``Features`` on Arm);
    empty where there is no such file."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def _cache_path() -> str:
    return os.path.join(cache_root(), "backends.json")


def _key(path: str, threads: int, batch: int = BATCH) -> str:
    st = os.stat(path)
    key = [os.path.realpath(path), st.st_size, st.st_mtime_ns, cpu_name(), threads]
    return json.dumps(key if batch == BATCH else [*key, batch])


def _load_cache() -> dict[str, Any]:
    try:
        with open(_cache_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(key: str, entry: dict[str, Any]) -> None:
    data = _load_cache()
    data[key] = entry
    path = _cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home still gets the in-process memo
        logger.info("cannot cache the backend choice in %s: %s", path, exc)


def _batches(model: Any, batch: int = BATCH) -> tuple[int, ...]:
    """The batch sizes to time: 1 and ``batch``, or the one a fixed first axis allows."""
    for i in model.inputs:
        if not i.shape or any(d is None for d in i.shape[1:]):
            raise ValueError(f"input {i.name!r} has shape {i.shape}: only a batch axis may "
                             "be dynamic to be timed on zeros")
    fixed = {i.shape[0] for i in model.inputs if i.shape[0] is not None}
    return (fixed.pop(),) if len(fixed) == 1 else tuple(sorted({1, batch}))


def cached_choices() -> dict[str, dict[str, Any]]:
    """``{model path: {"backend", "reason", "timings"}}`` measured on this CPU, from the
    cache (what ``dlinfer doctor`` lists)."""
    here = cpu_name()
    out = {}
    for key, entry in _load_cache().items():
        try:
            path, _, _, cpu, threads, *batch = json.loads(key)
        except (ValueError, TypeError):
            continue
        if cpu == here and isinstance(entry, dict) and "backend" in entry:
            at = f", batch 1 and {batch[0]}" if batch else ""
            out[f"{path} (threads {threads or 'all'}{at})"] = entry
    return out


def _per_item_ms(model: Any, batch: int, budget: float) -> float:
    feed = {i.name: np.zeros((batch, *i.shape[1:]), i.dtype) for i in model.inputs}
    model.run(feed)  # warm-up: OpenVINO compiles for a new shape on first sight
    times = []
    deadline = time.perf_counter() + budget
    while len(times) < 2 or (time.perf_counter() < deadline and len(times) < 50):
        started = time.perf_counter()
        model.run(feed)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times)) / batch


ONE_THREAD = "onnxruntime on 1 thread"  # the configuration timed beside the others


def _configurations(backends: list[str], threads: int | None) -> dict[str, tuple[str, int]]:
    """``{label: (backend, threads)}`` to time: each backend on ``threads``, and
    onnxruntime on one thread too where ``threads`` allows more (module docstring)."""
    from ..session import default_threads

    n = threads or default_threads()
    configs = {b: (b, n) for b in backends}
    if "onnxruntime" in backends and n > 1:
        configs[ONE_THREAD] = ("onnxruntime", 1)
    return configs


def measure(path: str, threads: int | None, backends: list[str], batch: int = BATCH
            ) -> dict[str, Any]:
    """Per-item milliseconds of each configuration (:func:`_configurations`) at batch 1
    and ``batch``, and the winner: ``{"backend", "threads", "reason", "timings"}``."""
    from ..model import Model

    configs = _configurations(backends, threads)
    models = {label: Model(path, threads=t, backend=b) for label, (b, t) in configs.items()}
    timings: dict[str, dict[str, float]] = {label: {} for label in models}
    batches = _batches(next(iter(models.values())), batch)
    budget = BUDGET_S / (2 * len(batches))
    for _ in range(2):  # interleaved: a noisy second hits every backend alike
        for batch in batches:
            for b, m in models.items():
                ms = _per_item_ms(m, batch, budget)
                key = f"batch_{batch}_ms_per_item"
                timings[b][key] = min(ms, timings[b].get(key, math.inf))
    # the geometric mean of the per-item times: neither batch size outweighs the other
    score = {b: math.prod(t.values()) ** (1 / len(t)) for b, t in timings.items()}
    best = min(score, key=score.get)
    others = ", ".join(f"{b} {score[b] / score[best]:.2f}x slower" for b in score if b != best)
    precision = _precision(models[best])
    reason = (f"backend='auto' measured {', '.join(models)} on {cpu_name()}: {best} "
              f"(precision {precision}) is fastest per item at batch "
              f"{' and '.join(map(str, batches))}"
              + (f"; {others}" if others else ""))
    backend, chosen_threads = configs[best]
    return {"backend": backend, "threads": chosen_threads if best == ONE_THREAD else None,
            "reason": reason, "timings": timings}


def _precision(model: Any) -> str:
    """The precision a model runs in: what optimize gated the file at, else the backend's
    (OpenVINO's hint; onnxruntime runs the file's own types)."""
    stored = (model.spec.extra.get("optimize") or {}) if model.spec is not None else {}
    gate = stored.get("gated_on") if isinstance(stored, dict) else None
    if isinstance(gate, dict) and gate.get("precision"):
        return str(gate["precision"])
    return getattr(model, "precision", "as stored in the file")


def _header(path: str) -> tuple[Any, str | None]:
    """The file's header and why the file cannot be timed on zeros (or None)."""
    from ..onnx_header import read_header

    try:
        header = read_header(path)
    except (DlinferError, UnicodeDecodeError, OSError):
        return None, "the file's header could not be read"
    return header, None if header.inputs else "the graph declares no inputs"


def resolve(backend: str | None, path: Any, device: str = "cpu", threads: int | None = None,
            batch: int = BATCH, **options: Any) -> tuple[str, str]:
    """``(backend, why)`` for a ``Model(path, device, threads, backend=...)`` call;
    ``batch``: the largest batch the caller runs (a Batcher's ``max_batch_size``), timed
    beside batch 1 (default :data:`BATCH`)."""
    return configuration(backend, path, device, threads, batch, **options)[:2]


def configuration(backend: str | None, path: Any, device: str = "cpu",
                  threads: int | None = None, batch: int = BATCH, **options: Any
                  ) -> tuple[str, str, int | None]:
    """``(backend, why, threads)``: :func:`resolve`, and the intra-op thread count auto
    chose where it chose one below ``threads`` (else None: the caller's).

    ``backend=None`` (Model's default) is ``$DLINFER_BACKEND``, else onnxruntime: a
    deployment switches every Model it makes without code changes."""
    how = "asked for"
    if backend is None:
        backend, how = os.environ.get(ENV, "") or "onnxruntime", f"${ENV}"
        if backend == "onnxruntime" and not os.environ.get(ENV):
            how = "the default"
    name = parse_backend(backend)
    if name != "auto":
        return name, f"backend={name!r} ({how})", None
    kind = parse_device(device).kind
    if kind not in ("cpu", "auto"):
        return ("onnxruntime", f"backend='auto': device={device!r} runs on onnxruntime only",
                None)
    given = [k for k in _ORT_ONLY if options.get(k) is not None]
    if given:
        return ("onnxruntime", f"backend='auto': {', '.join(given)} configure onnxruntime",
                None)
    installed = available_backends()
    if "openvino" not in installed:
        return "onnxruntime", ("backend='auto': onnxruntime is the only backend installed "
                               "(pip install 'dlinfer[openvino]' adds OpenVINO)"), None
    path = os.fspath(path)
    if not os.path.isfile(path):
        return "onnxruntime", "backend='auto': no file to measure", None  # Model raises
    header, problem = _header(path)
    if problem:
        return "onnxruntime", f"backend='auto': {problem}", None
    # a file from dlinfer optimize runs only where it passed its accuracy gate
    gated = gated_backends(_header_spec(header), installed)
    if len(_configurations(gated, threads)) == 1:
        return gated[0], (f"backend='auto': the file was gated on {gated[0]} "
                          "(dlinfer optimize; its spec's extra.optimize.gated_on)"), None
    key = _key(path, threads or 0, batch)
    with _lock:
        entry = _memo.get(key) or _load_cache().get(key)
        if entry is None or entry.get("backend") not in installed:
            try:
                entry = measure(path, threads, gated, batch)
            except (DlinferError, ValueError) as exc:
                # e.g. a dynamic axis beyond the batch: zeros cannot stand in for traffic
                entry = {"backend": "onnxruntime",
                         "reason": f"backend='auto' could not time the file ({exc}); "
                                   "onnxruntime"}
            _store(key, entry)
            logger.info("%s: %s", path, entry["reason"])
        else:
            entry = {**entry, "reason": entry["reason"] + " (cached)"} \
                if not entry["reason"].endswith("(cached)") else entry
        _memo[key] = entry
    return entry["backend"], entry["reason"], entry.get("threads")


def gated_backends(spec: Any, installed: list[str]) -> list[str]:
    """The backends a file may run on as gated: the one ``dlinfer optimize`` gated it on
    (its spec's ``extra.optimize.gated_on``), or every installed one for a file that was
    not optimized (float32 runs alike on each)."""
    stored = (spec.extra.get("optimize") or {}) if spec is not None else {}
    gate = stored.get("gated_on") if isinstance(stored, dict) else None
    if isinstance(gate, dict) and gate.get("backend") in installed:
        return [gate["backend"]]
    return list(installed)


def _header_spec(header: Any) -> Any:
    """The spec in the header's metadata, or None (unreadable specs: Model says why)."""
    from ...spec import METADATA_KEY, ModelSpec

    try:
        raw = header.metadata.get(METADATA_KEY)
        return ModelSpec.from_json(raw) if raw else None
    except (DlinferError, ValueError):
        return None


def pick(paths: list[str], threads: int | None = None) -> dict[str, Any]:
    """The fastest (file, backend) among gated variants of one model (float32, int8, bf16
    files from ``dlinfer optimize``), each timed as :func:`measure` times backends:
    ``{"path", "backend", "reason", "scores"}`` (scores: geometric-mean ms per item)."""
    from ..model import Model

    installed = available_backends()
    models = {}
    for path in paths:
        probe = Model(path, threads=threads)
        for b in gated_backends(probe.spec, installed):
            models[(path, b)] = probe if b == "onnxruntime" else Model(path, threads=threads,
                                                                       backend=b)
    batches = _batches(next(iter(models.values())))
    budget = BUDGET_S / (2 * len(batches))
    best_ms: dict[tuple[str, str], dict[int, float]] = {k: {} for k in models}
    for _ in range(2):
        for batch in batches:
            for key, m in models.items():
                ms = _per_item_ms(m, batch, budget)
                best_ms[key][batch] = min(ms, best_ms[key].get(batch, math.inf))
    scores = {k: math.prod(t.values()) ** (1 / len(t)) for k, t in best_ms.items()}
    path, backend = min(scores, key=scores.get)
    ranked = ", ".join(f"{os.path.basename(p)} on {b} {scores[(p, b)]:.3g} ms/item"
                       for p, b in sorted(scores, key=scores.get))
    return {"path": path, "backend": backend, "scores": {f"{p}|{b}": v for (p, b), v in
                                                         scores.items()},
            "reason": f"fastest per item at batch {' and '.join(map(str, batches))} of the "
                      f"gated variants on {cpu_name()}: {ranked}"}
