"""Whether CUDA really runs here, measured once for the `gpu`-marked tests.

``CUDAExecutionProvider`` is listed as available even where CUDA cannot load, so this
asks ``dlinfer doctor``'s probe, which creates and runs a session on it.
"""

from __future__ import annotations

import onnxruntime as ort
from dlinfer.tools.doctor import probe_provider

__all__ = ["CUDA_USABLE", "TENSORRT_USABLE"]

_AVAILABLE = ort.get_available_providers()
CUDA_USABLE = ("CUDAExecutionProvider" in _AVAILABLE
               and probe_provider("CUDAExecutionProvider")["usable"])
TENSORRT_USABLE = (CUDA_USABLE and "TensorrtExecutionProvider" in _AVAILABLE
                   and probe_provider("TensorrtExecutionProvider")["usable"])
