"""Which runtime executes a :class:`~dlinfer.Model`: one folder per backend, each with a
``loader`` (how a model is opened) and, where dlinfer wraps it, a ``runner`` (how it runs).

- ``onnxruntime``: every device (CPU, CUDA, TensorRT); always installed (docs/install.md).
- ``openvino``: CPU, through OpenVINO's own ONNX reader and CPU plugin, which uses the
  AMX/VNNI matrix engines of current Xeons for int8 and bfloat16; the extra
  ``dlinfer[openvino]``.
- ``auto``: the fastest of the installed backends for this file on this CPU, measured
  once and cached (:mod:`dlinfer.runtime.backends.choice`).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from ..._optional import import_optional
from ...errors import InputError

__all__ = ["BACKENDS", "available_backends", "import_openvino", "parse_backend"]

BACKENDS = ("onnxruntime", "openvino")


def parse_backend(backend: str) -> str:
    """``backend`` normalized: ``"auto"``, ``"onnxruntime"`` or ``"openvino"``."""
    name = str(backend).strip().lower().replace("-", "")
    name = {"ort": "onnxruntime", "ov": "openvino"}.get(name, name)
    if name not in ("auto", *BACKENDS):
        raise InputError(f"backend must be 'auto', 'onnxruntime' or 'openvino', got {backend!r}")
    return name


def available_backends() -> list[str]:
    """The backends installed here, onnxruntime first (checked without importing them)."""
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def import_openvino() -> ModuleType:
    """``openvino``, or :class:`~dlinfer.MissingExtraError` naming ``dlinfer[openvino]``."""
    return import_optional("openvino", "openvino", "backend='openvino'")
