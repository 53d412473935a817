"""A model's input scaling folded into its first convolution, in the gradient graph only.

Keras models often start with a ``Rescaling`` layer (x / 255): an element-wise Mul (and
an Add of the offset) over the whole input batch before the first Conv, which tf2onnx
exports as Mul, Add, then the Transpose to channels-first.  Conv(W)(s x + o) is
Conv(s W)(x) plus o times each filter's sum, where the convolution reads no padding (or
o is 0), so the gradient graph can drop those passes: on small_convnet at batch 32 they
were 2.8 ms of a 110 ms onnxruntime run.  The folded weights round differently from
scaling the input, well inside the Grad-CAM parity bound (1e-4 of the map's maximum).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .backward_ops import _attr

__all__ = ["fold_input_scaling"]


def fold_input_scaling(graph: Any, keep: set[str]) -> int:
    """Fold each scalar Mul (and scalar Add) before a Conv (through one Transpose) into
    the Conv's weights and bias, in place; tensors named in ``keep`` (the target, the
    tensors differentiated) and graph outputs stay.  Returns how many Convs changed."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output if o}
    uses = Counter(i for n in graph.node for i in n.input if i)
    outputs = {o.name for o in graph.output}

    def scalar(name: str) -> float | None:
        t = initializers.get(name)
        if t is None or int(np.prod(t.dims)) != 1:
            return None
        return float(numpy_helper.to_array(t).reshape(()))

    def private(t: str) -> bool:  # read by one node only, and nobody asks for it
        return uses[t] == 1 and t not in outputs and t not in keep

    def split(node: Any) -> tuple[str, float] | None:
        """(the tensor input, the scalar) of a binary node with one scalar constant."""
        values = [scalar(i) for i in node.input]
        if len(node.input) != 2 or sum(v is not None for v in values) != 1:
            return None
        k = 0 if values[0] is not None else 1
        return node.input[1 - k], float(values[k])  # type: ignore[arg-type]

    folded, constants = 0, set()
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        head, x = conv, conv.input[0]
        node = producer.get(x)
        if node is not None and node.op_type == "Transpose" and private(x):
            head, x = node, node.input[0]
        offset, add = 0.0, None
        node = producer.get(x)
        if node is not None and node.op_type == "Add" and private(x) and split(node):
            add = node
            x, offset = split(node)  # type: ignore[misc]
        mul = producer.get(x)
        found = split(mul) if mul is not None and mul.op_type == "Mul" and private(x) else None
        w = initializers.get(conv.input[1])
        if found is None or w is None or uses[conv.input[1]] != 1:
            continue
        if offset and (_attr(conv, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")
                       or any(_attr(conv, "pads", []))):
            continue  # padding reads zeros, not the offset
        bias_name = conv.input[2] if len(conv.input) > 2 else ""
        bias = initializers.get(bias_name) if bias_name else None
        if offset and bias_name and (bias is None or uses[bias_name] != 1):
            continue  # a bias computed, or shared: left alone
        source, scale = found
        weights = numpy_helper.to_array(w)
        w.CopyFrom(numpy_helper.from_array((weights.astype(np.float64) * scale).astype(
            weights.dtype), w.name))
        if offset:
            shift = offset * weights.astype(np.float64).sum(axis=(1, 2, 3))
            base = (np.zeros(len(shift)) if bias is None
                    else numpy_helper.to_array(bias).astype(np.float64))
            if bias is None:
                bias_name = f"{conv.input[1]}/dlinfer_folded_bias"
                bias = graph.initializer.add()
                del conv.input[2:]  # an empty name where the bias was left out
                conv.input.append(bias_name)
            bias.CopyFrom(numpy_helper.from_array((base + shift).astype(weights.dtype),
                                                  bias_name))
        head.input[0] = source
        graph.node.remove(mul)
        constants.update(mul.input)
        if add is not None:
            graph.node.remove(add)
            constants.update(add.input)
        folded += 1
    # The scale and offset constants, unless something else reads them too.
    read = {i for n in graph.node for i in n.input} | outputs
    unused = [t for t in graph.initializer if t.name in constants and t.name not in read]
    for t in unused:
        graph.initializer.remove(t)
    return folded

