"""onnxruntime's offline graph optimization: the ``graph`` mode, and int8's first step."""

from __future__ import annotations

import onnxruntime as ort

from ..errors import OptimizeError

__all__ = ["LEVELS", "PROVIDERS", "offline_optimize"]

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def offline_optimize(src: str, dst: str, level: str = "extended", device: str = "cpu") -> None:
    """Write onnxruntime's optimized version of ``src`` to ``dst``.

    Levels above ``basic`` fuse into onnxruntime's own operators for one provider, so the
    file runs best (or only) where it was made; the caller records ``device``.  ``all``
    adds CPU layout changes tied to this machine's SIMD width, hence ``extended`` by
    default.
    """
    if level not in LEVELS:
        raise OptimizeError(f"graph level must be one of {sorted(LEVELS)}, got {level!r}")
    if device not in PROVIDERS:
        raise OptimizeError(f"device must be one of {sorted(PROVIDERS)}, got {device!r}")
    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise OptimizeError(f"{provider} is not available in this onnxruntime build: a graph "
                            f"optimized for {device} must be made where {device} runs")
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.optimized_model_filepath = dst
    options.log_severity_level = 3
    try:
        ort.InferenceSession(src, options, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise OptimizeError(f"onnxruntime could not optimize {src}: {exc}") from exc
