"""What a model must be before dlinfer converts it: float32, not yet quantized."""

from __future__ import annotations

from collections import Counter

import onnx

from ..errors import OptimizeError

__all__ = ["QUANTIZED_OPS", "check_float_model", "op_counts"]

# Any of these means the graph was quantized already; quantizing or halving it again
# would stack a second rounding onto the first.
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
    "QLinearMatMul", "QLinearAdd", "QLinearMul", "ConvInteger", "MatMulInteger",
    "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
})
_LOW_PRECISION = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8,
                  onnx.TensorProto.UINT8}


def op_counts(proto: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in proto.graph.node)


def check_float_model(proto: onnx.ModelProto, path: str) -> None:
    """Refuse a model that is already quantized or already stores float16/int8 weights."""
    quantized = sorted(set(op_counts(proto)) & QUANTIZED_OPS)
    if quantized:
        raise OptimizeError(f"{path} is already quantized (it has {', '.join(quantized)}); "
                            "optimize the float32 model it came from instead")
    low = sorted({onnx.TensorProto.DataType.Name(t.data_type) for t in proto.graph.initializer
                  if t.data_type in _LOW_PRECISION and len(t.dims) > 1})
    if low:
        raise OptimizeError(f"{path} already stores {', '.join(low)} weights; optimize the "
                            "float32 model it came from instead")
