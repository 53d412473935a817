"""dlinfer.explain.gradient against float64 central finite differences.

Each model's gradient with respect to its input is checked along three seeded random
directions d: sum(gradient * d) must equal (f(x + h d) - f(x - h d)) / 2h, where f
(the chosen output element, summed over the batch) runs in the float64 reference
executor (tests/gradient_reference.py).

The tolerance, RTOL = 2e-4 of sum(|gradient * d|), the size of the terms the dot product
adds up (so cancellation in the sum can neither hide nor fake an error):
- the gradient is computed in float32 by onnxruntime: measured 3e-7 on the one-op
  graphs and up to 2e-5 on the light CNNs (SqueezeNet, ShuffleNet, DenseNet-121);
- the difference is float64 with h = 1e-6: truncation ~h^2 = 1e-12, rounding
  ~1e-16 / h = 1e-10, and a step that small rarely carries a pre-activation across a
  ReLU or a max-pool tie (h = 1e-4 did, on AlexNet: 3e-4);
- a wrong rule (a missed transposition, a lost broadcast axis, a dropped term, a
  window off by one) is off by 1e-2 or more on that scale.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
import pytest
from dlinfer import Model
from dlinfer.errors import InputError, UnsupportedGradientError
from gradient_reference import central_difference, constant_of_shape_to_initializers, make_model
from onnx import TensorProto, helper

RTOL = 2e-4  # see the module docstring
STEP = 1e-6
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _check(tmp_path, model, x: dict[str, np.ndarray], index: Any, *, seed: int,
           output: str | None = None, target: str | None = None, logits: bool = True,
           rtol: float = RTOL) -> None:
    from dlinfer.explain import gradient

    path = str(tmp_path / f"m{seed}.onnx")
    onnx.save(model, path)
    opened = Model(path)
    wrt = opened.inputs[0].name
    grad = gradient(opened, x, output=output, index=index, wrt=wrt, logits=logits)
    assert grad.shape == x[wrt].shape and grad.dtype == np.float32
    rng = np.random.default_rng(seed)
    directions = [rng.standard_normal(x[wrt].shape) for _ in range(3)]
    batch = x[wrt].shape[0]
    flat = [int(i) for i in np.broadcast_to(np.asarray(index), (batch,))] \
        if not isinstance(index, tuple) else None
    target = target or output or opened.outputs[0].name
    if flat is None:  # one multi-index for every sample
        shape = onnx_shape_of(model, target, x)
        flat = [int(np.ravel_multi_index(index, shape[1:]))] * batch
    fds = central_difference(model, x, wrt, target, flat, directions, STEP)
    g = grad.astype(np.float64)
    for k, (d, fd) in enumerate(zip(directions, fds)):
        analytic = float((g * d).sum())
        scale = float(np.abs(g * d).sum())
        assert scale > 0, "the gradient is zero: the check would prove nothing"
        assert abs(analytic - fd) <= rtol * scale, (
            f"direction {k} (seed {seed}): gradient.d = {analytic:.9g}, finite difference "
            f"{fd:.9g}, error {abs(analytic - fd) / scale:.2e} of sum|g.d| = {scale:.3g}")


def onnx_shape_of(model, name: str, x: dict[str, np.ndarray]) -> tuple[int, ...]:
    from dlinfer.verification.reference import run

    return run(model, {k: v for k, v in x.items()}, [name])[name].shape


def _vi(name: str, shape) -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _rand(rng, *shape, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _conv_case(rng, **attrs) -> tuple:
    group = attrs.get("group", 1)
    w = _rand(rng, 6, 4 // group, 3, 3, scale=0.4)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    return [node], {"w": w, "b": _rand(rng, 6)}, (2, 4, 9, 8)


def _single(op: str, **attrs) -> Any:
    def case(rng) -> tuple:
        return [helper.make_node(op, ["x"], ["y"], **attrs)], {}, (2, 3, 5, 4)
    return case


def _binary(op: str, other_shape: tuple, positive: bool = False) -> Any:
    def case(rng) -> tuple:
        c = _rand(rng, *other_shape)
        c = np.abs(c) + 0.5 if positive else c
        return [helper.make_node(op, ["x", "c"], ["y"])], {"c": c}, (2, 3, 5, 4)
    return case


def _with_inputs(op: str, constants: dict, shape=(2, 3, 5, 4), **attrs) -> Any:
    def case(rng) -> tuple:
        node = helper.make_node(op, ["x", *constants], ["y"], **attrs)
        return [node], {k: np.asarray(v) for k, v in constants.items()}, shape
    return case


# op -> (builder(rng) -> (nodes, initializers, input shape)); output "y", input "x".
CASES: dict[str, Any] = {
    "conv": lambda rng: _conv_case(rng, pads=[1, 1, 1, 1]),
    "conv_strided_padded": lambda rng: _conv_case(rng, strides=[2, 2], pads=[1, 0, 2, 1]),
    "conv_dilated": lambda rng: _conv_case(rng, dilations=[2, 1], pads=[1, 1, 1, 1]),
    "conv_grouped": lambda rng: _conv_case(rng, group=2, strides=[1, 2]),
    "conv_depthwise_same": lambda rng: (
        [helper.make_node("Conv", ["x", "w"], ["y"], group=4, auto_pad="SAME_UPPER",
                          strides=[2, 2])], {"w": _rand(rng, 4, 1, 3, 3)}, (2, 4, 9, 8)),
    "conv_transpose": lambda rng: (
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2],
                          pads=[1, 1, 0, 1], output_padding=[1, 0])],
        {"w": _rand(rng, 4, 3, 3, 3, scale=0.4), "b": _rand(rng, 3)}, (2, 4, 5, 4)),
    "gemm": lambda rng: (
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.7, beta=0.3)],
        {"w": _rand(rng, 5, 6), "b": _rand(rng, 5)}, (2, 6)),
    "gemm_transA": lambda rng: (
        [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
         helper.make_node("Gemm", ["t", "w"], ["y"], transA=1)],
        {"w": _rand(rng, 6, 5)}, (2, 6)),
    "matmul_dense": lambda rng: (
        [helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": _rand(rng, 6, 5)}, (2, 6)),
    "matmul_batched": lambda rng: (
        [helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": _rand(rng, 4, 3)}, (2, 3, 5, 4)),
    "batchnorm": lambda rng: (
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                          epsilon=1e-3)],
        {"s": _rand(rng, 3), "b": _rand(rng, 3), "m": _rand(rng, 3),
         "v": np.abs(_rand(rng, 3)) + 0.5}, (2, 3, 5, 4)),
    "relu": _single("Relu"),
    "clip": _with_inputs("Clip", {"lo": np.float32(-0.5), "hi": np.float32(0.6)}),
    "leaky_relu": _single("LeakyRelu", alpha=0.1),
    "sigmoid": _single("Sigmoid"),
    "tanh": _single("Tanh"),
    "hard_sigmoid": _single("HardSigmoid", alpha=0.3, beta=0.4),
    "hard_swish": lambda rng: ([helper.make_node("Mul", ["x", "k"], ["x4"]),
                                helper.make_node("HardSwish", ["x4"], ["y"])],
                               {"k": np.float32(4.0)}, (2, 3, 5, 4)),
    "softmax": _single("Softmax", axis=1),
    "log_softmax": _single("LogSoftmax", axis=-1),
    "maxpool_overlapping": _single("MaxPool", kernel_shape=[3, 3], strides=[2, 1],
                                   pads=[1, 1, 1, 0]),
    "maxpool_tiles": _single("MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
    "maxpool_tiles_3x3": lambda rng: ([helper.make_node("MaxPool", ["x"], ["y"],
                                                        kernel_shape=[3, 3], strides=[3, 3])],
                                      {}, (2, 3, 6, 9)),
    "maxpool_rectangular_tiles": _single("MaxPool", kernel_shape=[2, 3], strides=[2, 3]),
    "maxpool_ceil_dilated": _single("MaxPool", kernel_shape=[2, 2], strides=[2, 2],
                                    ceil_mode=1, dilations=[1, 2]),
    "averagepool": _single("AveragePool", kernel_shape=[3, 2], strides=[2, 1],
                           pads=[1, 0, 1, 1]),
    "averagepool_include_pad": _single("AveragePool", kernel_shape=[3, 3], strides=[1, 2],
                                       pads=[1, 1, 1, 1], count_include_pad=1),
    "global_average_pool": _single("GlobalAveragePool"),
    "global_max_pool": _single("GlobalMaxPool"),
    "reduce_mean": _single("ReduceMean", axes=[1, -1], keepdims=0),
    "add_broadcast": _binary("Add", (3, 1, 4)),
    "sub_broadcast": _binary("Sub", (1, 5, 1)),
    "mul_broadcast": _binary("Mul", (3, 1, 1)),
    "div_broadcast": _binary("Div", (1, 4), positive=True),
    "div_by_x": lambda rng: ([helper.make_node("Abs", ["x"], ["a"]),
                              helper.make_node("Add", ["a", "one"], ["d"]),
                              helper.make_node("Div", ["c", "d"], ["y"])],
                             {"one": np.float32(1.0), "c": _rand(rng, 4)}, (2, 3, 5, 4)),
    "reshape": _with_inputs("Reshape", {"shape": np.array([0, -1, 2])}),
    "flatten": _single("Flatten", axis=1),
    "transpose": _single("Transpose", perm=[0, 2, 3, 1]),
    "concat": lambda rng: ([helper.make_node("Relu", ["x"], ["r"]),
                            helper.make_node("Concat", ["x", "c", "r"], ["y"], axis=1)],
                           {"c": _rand(rng, 2, 2, 5, 4)}, (2, 3, 5, 4)),
    "slice": _with_inputs("Slice", {"st": np.array([1, -1]), "en": np.array([3, -6]),
                                    "ax": np.array([1, 3]), "sp": np.array([1, -2])}),
    "pad": _with_inputs("Pad", {"pads": np.array([0, 0, 1, -1, 0, 1, 2, 1]),
                                "v": np.float32(0.5)}),
    "squeeze_unsqueeze": lambda rng: (
        [helper.make_node("Unsqueeze", ["x", "a"], ["u"]),
         helper.make_node("Squeeze", ["u", "a"], ["y"])], {"a": np.array([2])}, (2, 3, 5, 4)),
    "identity_cast_dropout": lambda rng: (
        [helper.make_node("Identity", ["x"], ["i"]),
         helper.make_node("Cast", ["i"], ["c"], to=TensorProto.FLOAT),
         helper.make_node("Dropout", ["c"], ["y"])], {}, (2, 3, 5, 4)),
    "expand": _with_inputs("Expand", {"shape": np.array([2, 1, 5, 4])}, shape=(2, 3, 1, 4)),
    "gather_axis2": _with_inputs("Gather", {"i": np.array([[4, 0], [-1, 2]])}, axis=2),
    "pow": lambda rng: ([helper.make_node("Abs", ["x"], ["a"]),
                         helper.make_node("Add", ["a", "k"], ["b"]),
                         helper.make_node("Pow", ["b", "p"], ["y"])],
                        {"k": np.float32(0.5), "p": np.float32(1.7)}, (2, 3, 5, 4)),
    "max_min": lambda rng: ([helper.make_node("Max", ["x", "c"], ["m"]),
                             helper.make_node("Min", ["m", "d"], ["y"])],
                            {"c": _rand(rng, 5, 4), "d": _rand(rng, 3, 1, 1)}, (2, 3, 5, 4)),
    "where": lambda rng: ([helper.make_node("Greater", ["x", "c"], ["m"]),
                           helper.make_node("Neg", ["x"], ["n"]),
                           helper.make_node("Where", ["m", "x", "n"], ["y"])],
                          {"c": _rand(rng, 4)}, (2, 3, 5, 4)),
    "erf_exp_log_sqrt": lambda rng: (
        [helper.make_node("Erf", ["x"], ["e"]), helper.make_node("Exp", ["e"], ["p"]),
         helper.make_node("Sqrt", ["p"], ["s"]), helper.make_node("Log", ["s"], ["y"])],
        {}, (2, 3, 5, 4)),
    "elu_softplus_prelu": lambda rng: (
        [helper.make_node("Elu", ["x"], ["e"], alpha=0.7),
         helper.make_node("Softplus", ["e"], ["s"]),
         helper.make_node("Sub", ["s", "k"], ["t"]),
         helper.make_node("PRelu", ["t", "slope"], ["y"])],
        {"k": np.float32(0.9), "slope": _rand(rng, 3, 1, 1)}, (2, 3, 5, 4)),
    "reduce_max_min": lambda rng: ([helper.make_node("ReduceMax", ["x"], ["m"], axes=[2, 3]),
                                    helper.make_node("ReduceMin", ["x"], ["n"], axes=[1],
                                                     keepdims=0),
                                    helper.make_node("Flatten", ["m"], ["f"]),
                                    helper.make_node("Flatten", ["n"], ["n2"]),
                                    helper.make_node("Concat", ["f", "n2"], ["y"], axis=1)],
                                   {}, (2, 3, 5, 4)),
    "selu": _single("Selu"),
    "resize_nearest_half_pixel": _with_inputs(
        "Resize", {"roi": np.zeros(0, np.float32),
                   "scales": np.array([1, 1, 3, 2], np.float32)}),
    "resize_nearest_asymmetric_floor": _with_inputs(
        "Resize", {"roi": np.zeros(0, np.float32),
                   "scales": np.array([1, 1, 2, 4], np.float32)},
        coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    "lrn": _single("LRN", size=3, alpha=0.5, beta=0.75, bias=1.5),  # onnxruntime: odd sizes
    "sum_shared_input": lambda rng: (
        [helper.make_node("Sum", ["x", "x", "c"], ["y"])], {"c": _rand(rng, 4)}, (2, 3, 5, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_of_one_op_matches_finite_differences(tmp_path, case):
    seed = sum(map(ord, case))
    rng = np.random.default_rng(seed)
    nodes, inits, shape = CASES[case](rng)
    model = make_model(nodes, [_vi("x", shape)], [_vi("y", None)], inits)
    x = {"x": rng.standard_normal(shape).astype(np.float32)}
    _check(tmp_path, model, x, _live_index(tmp_path, model, x, rng), seed=seed, logits=False)


def _live_index(tmp_path, model, x: dict[str, np.ndarray], rng) -> list[int]:
    """Each sample its own random output element, one whose gradient is not zero (an
    element of padding, or clipped, would make the check vacuous)."""
    from dlinfer.explain import gradient

    path = str(tmp_path / "probe.onnx")
    onnx.save(model, path)
    batch = x["x"].shape[0]
    per_sample = int(np.prod(onnx_shape_of(model, "y", x)[1:]))
    chosen: list[int | None] = [None] * batch
    for k in rng.permutation(per_sample)[:50]:
        grad = gradient(path, x, index=int(k), logits=False)
        for n in range(batch):
            if chosen[n] is None and np.any(grad[n]):
                chosen[n] = int(k)
        if all(c is not None for c in chosen):
            break
    return [c if c is not None else 0 for c in chosen]


def _light(name: str, seed: int) -> Any:
    model = constant_of_shape_to_initializers(
        onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")), seed)
    if name in RESIZABLE:  # fully convolutional up to a global pooling: any image size
        weights = {t.name for t in model.graph.initializer}
        image = next(i for i in model.graph.input if i.name not in weights)
        for d in image.type.tensor_type.shape.dim[2:]:
            d.dim_value = RESIZABLE[name]
        del model.graph.value_info[:]
    return model


def _logits(model) -> str:
    soft = [n for n in model.graph.node if n.op_type == "Softmax"]
    return soft[-1].input[0] if soft else model.graph.output[0].name


# The float64 reference takes 3-5 s on these at 224x224 (DenseNet: at 64x64, which its
# global pooling allows); the others take 30 s (AlexNet) to minutes (VGG-19).
LIGHT_FAST = ["squeezenet", "shufflenet", "densenet121"]
LIGHT_SLOW = ["bvlc_alexnet", "zfnet512", "inception_v1", "inception_v2", "resnet50", "vgg19"]
RESIZABLE = {"densenet121": 64}


@pytest.mark.parametrize("name", LIGHT_FAST + [
    pytest.param(n, marks=pytest.mark.slow) for n in LIGHT_SLOW])
def test_gradient_of_light_cnn_matches_finite_differences(tmp_path, name):
    seed = sum(map(ord, name))
    model = _light(name, seed)
    weights = {t.name for t in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in weights)
    shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    x = {graph_input.name: np.random.default_rng(seed).random(shape, dtype=np.float32)}
    _check(tmp_path, model, x, seed % 1000, seed=seed, target=_logits(model))


@pytest.mark.parametrize("geometry", [dict(kernel_shape=[2, 2], strides=[2, 2]),
                                      dict(kernel_shape=[2, 2], strides=[1, 1])],
                         ids=["tiles", "overlapping"])
def test_max_pool_ties_send_the_gradient_to_the_first_maximum(tmp_path, geometry):
    from dlinfer.explain import gradient

    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MaxPool", ["r"], ["y"],
                                                                     **geometry)]
    model = make_model(nodes, [_vi("x", (1, 1, 4, 4))], [_vi("y", None)], {})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    x = -np.ones((1, 1, 4, 4), np.float32)  # every window all zeros after the Relu
    grad = gradient(path, x, index=0, wrt="r")[0, 0]
    expected = np.zeros((4, 4), np.float32)
    expected[0, 0] = 1  # window (0, 0): its top-left pixel, as onnxruntime and TensorFlow
    np.testing.assert_array_equal(grad, expected)


def test_softmax_output_is_differentiated_through_its_logits_by_default(tmp_path):
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["z"]),
             helper.make_node("Softmax", ["z"], ["p"]),
             helper.make_node("Identity", ["p"], ["y"])]
    model = make_model(nodes, [_vi("x", (3, 4))], [_vi("y", None)], {"w": _rand(rng, 4, 5)})
    x = {"x": _rand(rng, 3, 4)}
    _check(tmp_path, model, x, [0, 4, 2], seed=7, target="z")
    _check(tmp_path, model, x, (3,), seed=8, logits=False)


def test_gradient_with_respect_to_an_intermediate_tensor(tmp_path):
    from dlinfer.explain import gradient, value_and_gradient

    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w2"], ["y"])]
    model = make_model(nodes, [_vi("x", ("N", 2, 6, 6))], [_vi("y", None)],
                       {"w": _rand(rng, 4, 2, 3, 3), "w2": _rand(rng, 4, 3)})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    x = _rand(rng, 2, 2, 6, 6)
    values, grads, outputs = value_and_gradient(path, x, index=[1, 2], wrt=["r", "x"])
    r = np.maximum(values[0], 0)
    np.testing.assert_allclose(values[0], r)  # the Relu output itself
    # d y[k] / d r = w2[:, k] / 36 at every pixel: exact, whatever r is.
    for n, k in enumerate([1, 2]):
        expected = np.broadcast_to(model_w2(model)[:, k][:, None, None] / 36, r.shape[1:])
        np.testing.assert_allclose(grads[0][n], expected, rtol=1e-6)
    assert grads[1].shape == x.shape and set(outputs) == {"y"}
    again = gradient(path, x, index=[1, 2])
    np.testing.assert_array_equal(again, grads[1])


def test_index_none_is_each_samples_predicted_class(tmp_path):
    from dlinfer.explain import value_and_gradient

    rng = np.random.default_rng(11)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["z"]),
             helper.make_node("Softmax", ["z"], ["y"])]
    model = make_model(nodes, [_vi("x", ("N", 4))], [_vi("y", None)], {"w": _rand(rng, 4, 6)})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    x = _rand(rng, 5, 4)
    _, grad, outputs = value_and_gradient(path, x, index=None, wrt="x")
    predicted = outputs["y"].argmax(axis=1)
    assert len(set(predicted.tolist())) > 1  # the samples differ: a real per-sample check
    _, expected, _ = value_and_gradient(path, x, index=predicted, wrt="x")
    np.testing.assert_array_equal(grad, expected)


# Pooled map size of a (N, 4, 7, 7) tensor: the 2x2 tiles leave the last row unread,
# the 3x3 windows overlap and read padding.  Between the pooling and the dense layer,
# Identity keeps the layout-only path that backward_sums folds into the dense layer's
# weights; Relu breaks it (the pooling's shortcut alone).
@pytest.mark.parametrize("between", ["Identity", "Relu"])
@pytest.mark.parametrize("op, attrs, pooled", [
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]), 9),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 16),
    ("GlobalAveragePool", {}, 1)])
def test_summed_over_is_the_gradient_summed_without_the_poolings_backward(tmp_path, op,
                                                                          attrs, pooled,
                                                                          between):
    """Grad-CAM's spatial sums, where the layer feeds a pooling and a second branch."""
    from dlinfer.explain import value_and_gradient
    from reference import assert_close

    rng = np.random.default_rng(pooled)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node(op, ["r"], ["p"], **attrs),
             helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 2, 3, 1]),
             helper.make_node(between, ["pt"], ["pb"]),
             helper.make_node("Flatten", ["pb"], ["f"]),
             helper.make_node("Gemm", ["f", "w2"], ["y1"], alpha=0.5),
             helper.make_node("Mul", ["r", "r"], ["s"]),  # r's other consumer
             helper.make_node("GlobalAveragePool", ["s"], ["a"]),
             helper.make_node("Flatten", ["a"], ["af"]),
             helper.make_node("Gemm", ["af", "w3"], ["y2"]),
             helper.make_node("Add", ["y1", "y2"], ["y"])]
    model = make_model(nodes, [_vi("x", ("N", 2, 7, 7))], [_vi("y", None)],
                       {"w": _rand(rng, 4, 2, 3, 3), "w2": _rand(rng, 4 * pooled, 3),
                        "w3": _rand(rng, 4, 3)})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    x = _rand(rng, 2, 2, 7, 7)
    _, full, _ = value_and_gradient(path, x, index=[1, 2], wrt="r")
    values, summed, _ = value_and_gradient(path, x, index=[1, 2], wrt="r", summed_over=(2, 3))
    assert (values == 0).any()  # ReLU zeros: max-pool ties the sum must not double
    # float32 sums of 49 terms in another order: a few ulps of the largest term.
    assert_close(summed, full.sum(axis=(2, 3), keepdims=True), atol=1e-5, rtol=1e-5)


