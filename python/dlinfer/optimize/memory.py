"""How many samples one run of a graph may hold so that its activations fit a budget.

onnxruntime holds a run's activations in its memory arena, and the calibrator's graph
(every float tensor feeding a ReduceMin and a ReduceMax, unoptimized) keeps more of them
alive than the plain graph: 64 VGG16 samples at 150x150 per calibration run peaked at
7.3 GB resident.  A run's size in samples is therefore set from the sum of its float
tensors' sizes, as ONNX shape inference gives them for the run's real input shapes: at
most :data:`ACTIVATION_BUDGET` bytes, whatever the sample count or image size.  The sum
over every tensor is an upper bound of what is alive at once, so the peak stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx

__all__ = ["ACTIVATION_BUDGET", "activation_bytes", "per_sample_bytes", "within"]

# The float tensors of one run, summed: 256 MiB keeps a calibration run of VGG16 at
# 150x150 to 4 samples (~60 MB of tensors each) and the MNIST CNNs at the full 64.
ACTIVATION_BUDGET = 256 * 2**20

_FLOATS = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2,
           onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.DOUBLE: 8}


def activation_bytes(path: str, run: Mapping[str, np.ndarray]) -> int | None:
    """The sum of the float tensors' sizes of one run of the graph at ``path`` fed ``run``,
    or None where shape inference cannot size them all (then nothing is known)."""
    proto = onnx.load(path, load_external_data=False)
    for weight in proto.graph.initializer:
        # Shape inference needs a weight's dims, not its values (VGG16's 58 MB of them took
        # it 10 s); small tensors (Reshape's shapes, which data_prop reads) stay.
        if weight.data_type in _FLOATS and weight.ByteSize() > 4096:
            weight.ClearField("raw_data")
            weight.ClearField("float_data")
    for graph_input in proto.graph.input:
        if graph_input.name in run:
            shape = graph_input.type.tensor_type.shape
            del shape.dim[:]
            for size in np.shape(run[graph_input.name]):
                shape.dim.add().dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # noqa: BLE001 - a graph onnx cannot infer leaves the default runs
        return None
    total = 0
    for value in (*inferred.graph.value_info, *inferred.graph.output):
        tensor = value.type.tensor_type
        if tensor.elem_type not in _FLOATS:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if not tensor.HasField("shape") or not all(dims):
            return None  # an unsized float tensor: the sum would understate the run
        total += math.prod(dims) * _FLOATS[tensor.elem_type]
    return total


def per_sample_bytes(path: str, run: Mapping[str, np.ndarray], samples: int) -> float | None:
    """The float tensors' bytes per sample of ``run`` (a run of ``samples`` samples) of the
    graph at ``path``, or None where they cannot be sized."""
    total = activation_bytes(path, run)
    return total / max(1, samples) if total else None


def within(per_sample: float | None, limit: int, budget: int = ACTIVATION_BUDGET) -> int:
    """Samples per run (1 to ``limit``) whose tensors fit ``budget``; ``limit`` unsized."""
    if not per_sample:
        return limit
    return int(max(1, min(limit, budget // per_sample)))
