"""A third-party-style CNN for the explain tests: built with onnx.helper, NCHW and logits
like a PyTorch export, with no dlinfer metadata until ``dlinfer spec set`` describes it.

input (N, 3, 16, 16) -> Conv 3x3 (6) -> Relu "relu1" -> MaxPool 2 -> Conv 3x3 (8) ->
Relu "relu2" -> GlobalAveragePool -> Flatten -> Gemm -> "logits" (5 classes a..e).
``extra_op`` puts one more unary op after relu2 (an op without a backward rule, to
show which methods still answer).
"""

from __future__ import annotations

import os

import numpy as np
from onnx import TensorProto, helper, numpy_helper

LABELS = "a,b,c,d,e"
SEED = 20_261_206


def third_party_cnn(folder: str | os.PathLike[str], extra_op: str | None = None) -> str:
    from dlinfer.tools import cli

    rng = np.random.default_rng(SEED)

    def weights(*shape: int) -> np.ndarray:
        return rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape).astype(np.float32)

    inits = [numpy_helper.from_array(a, n) for a, n in (
        (weights(6, 3, 3, 3), "conv1.weight"), (rng.normal(0, 0.1, 6).astype(np.float32),
                                                "conv1.bias"),
        (weights(8, 6, 3, 3), "conv2.weight"), (rng.normal(0, 0.1, 8).astype(np.float32),
                                                "conv2.bias"),
        (weights(5, 8).T.copy(), "fc.weight"), (rng.normal(0, 0.1, 5).astype(np.float32),
                                                "fc.bias"))]
    last = "relu2"
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "conv2.weight", "conv2.bias"], ["conv2"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
    ]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["relu2"], ["extra"]))
        last = "extra"
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["pool2"]),
        helper.make_node("Flatten", ["pool2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "torch_jit",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="pytorch", producer_version="2.5.0")
    model.ir_version = 8
    path = os.path.join(os.fspath(folder), f"cnn_{extra_op or 'plain'}.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    assert cli.main(["spec", "set", path, "--task", "classification", "--labels", LABELS,
                     "--logits", "--preprocess", "torchvision", "--size", "16",
                     "--resize", "stretch"]) == 0
    return path
