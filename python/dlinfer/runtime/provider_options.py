"""Named options for onnxruntime's CUDA and TensorRT providers, checked before loading.

``Model(path, device="cuda", cuda={...}, tensorrt={...})`` takes onnxruntime's own
option names (so its documentation applies), checks each name and value here and
turns them into the strings onnxruntime parses.  An unknown name or a bad value raises
:class:`~dlinfer.ProviderOptionsError` naming it, before anything is loaded: onnxruntime
itself ignores an unknown key, and a misspelt one would silently do nothing.

The defaults suit serving, where a :class:`~dlinfer.Batcher` forms every batch size from
1 to its maximum and each new size is a new input shape:

- CUDA: ``cudnn_conv_algo_search="HEURISTIC"``.  onnxruntime's default, ``EXHAUSTIVE``,
  benchmarks every cuDNN convolution algorithm the first time it sees each input shape,
  so the first request at each batch size waits for a search.
- TensorRT: the engine and timing caches are on, in ``$XDG_CACHE_HOME/dlinfer/tensorrt``
  (``~/.cache/...``), so an engine is built once per model and machine rather than at
  every start; ``max_batch=N`` (a dlinfer key) builds one optimization profile for batch
  sizes 1..N instead of an engine per batch size.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ProviderOptionsError

__all__ = ["CUDA_DEFAULTS", "CUDA_OPTIONS", "TENSORRT_OPTIONS", "check_options", "cuda_options",
           "for_device", "tensorrt_options", "tensorrt_profile"]

Check = Callable[[str, Any], str]  # (option name, value) -> the string onnxruntime parses


def _bool(true: str, false: str) -> Check:
    def check(name: str, value: Any) -> str:
        if isinstance(value, bool):
            return true if value else false
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return true
        if text in ("0", "false", "no", "off"):
            return false
        raise ProviderOptionsError(f"provider option {name!r} must be true or false, got {value!r}")
    return check


def _choice(*choices: str) -> Check:
    def check(name: str, value: Any) -> str:
        for c in choices:
            if str(value).strip().lower() == c.lower():
                return c
        raise ProviderOptionsError(
            f"provider option {name!r} must be one of {', '.join(choices)}; got {value!r}")
    return check


def _int(low: int, high: int | None = None) -> Check:
    def check(name: str, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ProviderOptionsError(
                f"provider option {name!r} must be an integer, got {value!r}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ProviderOptionsError(
                f"provider option {name!r} must be an integer, got {value!r}") from None
        if number < low or (high is not None and number > high):
            bounds = f">= {low}" if high is None else f"in {low}..{high}"
            raise ProviderOptionsError(f"provider option {name!r} must be {bounds}, got {number}")
        return str(number)
    return check


def _directory(name: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ProviderOptionsError(f"provider option {name!r} must be a directory path, "
                                   f"got {value!r}")
    path = os.path.abspath(os.path.expanduser(os.fspath(value)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ProviderOptionsError(f"provider option {name!r}: {path} exists and is not a "
                                   "directory")
    return path


_SHAPES = re.compile(r"^[^:,]+:\d+(x\d+)*(,[^:,]+:\d+(x\d+)*)*$")


def _shapes(name: str, value: Any) -> str:
    text = str(value).strip()
    if not _SHAPES.match(text):
        raise ProviderOptionsError(
            f"provider option {name!r} must read 'input:1x28x28x1[,other:...]', got {value!r}")
    return text


CUDA_OPTIONS: dict[str, Check] = {
    "cudnn_conv_algo_search": _choice("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
    "gpu_mem_limit": _int(1),  # bytes
    "arena_extend_strategy": _choice("kNextPowerOfTwo", "kSameAsRequested"),
    "enable_cuda_graph": _bool("1", "0"),
    "cudnn_conv_use_max_workspace": _bool("1", "0"),
    "cudnn_conv1d_pad_to_nc1d": _bool("1", "0"),
    "do_copy_in_default_stream": _bool("1", "0"),
    "use_tf32": _bool("1", "0"),
    "prefer_nhwc": _bool("1", "0"),
    "tunable_op_enable": _bool("1", "0"),
    "tunable_op_tuning_enable": _bool("1", "0"),
}
CUDA_DEFAULTS = {"cudnn_conv_algo_search": "HEURISTIC"}

# onnxruntime's Python binding parses TensorRT's booleans as "True"/"False" only.
_TRT_BOOL = _bool("True", "False")
TENSORRT_OPTIONS: dict[str, Check] = {
    "trt_engine_cache_enable": _TRT_BOOL,
    "trt_engine_cache_path": _directory,
    "trt_timing_cache_enable": _TRT_BOOL,
    "trt_timing_cache_path": _directory,
    "trt_fp16_enable": _TRT_BOOL,
    "trt_int8_enable": _TRT_BOOL,
    "trt_cuda_graph_enable": _TRT_BOOL,
    "trt_max_workspace_size": _int(1),
    "trt_builder_optimization_level": _int(0, 5),
    "trt_profile_min_shapes": _shapes,
    "trt_profile_opt_shapes": _shapes,
    "trt_profile_max_shapes": _shapes,
    "max_batch": _int(1, 65536),  # dlinfer's: one profile for batch sizes 1..max_batch
}


def check_options(kind: str, table: Mapping[str, Check],
                  options: Mapping[str, Any] | None) -> dict[str, str]:
    """``options`` for provider ``kind`` (its names in ``table``) checked and encoded."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ProviderOptionsError(f"{kind}= must be a dict of option names to values, "
                                   f"got {type(options).__name__}")
    out = {}
    for name, value in options.items():
        if name == "device_id":
            raise ProviderOptionsError(
                f"{kind}= option 'device_id': choose the GPU with device='{kind}:N' instead")
        check = table.get(name)
        if check is None:
            raise ProviderOptionsError(
                f"unknown {kind} provider option {name!r}; dlinfer knows "
                f"{', '.join(sorted(table))} (onnxruntime would ignore it silently)")
        out[name] = check(name, value)
    return out