def model_w2(model) -> np.ndarray:
    from onnx import numpy_helper

    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "w2")


def test_an_op_without_a_gradient_is_refused_by_name(tmp_path):
    from dlinfer.explain import gradient

    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Sin", ["r"], ["e"], name="the_sin"),
             helper.make_node("ReduceSum", ["e", "axes"], ["y"], keepdims=0)]
    model = make_model(nodes, [_vi("x", (2, 3))], [_vi("y", None)], {"axes": np.array([1])})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedGradientError, match="'Sin'.*'the_sin'") as caught:
        gradient(path, np.ones((2, 3), np.float32), index=0)
    assert caught.value.op == "Sin" and caught.value.node == "the_sin"
    # Off the path, the same op is no obstacle: the gradient with respect to e is fine.
    assert gradient(path, np.ones((2, 3), np.float32), index=0, wrt="e").shape == (2, 3)


def test_a_mode_without_a_gradient_is_refused_by_op_node_and_mode(tmp_path):
    from dlinfer.explain import gradient

    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", name="up")
    model = make_model([node], [_vi("x", (1, 1, 2, 2))], [_vi("y", None)],
                       {"scales": np.array([1, 1, 2, 2], np.float32)})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedGradientError, match="'Resize' .*mode=linear.*'up'"):
        gradient(path, np.ones((1, 1, 2, 2), np.float32), index=0)


