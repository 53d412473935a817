"""Running an ONNX file: :class:`Model` (sessions, IO binding), providers, session options."""

from __future__ import annotations

from .installed import check_importable

check_importable()  # no onnxruntime (or a clobbered one): the error names the fix

from .model import Model, TensorInfo  # noqa: E402
from .session import batching_session_options, session_options  # noqa: E402

__all__ = ["Model", "TensorInfo", "batching_session_options", "session_options"]