def cuda_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    """``cuda=`` checked and encoded for onnxruntime, on top of :data:`CUDA_DEFAULTS`."""
    return {**CUDA_DEFAULTS, **check_options("cuda", CUDA_OPTIONS, options)}


def cache_root() -> str:
    """dlinfer's cache folder: ``$XDG_CACHE_HOME/dlinfer`` (``~/.cache/dlinfer``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dlinfer")


def default_cache_dir() -> str:
    return os.path.join(cache_root(), "tensorrt")


def tensorrt_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    """``tensorrt=`` checked and encoded, caches on by default; ``max_batch`` stays in.

    ``max_batch`` needs the model's inputs: :func:`tensorrt_profile` turns it into
    onnxruntime's profile options once they are known.
    """
    out = check_options("tensorrt", TENSORRT_OPTIONS, options)
    cache = default_cache_dir()
    out.setdefault("trt_engine_cache_enable", "True")
    out.setdefault("trt_engine_cache_path", cache)
    out.setdefault("trt_timing_cache_enable", "True")
    out.setdefault("trt_timing_cache_path", out["trt_engine_cache_path"])
    return out


def tensorrt_profile(options: dict[str, str],
                     inputs: Sequence[tuple[str, Sequence[int | None]]]) -> dict[str, str]:
    """``options`` with ``max_batch`` replaced by min/opt/max profile shapes.

    The batch axis (a dynamic first axis) runs 1..max_batch, optimized for max_batch;
    every other axis must be fixed, or the profile cannot be written for it.
    """
    options = dict(options)
    max_batch = options.pop("max_batch", None)
    if max_batch is None:
        return options
    if any(k in options for k in ("trt_profile_min_shapes", "trt_profile_max_shapes")):
        raise ProviderOptionsError("tensorrt= takes max_batch or trt_profile_*_shapes, not both")
    low, high = [], []
    for name, shape in inputs:
        rest = list(shape[1:])
        if not shape or shape[0] is not None or any(d is None for d in rest):
            raise ProviderOptionsError(
                f"tensorrt max_batch needs inputs with a dynamic batch axis and fixed other "
                f"axes; input {name!r} has shape {tuple(shape)}: give trt_profile_min_shapes, "
                "trt_profile_opt_shapes and trt_profile_max_shapes instead")
        dims = "x".join(str(d) for d in rest)
        low.append(f"{name}:1" + (f"x{dims}" if dims else ""))
        high.append(f"{name}:{max_batch}" + (f"x{dims}" if dims else ""))
    options["trt_profile_min_shapes"] = ",".join(low)
    options["trt_profile_opt_shapes"] = ",".join(high)
    options["trt_profile_max_shapes"] = ",".join(high)
    return options


def for_device(kind: str, path: str, cuda: Mapping[str, Any] | None,
               tensorrt: Mapping[str, Any] | None) -> dict[str, dict[str, str] | None]:
    """The checked ``cuda``/``tensorrt`` keyword arguments of ``DeviceRequest.providers``.

    ``kind`` is the parsed device's; options for a provider the device will not use are
    refused rather than ignored (``auto`` may use CUDA, so it takes ``cuda=``).
    """
    if kind == "cpu" and (cuda or tensorrt):
        raise ProviderOptionsError(
            f"{'cuda' if cuda else 'tensorrt'}= options were given for device='cpu'; they "
            "apply to device='cuda', 'tensorrt' or 'auto'")
    if tensorrt and kind != "tensorrt":
        raise ProviderOptionsError(
            f"tensorrt= options were given for device={kind!r}; use device='tensorrt'")
    if kind == "cpu":
        return {"cuda": None, "tensorrt": None}
    trt = None
    if kind == "tensorrt":
        trt = tensorrt_options(tensorrt)
        if "max_batch" in trt:
            trt = tensorrt_profile(trt, _input_shapes(path))
    return {"cuda": cuda_options(cuda), "tensorrt": trt}


def _input_shapes(path: str) -> list[tuple[str, list[int | None]]]:
    """Input names and shapes (None where dynamic) from a bare, unoptimized CPU session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return [(i.name, [d if isinstance(d, int) and d >= 0 else None for d in i.shape])
            for i in session.get_inputs()]
