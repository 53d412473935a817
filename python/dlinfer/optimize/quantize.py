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
- A convolution with a shallow reduction (the first layer: 1 or 3 input channels
  times a 3x3 kernel) is a poor int8 GEMM: packing costs more than the multiplies save.
  On the MNIST CNN at batch 32 the first QLinearConv took 445 us against 72-86 us for
  onnxruntime's float NCHWc kernel, which has a path made for few input channels.  Such
  convolutions stay float32 (:func:`shallow_nodes`), with the activations and pooling
  up to the next deep layer, so the int8 part starts after the pooling.
- onnxruntime's ``QDQPropagationTransformer`` then moves that QuantizeLinear above the
  MaxPool (max commutes with quantization), which lands on onnxruntime's generic uint8
  NCHW MaxPool: 3.3 ms instead of 26 us.  The output file asks dlinfer's runtime to
  disable that transformer (``dlinfer.session`` metadata, read by
  :func:`dlinfer.runtime.session.disabled_optimizers`); with it disabled the MNIST CNN
  ran 360 us against 572 us for float32 at batch 32.
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
from typing import Any

import numpy as np

from ..errors import OptimizeError
from .graph import offline_optimize

__all__ = ["METHODS", "SHALLOW_DEPTH", "has_vnni", "int8_settings", "quantize_int8",
           "shallow_nodes"]

METHODS = ("minmax", "entropy", "percentile")
# The optimizer a file with float32 layers in front of int8 ones must run without.
_PROPAGATION = ("QDQPropagationTransformer",)
# Convolutions reducing over fewer than this many products per output (input channels
# per group x kernel area) stay float32: 27 (RGB 3x3) and 9 (gray 3x3) measured slower
# in int8; the next layers of the zoo CNNs (288 and up) measured 2-3x faster.
SHALLOW_DEPTH = 32
# What may follow a shallow convolution and still run float32 with it: cheap layers
# that feed the next deep layer, and would otherwise run in a slow uint8 NCHW kernel.
_FOLLOWERS = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                        "MaxPool", "AveragePool", "BatchNormalization"})
# Calibration runs in slices of at most this many samples, each collected on its own
# (Reader): MinMax keeps only running extremes and the histograms only their counts, so
# the slice bounds memory without changing the ranges.  A slice holds every activation of
# its samples at once, so large inputs take fewer (memory.within).
_CALIBRATION_BATCH = 64


def has_vnni() -> bool:
    """Whether this CPU has integer dot-product instructions that do not saturate."""
    from ..tools.doctor import cpu_info

    return any("vnni" in flag for flag in cpu_info()["simd"])


def int8_settings(method: str = "minmax", per_channel: bool = True,
                  reduce_range: bool | None = None, keep_shallow: bool = True
                  ) -> dict[str, Any]:
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
            "keep_shallow": bool(keep_shallow),
            "cpu": {"arch": platform.machine(), "vnni": vnni}}


def shallow_nodes(proto: Any) -> list[str]:
    """Names of the nodes that stay float32: shallow convolutions and their followers."""
    weights = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    keep: list[str] = []
    for node in proto.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        dims = weights.get(node.input[1])
        if dims is None or len(dims) < 3 or int(np.prod(dims[1:])) >= SHALLOW_DEPTH:
            continue
        keep.append(node.name)
        current = node
        while True:
            after = consumers.get(current.output[0], [])
            if len(after) != 1 or after[0].op_type not in _FOLLOWERS:
                break
            current = after[0]
            keep.append(current.name)
    return keep


def _reader(batch: dict[str, np.ndarray], axes: Any = None,
            size: int = _CALIBRATION_BATCH) -> Any:
    """Calibration runs cut on each input's batch axis (a fixed batch of 1: one sample a
    run; inputs without a batch axis whole in every run; see runtime.batch_axis)."""
    from onnxruntime.quantization import CalibrationDataReader

    from ..runtime.batch_axis import split

    class Reader(CalibrationDataReader):
        # quantize_static calls collect_data once per set_range window (its
        # CalibStridedMinMax option, 1 run a window, below): the calibrator then turns
        # each run's activations into ranges or histogram counts and drops them before
        # the next run, where one collect_data call would hold every activation of
        # every sample at once (the Entropy and Percentile histograms).
        def __init__(self) -> None:
            self.runs = self._runs()

        def __len__(self) -> int:
            return sum(1 for _ in self._runs())

        def set_range(self, start_index: int, end_index: int) -> None:
            self.runs = itertools.islice(self._runs(), start_index, end_index)

        def _runs(self) -> Any:
            if axes is None:
                count = len(next(iter(batch.values())))
                return ({name: x[start:start + size] for name, x in batch.items()}
                        for start in range(0, count, size))
            return split(batch, axes, size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.runs, None)

        def rewind(self) -> None:
            self.runs = self._runs()

    return Reader()


def quantize_int8(src: str, workdir: str, batch: dict[str, np.ndarray],
                  settings: dict[str, Any], axes: Any = None) -> str:
    """Quantize ``src`` calibrated on ``batch``; returns the path of the QDQ model.

    ``axes``: each input's batch axis (:mod:`dlinfer.runtime.batch_axis`), default axis 0.
    Records in ``settings`` the nodes kept float32 and the onnxruntime optimizers the
    result must run without (``float_nodes``, ``disabled_optimizers``).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .memory import per_sample_bytes, within
    from .opset import upgrade_for_per_channel

    first = _reader(batch, axes).get_next()
    src = upgrade_for_per_channel(src, workdir, first, settings)
    pre = os.path.join(workdir, "basic.onnx")
    offline_optimize(src, pre, level="basic")
    keep_float = shallow_nodes(onnx.load(pre)) if settings.get("keep_shallow", True) else []
    settings["float_nodes"] = keep_float
    settings["disabled_optimizers"] = list(_PROPAGATION) if keep_float else []
    out = os.path.join(workdir, "int8.onnx")
    size = within(per_sample_bytes(pre, first, _samples(first, axes)), _CALIBRATION_BATCH)
    settings["calibration_run_samples"] = size
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings["calibration"]]
    # quantize_static logs advice through the root logger (run quant_pre_process, which
    # needs sympy); dlinfer ran its own basic optimization instead, so the advice is noise.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        quantize_static(
            pre, out, _reader(batch, axes, size), quant_format=QuantFormat.QDQ,
            per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=method, nodes_to_exclude=keep_float,
            # Symmetric weights let int8 kernels skip the weight zero-point term.
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                           "CalibStridedMinMax": 1})
    except Exception as exc:  # onnxruntime's tools raise whatever their graph walk hits
        raise OptimizeError(f"onnxruntime could not quantize {src}: {exc}") from exc
    finally:
        logging.disable(previous)
    _compact(out)
    return out


def _samples(run: dict[str, np.ndarray], axes: Any) -> int:
    """How many samples one calibration run holds."""
    if axes is None:
        return len(next(iter(run.values())))
    from ..runtime.batch_axis import sample_count

    return sample_count(run, axes)


def _compact(path: str) -> None:
    """Drop what the quantizer adds that nothing reads: the names of its Q/DQ nodes
    (their tensors keep theirs) and the shapes it annotated, which onnxruntime infers
    again.  On the 93k-parameter MNIST CNNs that is 2 KB of a 113 KB file: the
    difference between 30.0% and 29.4% of the float32 size."""
    import onnx

    proto = onnx.load(path)
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            node.name = ""
    del proto.graph.value_info[:]
    onnx.save(proto, path)
