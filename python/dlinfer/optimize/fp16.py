"""float16 weights and compute, with float32 inputs and outputs unless asked otherwise."""

from __future__ import annotations

import onnx

from ..errors import OptimizeError
from .checks import op_counts

__all__ = ["to_fp16"]


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
