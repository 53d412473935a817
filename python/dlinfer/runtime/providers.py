"""Choosing an execution provider honestly.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available even where CUDA
cannot load; a session asked for it then runs on CPU and only logs a warning,
and ``onnxruntime.get_device()`` says "GPU" regardless.  dlinfer therefore
checks ``session.get_providers()`` after creating every session, and when CUDA
was asked for but is not active, finds out why by loading onnxruntime's CUDA
provider library itself: the loader's error names the missing library.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from ..errors import InputError, ProviderUnavailableError

__all__ = ["DeviceRequest", "cuda_unavailable_reason", "parse_device"]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

_DEVICE_RE = re.compile(r"^(cpu|cuda|tensorrt|auto)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceRequest:
    """A parsed ``device=`` argument."""

    kind: str  # cpu | cuda | tensorrt | auto
    index: int = 0

    @property
    def label(self) -> str:
        return self.kind if self.kind in ("cpu", "auto") else f"{self.kind}:{self.index}"

    def providers(self, provider_options: dict[str, Any] | None = None, *,
                  cuda: dict[str, str] | None = None,
                  tensorrt: dict[str, str] | None = None) -> list[Any]:
        """The provider list to hand to InferenceSession, CPU always last as fallback.

        ``cuda`` and ``tensorrt`` are checked options (runtime.provider_options);
        ``provider_options`` go unchecked to the chosen provider.
        """
        opts = dict(provider_options or {})
        if self.kind == "cpu":
            return [(CPU, opts)] if opts else [CPU]
        on_cuda = {"device_id": self.index, **(cuda or {})}
        if self.kind == "tensorrt":
            return [(TENSORRT, {"device_id": self.index, **(tensorrt or {}), **opts}),
                    (CUDA, on_cuda), CPU]
        return [(CUDA, {**on_cuda, **opts}), CPU]

    @property
    def wanted(self) -> str:
        """The provider that must end up active for the request to be honoured."""
        return {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT, "auto": CUDA}[self.kind]


def parse_device(device: str) -> DeviceRequest:
    match = _DEVICE_RE.match(str(device).strip().lower())
    if not match or (match.group(1) in ("cpu", "auto") and match.group(2)):
        raise InputError(
            f"device must be 'cpu', 'cuda', 'cuda:N', 'tensorrt', 'tensorrt:N' or 'auto', "
            f"got {device!r}"
        )
    return DeviceRequest(match.group(1), int(match.group(2) or 0))


def _provider_library(name: str) -> str:
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    return os.path.join(capi, f"libonnxruntime_providers_{name}.so")


def required_cuda() -> str:
    """The CUDA/cuDNN versions this onnxruntime build needs, as it states them."""
    try:
        from onnxruntime.capi import build_and_package_info as info

        cuda = getattr(info, "cuda_version", "") or "unknown"
        cudnn = getattr(info, "cudnn_version", "") or "9"
    except ImportError:  # a CPU-only build has no such module
        return "a CUDA-enabled onnxruntime build (pip install onnxruntime-gpu)"
    return f"CUDA {cuda}.x and cuDNN {cudnn}.x"


def provider_load_error(provider: str = CUDA) -> str | None:
    """Why onnxruntime cannot even load ``provider``, or None if nothing stops it.

    Loading the provider's shared library ourselves gives the dynamic loader's own
    message (e.g. ``libcublasLt.so.13: cannot open shared object file``), which is
    the line onnxruntime only logs.
    """
    if provider not in ort.get_available_providers():
        return (
            f"this onnxruntime build ({ort.__version__}) has no {provider}; "
            "install onnxruntime-gpu"
        )
    lib = _provider_library("tensorrt" if provider == TENSORRT else "cuda")
    if os.name == "posix" and os.path.exists(lib):
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_LOCAL)
        except OSError as exc:
            return (
                f"onnxruntime could not load {os.path.basename(lib)}: {exc}. "
                f"onnxruntime {ort.__version__} needs {required_cuda()}"
            )
    return None


def cuda_unavailable_reason(provider: str = CUDA) -> str:
    """Why ``provider`` is not active here, in onnxruntime's and the loader's words."""
    load_error = provider_load_error(provider)
    if load_error:
        return load_error
    return (
        f"{provider} loaded but onnxruntime did not activate it: no usable GPU or "
        f"driver was found (onnxruntime {ort.__version__} needs {required_cuda()})"
    )


def check_active(request: DeviceRequest, active: list[str]) -> None:
    """Raise unless ``active`` (session.get_providers()) honours an explicit request."""
    if request.kind in ("cpu", "auto"):
        return
    if active and active[0] == request.wanted:
        return
    reason = cuda_unavailable_reason(request.wanted)
    raise ProviderUnavailableError(
        f"device={request.label!r} was requested but onnxruntime would run on "
        f"{active[0] if active else 'nothing'}: {reason}",
        device=request.label,
        reason=reason,
    )


# What onnxruntime.preload_dlls() printed, kept for `dlinfer doctor` instead of stdout.
PRELOAD_OUTPUT = ""


def preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* pip wheels, when they are installed.

    onnxruntime >= 1.21 provides ``preload_dlls`` for the ``onnxruntime-gpu[cuda,cudnn]``
    layout; without those wheels it is a no-op apart from a warning we do not want.
    """
    if not hasattr(ort, "preload_dlls"):
        return
    try:
        import importlib.util

        if importlib.util.find_spec("nvidia") is None:
            return
    except (ImportError, ValueError):
        return
    global PRELOAD_OUTPUT
    captured = io.StringIO()
    try:
        # preload_dlls prints its warnings (other CUDA versions found, e.g. torch's);
        # on stdout they would corrupt `dlinfer doctor --json` and `info --json`.
        with contextlib.redirect_stdout(captured):
            ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - a failed preload shows up as an inactive provider
        captured.write(f"preload_dlls failed: {type(exc).__name__}: {exc}\n")
    PRELOAD_OUTPUT += captured.getvalue()
