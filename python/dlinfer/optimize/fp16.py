"""float16 weights and compute, with float32 inputs and outputs unless asked otherwise."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..errors import OptimizeError
from .checks import op_counts

__all__ = ["FLOAT16_MAX", "float16_overflow", "to_fp16"]

FLOAT16_MAX = 65504.0  # the largest finite float16


def to_fp16(proto: onnx.ModelProto, path: str, keep_io_types: bool = True
            ) -> tuple[onnx.ModelProto, dict]:
    """``proto`` converted with onnxruntime's float16 converter.

    ``keep_io_types``: float32 inputs and outputs (Casts at the edges), so callers do not
    change; False makes them float16 too, which halves what crosses to a GPU.

    Returns the model and the settings to record.  Ops with no float16 kernels in
    onnxruntime (the converter's block list) stay float32 behind Casts; a model made
    only of such ops is refused, since the result would be float32 with extra Casts.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    ops = op_counts(proto)
    blocked = sorted(set(ops) & set(DEFAULT_OP_BLOCK_LIST))
    # Shape plumbing computes nothing in floating point: it does not count as converted.
    inert = {"Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose",
             "Gather", "Concat", "Slice", "Cast", "Constant", "ConstantOfShape"}
    compute = sorted(set(ops) - set(blocked) - inert)
    if not compute:
        raise OptimizeError(
            f"{path}: no op would run in float16 (its ops: {', '.join(sorted(ops))}"
            + (f"; {', '.join(blocked)} have no float16 kernels" if blocked else "") + ")")
    try:
        converted = convert_float_to_float16(proto, keep_io_types=keep_io_types)
    except Exception as exc:  # the converter raises whatever its graph walk hits
        raise OptimizeError(f"float16 conversion of {path} failed: {exc}") from exc
    return converted, {"keep_io_types": bool(keep_io_types), "float32_ops": blocked,
                       "converter": "onnxruntime.transformers.float16"}


def float16_overflow(proto: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> list[str]:
    """A note naming the first node, in graph order, whose float32 output on ``feed`` lies
    beyond float16's range (where a float16 graph turns it into inf); [] when none does
    or the float32 graph's tensors cannot be read."""
    from onnx import numpy_helper

    from ..verification.per_layer import onnxruntime_tensors

    for weight in proto.graph.initializer:  # the converter clamps these to float16's range
        w = numpy_helper.to_array(weight)
        if w.dtype.kind == "f" and w.size and float(np.nanmax(np.abs(w))) > FLOAT16_MAX:
            return [f"float16 overflow: weight {weight.name!r} holds values up to "
                    f"{float(np.nanmax(np.abs(w))):.3g}, beyond float16's largest "
                    f"{FLOAT16_MAX:g}; keep its node float32 or use int8"]
    names = [out for node in proto.graph.node for out in node.output if out]
    try:
        tensors = onnxruntime_tensors(proto, dict(feed), names)
    except Exception:  # noqa: BLE001 - a diagnosis that cannot run leaves the gate's verdict
        return []
    for node in proto.graph.node:
        for out in node.output:
            t = tensors.get(out)
            if t is None or t.dtype.kind != "f" or not t.size:
                continue
            peak = float(np.nanmax(np.abs(t)))
            if peak > FLOAT16_MAX:
                verb = "holds" if node.op_type == "Constant" else "gives"
                return [f"float16 overflow: node {node.name or out!r} ({node.op_type}) {verb} "
                        f"values up to {peak:.3g} in float32, beyond float16's largest "
                        f"{FLOAT16_MAX:g} (tensor {out!r}); keep it float32 or use int8"]
    return []
