"""ONNX files shaped like third-party ones, built with onnx.helper (no spec, no TensorFlow).

Each mirrors a real file that defeated "axis 0 of every input is the batch" (issue 26):

- :func:`fixed_batch_cnn`: a CNN whose input is ``[1, 3, 16, 16]`` (the captcha OCR models);
- :func:`silero_like`: audio ``(batch, 64)``, a recurrent state ``(2, batch, 16)`` and a
  0-d int64 sample rate (Silero VAD);
- :func:`sequence_model`: ``(sequence_length, 8)`` whose axis 0 is time, a running sum
  carried across frames (Silero's streaming model: frames run together differ from
  frames run apart);
- :func:`opset11_cnn`: a classifier at opset 11 (PaddleOCR's direction classifier);
- :func:`pyramid_cnn`: ``(N, 3, height, width)`` with a stride-32 pooling pyramid whose
  top-down Add needs height and width in multiples of 32, and at least 64 (a YOLO
  detector);
- :func:`cumsum_model`: an op dlinfer's reference executor lacks.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["cumsum_model", "fixed_batch_cnn", "opset11_cnn", "pyramid_cnn", "sequence_model",
           "silero_like"]

_IR = 8


def _model(nodes, name, inputs, outputs, weights, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(w, n) for n, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=_IR)
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv_weights(rng: np.random.Generator, out: int, cin: int, k: int = 3) -> np.ndarray:
    # He-scaled, so activations keep their scale through the layers.
    return (rng.standard_normal((out, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
            ).astype(np.float32)


def _cnn_body(rng, x: str, channels: tuple[int, ...], classes: int):
    nodes, weights, cin, current = [], {}, 3, x
    for i, cout in enumerate(channels):
        weights[f"w{i}"] = _conv_weights(rng, cout, cin)
        weights[f"b{i}"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        nodes += [helper.make_node("Conv", [current, f"w{i}", f"b{i}"], [f"c{i}"],
                                   pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        cin, current = cout, f"r{i}"
    weights["head_w"] = (rng.standard_normal((cin, classes)) * 0.5).astype(np.float32)
    weights["head_b"] = np.zeros(classes, np.float32)
    nodes += [helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], name="head"),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    return nodes, weights


def fixed_batch_cnn(seed: int = 0) -> onnx.ModelProto:
    nodes, weights = _cnn_body(np.random.default_rng(seed), "x", (8, 16), 4)
    return _model(nodes, "fixed_batch", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 16, 16])], [helper.make_tensor_value_info(
            "probs", TensorProto.FLOAT, [1, 4])], weights)


def opset11_cnn(seed: int = 1) -> onnx.ModelProto:
    nodes, weights = _cnn_body(np.random.default_rng(seed), "x", (16, 32), 5)
    return _model(nodes, "opset11", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [-1, 3, 16, 16])], [helper.make_tensor_value_info(
            "probs", TensorProto.FLOAT, [-1, 5])], weights, opset=11)


def silero_like(seed: int = 2) -> onnx.ModelProto:
    """output = sigmoid(h @ v + sr / 1e5), h = tanh(audio @ w + state[0] + state[1])."""
    rng = np.random.default_rng(seed)
    weights = {"w": (rng.standard_normal((64, 16)) * 0.2).astype(np.float32),
               "v": (rng.standard_normal((16, 1)) * 0.5).astype(np.float32),
               "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
               "axes0": np.array([0], np.int64), "sr_scale": np.array(1e-5, np.float32)}
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["proj"]),
        helper.make_node("Gather", ["state", "zero"], ["s0"], axis=0),
        helper.make_node("Gather", ["state", "one"], ["s1"], axis=0),
        helper.make_node("Sum", ["proj", "s0", "s1"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h"], name="tanh"),
        helper.make_node("MatMul", ["h", "v"], ["score"]),
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sr_f", "sr_scale"], ["sr_term"]),
        helper.make_node("Add", ["score", "sr_term"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"], name="sigmoid"),
        helper.make_node("Unsqueeze", ["h", "axes0"], ["h1"]),
        helper.make_node("Concat", ["h1", "h1"], ["stateN"], axis=0),
    ]
    return _model(nodes, "silero_like", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 16]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 16])],
        weights)


def sequence_model(seed: int = 3) -> onnx.ModelProto:
    """``(sequence_length, 8)`` frames; each output is the running sum over earlier frames,
    so frames run together differ from frames run apart (axis 0 is time)."""
    rng = np.random.default_rng(seed)
    weights = {"w": rng.standard_normal((8, 4)).astype(np.float32),
               "axis": np.array(0, np.int64)}
    nodes = [helper.make_node("MatMul", ["frames", "w"], ["proj"]),
             helper.make_node("CumSum", ["proj", "axis"], ["probs"])]
    return _model(nodes, "sequence", [helper.make_tensor_value_info(
        "frames", TensorProto.FLOAT, ["sequence_length", 8])], [helper.make_tensor_value_info(
            "probs", TensorProto.FLOAT, ["sequence_length", 4])], weights)


def cumsum_model() -> onnx.ModelProto:
    """A batch model with CumSum, which dlinfer's reference executor does not implement."""
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["sums"], name="cumsum")]
    return _model(nodes, "cumsum", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                  ["N", 6])],
                  [helper.make_tensor_value_info("sums", TensorProto.FLOAT, ["N", 6])],
                  {"axis": np.array(1, np.int64)})


def pyramid_cnn(seed: int = 4) -> onnx.ModelProto:
    """Five conv + 2x2 max-pool stages (strides 2..32), the stride-32 map upsampled x2 and
    added to the stride-16 one (multiples of 32 only), then a 2x2 pool without padding
    on the stride-32 map (at least 64)."""
    rng = np.random.default_rng(seed)
    nodes, weights, cin, current = [], {}, 3, "images"
    for i, cout in enumerate((4, 8, 8, 8, 8)):
        weights[f"w{i}"] = _conv_weights(rng, cout, cin)
        nodes += [helper.make_node("Conv", [current, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1],
                                   name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2],
                                   strides=[2, 2], name=f"pool{i}")]
        cin, current = cout, f"p{i}"
    weights["scales"] = np.array([1, 1, 2, 2], np.float32)
    nodes += [
        helper.make_node("Resize", ["p4", "", "scales"], ["up"], mode="nearest", name="up"),
        helper.make_node("Add", ["up", "p3"], ["merged"], name="merge"),
        helper.make_node("MaxPool", ["p4"], ["top"], kernel_shape=[2, 2], name="top"),
        helper.make_node("ReduceMean", ["top"], ["top_mean"], axes=[2, 3], keepdims=0),
        helper.make_node("ReduceMean", ["merged"], ["merged_mean"], axes=[2, 3], keepdims=0),
        helper.make_node("Add", ["top_mean", "merged_mean"], ["scores"], name="scores"),
    ]
    return _model(nodes, "pyramid", [helper.make_tensor_value_info(
        "images", TensorProto.FLOAT, ["N", 3, "height", "width"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 8])], weights)
