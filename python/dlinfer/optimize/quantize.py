"""int8: onnxruntime's static QDQ quantization, with settings chosen for this CPU.

What was measured on the exported MNIST CNN (2 shared cores) decided the defaults:

- QDQ S8S8 per-channel ran at 0.45-0.75x float32; U8S8 (uint8 activations, int8
  weights) after onnxruntime's *basic* graph optimization ran 1.18-1.25x faster with
  unchanged accuracy.
- Optimizing at higher levels before quantizing cost one MobileNet 5 accuracy points
  (onnxruntime#11576), so only the basic level runs first.
- Dynamic quantization sends convolutions to the slow ConvInteger kernel
  (onnxruntime#12854): static only.
- Without VNNI, U8S8 multiplies go through an instruction that saturates, so
  ``reduce_range`` (7-bit weights) is on there.
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

import numpy as np

from ..errors import OptimizeError
from .graph import offline_optimize

__all__ = ["METHODS", "has_vnni", "int8_settings", "quantize_int8"]

METHODS = ("minmax", "entropy", "percentile")
# Calibration runs in slices of this many samples: MinMax keeps only running extremes,
# so the slice size bounds memory without changing the ranges.
_CALIBRATION_BATCH = 64


def has_vnni() -> bool:
    """Whether this CPU has integer dot-product instructions that do not saturate."""
    from ..tools.doctor import cpu_info

    return any("vnni" in flag for flag in cpu_info()["simd"])


def int8_settings(method: str = "minmax", per_channel: bool = True,
                  reduce_range: bool | None = None) -> dict[str, Any]:
    """The quantization settings for this machine, as recorded in the output's spec."""
    if method not in METHODS:
        raise OptimizeError(f"calibration method must be one of {METHODS}, got {method!r}")
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    vnni = has_vnni()
    if reduce_range is None:
        reduce_range = x86 and not vnni
    return {"format": "QDQ", "activations": "uint8", "weights": "int8",
            "per_channel": bool(per_channel), "reduce_range": bool(reduce_range),
            "calibration": method, "preoptimization": "basic",
            "cpu": {"arch": platform.machine(), "vnni": vnni}}


def _reader(batch: dict[str, np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.count = len(next(iter(batch.values())))
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= self.count:
                return None
            stop = self.start + _CALIBRATION_BATCH
            feed = {name: x[self.start:stop] for name, x in batch.items()}
            self.start = stop
            return feed

        def rewind(self) -> None:
            self.start = 0

    return Reader()


def quantize_int8(src: str, workdir: str, batch: dict[str, np.ndarray],
                  settings: dict[str, Any]) -> str:
    """Quantize ``src`` calibrated on ``batch``; returns the path of the QDQ model."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    pre = os.path.join(workdir, "basic.onnx")
    offline_optimize(src, pre, level="basic")
    out = os.path.join(workdir, "int8.onnx")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings["calibration"]]
    # quantize_static logs advice through the root logger (run quant_pre_process, which
    # needs sympy); dlinfer ran its own basic optimization instead, so the advice is noise.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        quantize_static(
            pre, out, _reader(batch), quant_format=QuantFormat.QDQ,
            per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=method,
            # Symmetric weights let int8 kernels skip the weight zero-point term.
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    except Exception as exc:  # onnxruntime's tools raise whatever their graph walk hits
        raise OptimizeError(f"onnxruntime could not quantize {src}: {exc}") from exc
    finally:
        logging.disable(previous)
    return out
