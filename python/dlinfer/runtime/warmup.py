"""Starting a model for a :class:`~dlinfer.Batcher`: provider options and a warm-up that
suit traffic where every batch size from 1 to the maximum occurs.

On a GPU the first run at each input shape pays for what the shape needs: a cuDNN
algorithm choice, a TensorRT engine (outside its profile), memory for the arena.  A
Batcher forms every batch size from 1 to ``max_batch_size``, so without a warm-up those
costs land on live requests, one batch size at a time.  On CPU nothing is chosen per
shape, and a warm-up over every batch size would only delay the start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..checks import check_allocation
from .model import Model

__all__ = ["serving_model_options", "serving_provider_options", "warm_up",
           "warm_up_for_batcher"]

logger = logging.getLogger("dlinfer")


def serving_provider_options(device: str, cuda: Mapping[str, Any] | None,
                             tensorrt: Mapping[str, Any] | None,
                             max_batch_size: int) -> dict[str, Any]:
    """``Model``'s ``cuda=``/``tensorrt=`` for a batcher: TensorRT gets one optimization
    profile for batch sizes 1..max_batch_size unless the caller chose a profile."""
    out: dict[str, Any] = {}
    if cuda:
        out["cuda"] = dict(cuda)
    if str(device).strip().lower().startswith("tensorrt"):
        trt = dict(tensorrt or {})
        if not any(k.startswith("trt_profile_") for k in trt):
            trt.setdefault("max_batch", max_batch_size)
        out["tensorrt"] = trt
    elif tensorrt:
        out["tensorrt"] = dict(tensorrt)  # Model refuses them by name for this device
    return out


def serving_model_options(path: str, backend: str | None, device: str, threads: int | None,
                          cuda: Mapping[str, Any] | None, tensorrt: Mapping[str, Any] | None,
                          max_batch_size: int) -> dict[str, Any]:
    """``Model``'s keyword arguments for a model behind a batcher (``dlinfer serve``, Ray).

    The backend is resolved first (``auto`` measures the file as it is, without the
    batcher's options, at batch 1 and ``max_batch_size``): onnxruntime then gets
    :func:`batching_session_options` and :func:`serving_provider_options`; OpenVINO
    takes none of them.
    """
    from .backends.choice import resolve
    from .session import batching_session_options

    name, _ = resolve(backend, path, device, threads, batch=max_batch_size)
    if name != "onnxruntime":
        return {"backend": name}
    return {"backend": name, "session_options": batching_session_options(threads),
            **serving_provider_options(device, cuda, tensorrt, max_batch_size)}


def warm_up(model: Model, batch_sizes: Iterable[int]) -> dict[str, Any]:
    """Run ``model`` once on zeros at each batch size; ``{"batch_sizes", "seconds"}``.

    A model with a dynamic axis other than the batch axis cannot be warmed up without
    knowing its traffic, and is skipped (``"skipped"`` says why).
    """
    started = time.perf_counter()
    shapes = {}
    for info in model.inputs:
        rest = info.shape[1:]
        if not info.shape or info.shape[0] is not None or any(d is None for d in rest):
            return {"batch_sizes": [], "seconds": 0.0,
                    "skipped": f"input {info.name!r} has shape {info.shape}: no batch axis "
                               "alone is dynamic"}
        shapes[info.name] = (rest, info.dtype)
    done = []
    for batch in batch_sizes:
        feed = {name: np.zeros(check_allocation((batch, *rest), dtype.itemsize, name), dtype)
                for name, (rest, dtype) in shapes.items()}
        model.run(feed)
        done.append(batch)
    return {"batch_sizes": done, "seconds": round(time.perf_counter() - started, 3)}


def warm_up_for_batcher(model: Model, max_batch_size: int) -> dict[str, Any] | None:
    """On a GPU device, :func:`warm_up` over 1..max_batch_size; on CPU, nothing (None)."""
    if model.device == "cpu":
        return None
    report = warm_up(model, range(1, max_batch_size + 1))
    logger.info("%s: warmed up on %s for batch sizes 1..%d in %.1f s%s", model.path,
                model.device, max_batch_size, report["seconds"],
                f" (skipped: {report['skipped']})" if report.get("skipped") else "")
    return report
