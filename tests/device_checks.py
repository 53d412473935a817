"""Whether CUDA really runs here, measured once for the `gpu`-marked tests, and the
small models the device tests run (built with onnx.helper: no TensorFlow, no data).

``CUDAExecutionProvider`` is listed as available even where CUDA cannot load, so this
asks ``dlinfer doctor``'s probe, which creates and runs a session on it.
"""

from __future__ import annotations

import os

import onnxruntime as ort
from dlinfer.tools.doctor import probe_provider

__all__ = ["CUDA_USABLE", "TENSORRT_USABLE", "conv_classifier", "two_input_model"]

_AVAILABLE = ort.get_available_providers()
CUDA_USABLE = ("CUDAExecutionProvider" in _AVAILABLE
               and probe_provider("CUDAExecutionProvider")["usable"])
TENSORRT_USABLE = (CUDA_USABLE and "TensorrtExecutionProvider" in _AVAILABLE
                   and probe_provider("TensorrtExecutionProvider")["usable"])


def conv_classifier(folder, seed: int, height: int = 8, width: int = 8) -> str:
    """A seeded Conv -> Relu -> pool -> Gemm classifier (NCHW ``input``, 5 logits) built
    with onnx.helper, written to ``folder``; the device tests' model (no TF, no data)."""
    import numpy as np
    import onnx_models

    rng = np.random.default_rng(seed)
    net = onnx_models.ConvNet(rng.standard_normal((4, 3, 3, 3), np.float32),
                              rng.standard_normal(4, np.float32),
                              rng.standard_normal((4, 5), np.float32),
                              rng.standard_normal(5, np.float32))
    path = os.path.join(folder, "conv.onnx")
    with open(path, "wb") as f:
        f.write(onnx_models.build_plain_classifier(net, height, width).SerializeToString())
    return path


def two_input_model(folder, seed: int) -> str:
    """A seeded two-input model (``image`` (N, 4, 4), ``features`` (N, 3)), written to
    ``folder``; see onnx_models.build_two_input."""
    import numpy as np
    import onnx_models

    rng = np.random.default_rng(seed)
    proto = onnx_models.build_two_input(
        (None, 4, 4), (None, 3), rng.standard_normal((16, 5), np.float32),
        rng.standard_normal((3, 5), np.float32), rng.standard_normal(5, np.float32),
        rng.standard_normal((3, 2), np.float32))
    path = os.path.join(folder, "two.onnx")
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path
