"""CLI flags for the runtime backend (``--backend``) and the CUDA and TensorRT provider
options (``info``, ``predict``, ``bench``, ``serve``, ``explain``; ``--backend`` alone on
``verify`` and ``ray``; ``optimize`` has its own, the backend it gates on).

Each flag is checked at parse time by the same rule as ``Model(cuda=..., tensorrt=...)``
(:mod:`dlinfer.runtime.provider_options`), so a bad value fails with argparse's error
(exit 2) naming the flag, before a model is loaded.  ``--cuda-option KEY=VALUE`` and
``--trt-option KEY=VALUE`` reach every other option by onnxruntime's name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InputError, ProviderOptionsError
from ..runtime import provider_options as po
from ..runtime.backends import parse_backend
from .args import validating

__all__ = ["add_backend_flag", "add_provider_flags", "provider_kwargs"]

# flag -> (provider, onnxruntime option name, help)
_VALUE_FLAGS = {
    "--cuda-conv-algo-search": ("cuda", "cudnn_conv_algo_search",
                                "cuDNN convolution algorithm search: HEURISTIC (dlinfer's "
                                "default: no per-shape search on live traffic), EXHAUSTIVE "
                                "or DEFAULT"),
    "--gpu-mem-limit": ("cuda", "gpu_mem_limit", "CUDA memory arena limit in bytes"),
    "--arena-extend-strategy": ("cuda", "arena_extend_strategy",
                                "kNextPowerOfTwo or kSameAsRequested"),
    "--trt-engine-cache": ("tensorrt", "trt_engine_cache_path",
                           "TensorRT engine and timing cache folder "
                           "(default ~/.cache/dlinfer/tensorrt)"),
    "--trt-max-batch": ("tensorrt", "max_batch",
                        "one TensorRT optimization profile for batch sizes 1..N "
                        "(serve: --max-batch-size by default)"),
}
_SWITCHES = {
    "--cuda-graph": ("cuda", "enable_cuda_graph", "capture the model as a CUDA graph"),
    "--trt-fp16": ("tensorrt", "trt_fp16_enable", "let TensorRT run in float16"),
}
_TABLES = {"cuda": po.CUDA_OPTIONS, "tensorrt": po.TENSORRT_OPTIONS}


def _value(table: Mapping[str, po.Check], name: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        try:
            table[name](name, text)
        except ProviderOptionsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return validating(convert, name)


def _key_value(provider: str) -> Callable[[str], tuple[str, str]]:
    table = _TABLES[provider]

    def convert(text: str) -> tuple[str, str]:
        key, sep, value = str(text).partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"must read KEY=VALUE, got {text!r}")
        try:
            po.check_options(provider, table, {key.strip(): value})
        except ProviderOptionsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return key.strip(), value

    return validating(convert, "KEY=VALUE")


def _backend(text: str) -> str:
    try:
        return parse_backend(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _backends(text: str) -> str:
    names = [b.strip() for b in str(text).split(",") if b.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one backend, got {text!r}")
    return ",".join(dict.fromkeys(_backend(b) for b in names))


_BACKEND_HELP = ("onnxruntime (every device), openvino (CPU; pip install "
                 "'dlinfer[openvino]') or auto (the faster here, measured once and cached); "
                 "default: {default}; see docs/runtime.md")


def add_backend_flag(parser: argparse.ArgumentParser, several: bool = False,
                     default: str = "$DLINFER_BACKEND, else onnxruntime") -> None:
    """``--backend`` (``several``: a comma-separated list, as ``bench`` compares them);
    ``default`` says what the command runs without it (the flag's value is then None)."""
    parser.add_argument(
        "--backend", type=validating(_backends if several else _backend, "backend"),
        default=None,
        help=("comma-separated, compared side by side: " if several else "")
        + _BACKEND_HELP.format(default=default))


def add_provider_flags(parser: argparse.ArgumentParser, several_backends: bool = False) -> None:
    """Add ``--backend`` and the provider option flags to a subcommand's parser."""
    add_backend_flag(parser, several_backends)
    group = parser.add_argument_group(
        "GPU provider options", "for --device cuda, tensorrt or auto; see docs/gpu.md")
    for flag, (provider, name, help) in _VALUE_FLAGS.items():
        group.add_argument(flag, type=_value(_TABLES[provider], name), default=None, help=help)
    for flag, (_, _, help) in _SWITCHES.items():
        group.add_argument(flag, action="store_true", help=help)
    group.add_argument("--cuda-option", action="append", type=_key_value("cuda"), default=[],
                       metavar="KEY=VALUE", help="any other CUDA provider option (repeatable)")
    group.add_argument("--trt-option", action="append", type=_key_value("tensorrt"),
                       default=[], metavar="KEY=VALUE",
                       help="any other TensorRT provider option (repeatable)")


def _collected(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"cuda": {}, "tensorrt": {}}
    for flag, (provider, name, _) in _VALUE_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            out[provider][name] = value
    for flag, (provider, name, _) in _SWITCHES.items():
        if getattr(args, flag[2:].replace("-", "_"), False):
            out[provider][name] = True
    for provider, dest in (("cuda", "cuda_option"), ("tensorrt", "trt_option")):
        out[provider].update(getattr(args, dest, None) or [])
    return out


def provider_kwargs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``cuda=``/``tensorrt=`` keyword arguments from the parsed flags (only those given).

    Model refuses options for a provider its device does not use, by name; ``bench``
    passes them to its non-CPU devices only.  ``backend`` too, where one was asked for
    (else Model's default: $DLINFER_BACKEND, or onnxruntime).
    """
    kwargs: dict[str, Any] = {k: v for k, v in _collected(args).items() if v}
    if getattr(args, "backend", None) is not None:
        kwargs["backend"] = args.backend
    return kwargs
