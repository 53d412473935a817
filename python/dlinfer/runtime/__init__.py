"""Running an ONNX file: :class:`Model` (sessions, IO binding), providers, session options."""

from __future__ import annotations

from .model import Model, TensorInfo
from .session import batching_session_options, session_options

__all__ = ["Model", "TensorInfo", "batching_session_options", "session_options"]