def test_an_int8_path_is_refused_naming_its_quantize_node(tmp_path):
    """A QDQ int8 file: the class score depends on the input only through QuantizeLinear's
    integer tensor.  The error names that node (it said "does not depend" before)."""
    from dlinfer.explain import gradient

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quantize_x"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Shape", ["x"], ["shape"]),  # an integer tensor off the path
             helper.make_node("Reshape", ["d", "shape"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    model = make_model(nodes, [_vi("x", ("N", 3))], [_vi("y", ("N", 3))],
                       {"s": np.float32(0.1), "z": np.uint8(128)})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedGradientError, match="'QuantizeLinear'.*integer") as caught:
        gradient(path, np.ones((2, 3), np.float32), index=0)
    assert caught.value.node == "quantize_x"


@pytest.mark.parametrize("index, error", [
    (5, InputError), ([0], InputError), ((0, 1), InputError), (True, TypeError),
    (1.5, TypeError)])
def test_bad_index_is_refused(tmp_path, index, error):
    from dlinfer.explain import gradient

    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ("N", 3))],
                       [_vi("y", ("N", 3))], {})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    with pytest.raises(error):
        gradient(path, np.ones((2, 3), np.float32), index=index)


def test_unknown_tensor_names_are_refused(tmp_path):
    from dlinfer.explain import gradient

    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ("N", 3))],
                       [_vi("y", ("N", 3))], {})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    x = np.ones((2, 3), np.float32)
    with pytest.raises(InputError, match="no tensor named 'nope'"):
        gradient(path, x, index=0, wrt="nope")
    with pytest.raises(InputError, match="no output 'nope'"):
        gradient(path, x, index=0, output="nope")
    with pytest.raises(TypeError, match="wrt must be"):
        gradient(path, x, index=0, wrt=3)


def test_an_integer_tensor_is_refused_as_wrt(tmp_path):
    from dlinfer.explain import gradient

    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["f"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.UINT8, ("N", 3))],
                       [_vi("y", ("N", 3))], {})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    x = np.full((2, 3), 7, np.uint8)
    with pytest.raises(InputError, match="not a float tensor"):
        gradient(path, x, index=0)
    np.testing.assert_array_equal(gradient(path, x, index=1, wrt="f"), [[0, 1, 0], [0, 1, 0]])
