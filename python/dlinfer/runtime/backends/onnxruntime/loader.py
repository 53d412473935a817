"""How an ONNX file is opened on onnxruntime: the session on the providers a device asks
for, with onnxruntime's own exceptions turned into dlinfer's."""

from __future__ import annotations

import os
from typing import Any

import onnxruntime as ort

from ....errors import ModelLoadError, ProviderUnavailableError
from ... import providers as _providers

__all__ = ["create_session"]


def create_session(
    path: str,
    request: _providers.DeviceRequest,
    options: ort.SessionOptions,
    provider_options: dict[str, Any] | None,
    checked_options: dict[str, Any],
    disabled: list[str] | None = None,
) -> ort.InferenceSession:
    providers = request.providers(provider_options, **checked_options)
    if request.kind != "cpu":
        load_error = _providers.provider_load_error(request.wanted)
        if load_error is not None and request.kind == "auto":
            # CUDA cannot even load: go straight to CPU rather than have onnxruntime
            # try, fail and log errors for a fallback the user asked for.
            providers = [_providers.CPU]
        elif load_error is not None:
            # Same answer as creating the session and checking it, minus the
            # errors onnxruntime would print on the way.
            _providers.check_active(request, [_providers.CPU])
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers,
                                    disabled_optimizers=disabled or None)
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        message = str(exc)
        if request.kind != "cpu" and "provider" in message.lower():
            raise ProviderUnavailableError(
                f"device={request.label!r}: {message}", device=request.label, reason=message
            ) from exc
        size = os.path.getsize(path)
        raise ModelLoadError(
            f"cannot load {path} ({size} bytes) as an ONNX model: "
            f"{message.strip().splitlines()[-1] if message.strip() else type(exc).__name__}"
        ) from exc
