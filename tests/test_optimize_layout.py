"""`dlinfer optimize`'s graph preparation: static flattens, float32 first layers, and the
session hint the runtime honours.

TF-free: the CNN is laid out as tf2onnx writes a Keras NHWC CNN (Transpose in, convs,
Transpose back to NHWC, a Reshape whose target is computed from Shape at run time), with
seeded random filters; checks run on real MNIST digits.
"""

from __future__ import annotations

import json

import dlinfer
import numpy as np
import onnx
import onnx_models
import onnxruntime as ort
import pytest
from dlinfer.optimize import optimize
from dlinfer.optimize.layout import flatten_reshapes, sample_batches
from dlinfer.runtime import model as runtime_model
from dlinfer.runtime.session import SESSION_METADATA_KEY, disabled_optimizers
from onnx import TensorProto, helper, numpy_helper
from reference import assert_close, seed_of

DEEP = 16  # conv2's filters: 8 x 3 x 3 = 72 products per output, a deep enough layer
FEATURES = DEEP * 11 * 11


def _tf2onnx_like_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(seed_of("optimize_layout", "cnn"))

    def init(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale)
                                       .astype(np.float32), name)

    inits = [init("w1", (8, 1, 3, 3), 0.5), init("b1", (8,), 0.1),
             init("w2", (DEEP, 8, 3, 3), 0.2), init("b2", (DEEP,), 0.1),
             init("dense.w", (FEATURES, 10), 0.05), init("dense.b", (10,), 0.1),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([FEATURES], np.int64), "features"),
             numpy_helper.from_array(np.array([-1, 2, 5], np.int64), "pairs")]
    n = helper.make_node
    nodes = [
        n("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        n("Conv", ["nchw", "w1", "b1"], ["c1"], kernel_shape=[3, 3], name="conv1"),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        n("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], name="conv2"),
        n("Relu", ["c2"], ["r2"], name="relu2"),
        n("Transpose", ["r2"], ["nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
        # Keras' Flatten as tf2onnx writes it: the target shape from the NCHW tensor.
        n("Shape", ["r2"], ["shape"], name="shape"),
        n("Slice", ["shape", "zero", "one"], ["batch"], name="batch"),
        n("Concat", ["batch", "features"], ["target"], axis=0, name="target"),
        n("Reshape", ["nhwc", "target"], ["flat"], name="flatten"),
        n("MatMul", ["flat", "dense.w"], ["mm"], name="dense"),
        n("Add", ["mm", "dense.b"], ["logits"], name="dense_bias"),
        # A reshape that is not a flatten (it adds an axis), then one that is.
        n("Reshape", ["logits", "pairs"], ["paired"], name="pair_up"),
        n("Softmax", ["paired"], ["soft"], axis=-1, name="softmax"),
        n("Reshape", ["soft", "features_of_soft"], ["probabilities"], name="unpair"),
    ]
    inits.append(numpy_helper.from_array(np.array([-1, 10], np.int64), "features_of_soft"))
    graph = helper.make_graph(
        nodes, "tf2onnx_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])], inits)
    return onnx_models.checked_model(graph)


def _run(source: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    blob = source if isinstance(source, str) else source.SerializeToString()
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]


@pytest.fixture(scope="module")
def digits(mnist_digits) -> np.ndarray:
    return (mnist_digits.x_test[:300] / np.float32(255))[..., None]


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory) -> str:
    spec = onnx_models.digit_spec("layout_cnn", {}, {})
    return onnx_models.save(_tf2onnx_like_cnn(), spec, tmp_path_factory.mktemp("layout"))


def test_only_per_sample_flattens_become_flatten_and_outputs_do_not_move(digits):
    proto = _tf2onnx_like_cnn()
    count = flatten_reshapes(proto, sample_batches(
        [dlinfer.InputSpec(name="images", shape=(None, 28, 28, 1))], {"images": digits[:4]}))
    ops = {node.name: node.op_type for node in proto.graph.node}
    assert count == 2
    assert ops["flatten"] == "Flatten" and ops["unpair"] == "Flatten"
    assert ops["pair_up"] == "Reshape", "(N, 10) -> (N, 2, 5) adds an axis: not a flatten"
    # The run-time shape branch fed only the reshape: it is gone, and so are its constants.
    assert not {"shape", "batch", "target"} & set(ops)
    assert not {"zero", "one", "features"} & {t.name for t in proto.graph.initializer}
    onnx.checker.check_model(proto, full_check=True)
    # Same arithmetic, same order: exactly equal at a batch size the rewrite never saw.
    assert_close(_run(proto, digits[:7]), _run(_tf2onnx_like_cnn(), digits[:7]),
                 context="flattened vs original")


def test_a_shallow_first_conv_stays_float_and_the_file_says_how_to_run_it(
        cnn_path, digits, mnist_digits, tmp_path, monkeypatch):
    out = str(tmp_path / "cnn.int8.onnx")
    calibration = mnist_digits.x_fit[:256, ..., None]
    report = optimize(cnn_path, out, "int8", calibrate=calibration,
                      eval=mnist_digits.x_test[..., None], max_drop=100)
    assert report.settings["float_nodes"] == ["conv1", "relu1", "pool1"]
    assert report.settings["disabled_optimizers"] == ["QDQPropagationTransformer"]
    assert report.settings["rewrites"] == {"reshape_to_flatten": 2}
    # Random filters leave small margins between classes: a few flips are expected.
    assert report.metrics["top1_agreement"] >= 0.95, report.format()

    proto = onnx.load(out)
    producers = {o: node.op_type for node in proto.graph.node for o in node.output}
    convs = {node.name: node for node in proto.graph.node if node.op_type == "Conv"}
    assert producers.get(convs["conv1"].input[1]) is None, "conv1's weights stay float32"
    assert producers[convs["conv2"].input[1]] == "DequantizeLinear", "conv2 is int8"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[SESSION_METADATA_KEY]) == {
        "disabled_optimizers": ["QDQPropagationTransformer"]}

    # The runtime reads the hint and opens the session without that optimizer.
    seen = []
    real = ort.InferenceSession

    def spy(*args, **kwargs):
        seen.append(kwargs.get("disabled_optimizers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime_model.ort, "InferenceSession", spy)
    model = dlinfer.Model(out, backend="onnxruntime")
    assert seen[-1] == ["QDQPropagationTransformer"]
    agree = np.mean(model.run(digits).argmax(1) == _run(cnn_path, digits).argmax(1))
    assert agree >= 0.95


def test_without_keep_shallow_every_conv_is_int8_and_no_hint_is_written(
        cnn_path, mnist_digits, tmp_path):
    out = str(tmp_path / "all.int8.onnx")
    report = optimize(cnn_path, out, "int8", calibrate=mnist_digits.x_fit[:256, ..., None],
                      keep_shallow=False, max_drop=100)
    assert report.settings["float_nodes"] == [] and report.settings["disabled_optimizers"] == []
    proto = onnx.load(out)
    assert SESSION_METADATA_KEY not in {p.key for p in proto.metadata_props}
    producers = {o: node.op_type for node in proto.graph.node for o in node.output}
    assert all(producers.get(node.input[1]) == "DequantizeLinear"
               for node in proto.graph.node if node.op_type == "Conv")


@pytest.mark.parametrize("raw, expected", [
    (None, []),
    ('{"disabled_optimizers": ["QDQPropagationTransformer"]}', ["QDQPropagationTransformer"]),
    # A file may not switch off optimizers dlinfer has no reason for, nor crash the load.
    ('{"disabled_optimizers": ["ConstantFolding", "QDQPropagationTransformer", 3]}',
     ["QDQPropagationTransformer"]),
    ('{"disabled_optimizers": "QDQPropagationTransformer"}', []),
    ("not json", []),
    ("[1, 2]", []),
])
def test_the_session_hint_honours_only_known_optimizers(raw, expected):
    metadata = {} if raw is None else {SESSION_METADATA_KEY: raw}
    assert disabled_optimizers(metadata) == expected


def _conv_model(w: np.ndarray, bias: bool, hw: int, **attrs) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(np.arange(w.shape[0], dtype=np.float32), "b"))
        inputs.append("b")
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["y"], name="narrow", **attrs)], "narrow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[1], hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[0], None, None])],
        inits)
    return onnx_models.checked_model(graph)


@pytest.mark.parametrize("out_channels, kernel, pads, hw, bias", [
    (1, 7, [3, 3, 3, 3], 28, True),   # DCGAN's last layer, shrunk to 8 input channels
    (3, 4, [1, 2, 2, 1], 12, False),  # an even kernel with asymmetric pads
    (2, 5, [0, 0, 0, 0], 16, True),   # 'valid': 16 -> 12 pixels, both in 4x4 blocks
])
def test_narrow_convs_become_space_to_depth_convs_with_the_same_output(
        out_channels, kernel, pads, hw, bias):
    from dlinfer.optimize.convs import TOLERANCE, block_narrow_convs

    rng = np.random.default_rng(seed_of("narrow", out_channels, kernel, hw))
    w = rng.standard_normal((out_channels, 8, kernel, kernel)).astype(np.float32)
    proto = _conv_model(w, bias, hw, kernel_shape=[kernel, kernel], pads=pads)
    original = proto.SerializeToString()
    assert block_narrow_convs(proto, {"x": [1, 8, hw, hw]}) == 1
    assert [n.op_type for n in proto.graph.node] == ["SpaceToDepth", "Conv", "DepthToSpace"]
    conv = proto.graph.node[1]
    assert onnx.numpy_helper.to_array(
        next(t for t in proto.graph.initializer if t.name == conv.input[1])).shape[0] >= 16
    x = rng.standard_normal((5, 8, hw, hw)).astype(np.float32)
    want = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    got = ort.InferenceSession(proto.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # Same products summed in another order: float32 rounding at the output's scale.
    assert_close(got, want, atol=TOLERANCE * float(np.abs(want).max()),
                 context="space-to-depth conv vs conv")


@pytest.mark.parametrize("out_channels, attrs, hw", [
    (4, {}, 28),                          # wide enough already
    (1, {"strides": [2, 2]}, 28),         # strided: not this rewrite
    (1, {}, 13),                          # 13 pixels do not split into 2x2 or 4x4 blocks
])
def test_convs_the_rewrite_does_not_fit_are_left_alone(out_channels, attrs, hw):
    from dlinfer.optimize.convs import block_narrow_convs

    w = np.ones((out_channels, 8, 3, 3), np.float32)
    proto = _conv_model(w, False, hw, kernel_shape=[3, 3], pads=[1, 1, 1, 1], **attrs)
    before = proto.SerializeToString()
    assert block_narrow_convs(proto, {"x": [1, 8, hw, hw]}) == 0
    assert proto.SerializeToString() == before


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory) -> str:
    """A linear forecaster (N, 8) -> (N, 1) with a regression spec: values, not classes."""
    rng = np.random.default_rng(seed_of("optimize_layout", "regression"))
    w = rng.standard_normal((8, 1)).astype(np.float32) * 40
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["series", "w"], ["forecast"], name="dense")], "forecaster",
        [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w, "w")])
    spec = dlinfer.ModelSpec(
        name="forecaster", task="regression",
        inputs=[dlinfer.InputSpec(name="series", shape=(None, 8), kind="series", layout="NC",
                                  color=None, scale=1.0)],
        outputs=[dlinfer.OutputSpec(name="forecast", kind="value")])
    return onnx_models.save(onnx_models.checked_model(graph), spec,
                            tmp_path_factory.mktemp("regression"))


def test_values_are_gated_on_their_relative_rms_error(regression_model, tmp_path):
    data = np.random.default_rng(seed_of("regression", "eval")).standard_normal(
        (256, 8)).astype(np.float32) * 100
    report = optimize(regression_model, tmp_path / "half.onnx", "fp16", eval=data)
    m = report.metrics
    assert m["metric"] == "relative_rms_error" and report.drop_points == m[
        "relative_rms_error_pct"]
    # float16 keeps 11 significant bits: about 0.05% of the outputs' scale, well under 0.5.
    assert 0 < report.drop_points < 0.5, report.format()
    assert "relative RMS error against float32" in report.format()
    assert dlinfer.Model(str(tmp_path / "half.onnx")).spec.extra["optimize"]["passed"]
    with pytest.raises(dlinfer.OptimizeError, match=r"outputs moved by .*% of their RMS"):
        optimize(regression_model, tmp_path / "strict.onnx", "fp16", eval=data, max_drop=0)
    assert not (tmp_path / "strict.onnx").exists()


@pytest.mark.parametrize("stride, kernel, pads, extra, hw", [
    (2, 4, [1, 1, 1, 1], [0, 0], 7),   # DCGAN's Conv2DTranspose(4x4, strides 2, 'same')
    (2, 3, [1, 1, 1, 1], [1, 1], 5),   # an odd kernel: 'same' needs output_padding
    (3, 3, [0, 0, 0, 0], [0, 0], 4),   # stride 3, 'valid'
])
def test_transposed_convs_become_subpixel_convs_with_the_same_output(
        stride, kernel, pads, extra, hw):
    from dlinfer.optimize.convs import TOLERANCE, subpixel_conv_transposes

    rng = np.random.default_rng(seed_of("subpixel", stride, kernel, hw))
    w = rng.standard_normal((6, 5, kernel, kernel)).astype(np.float32)  # (C_in, C_out, k, k)
    graph = helper.make_graph(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up",
                          strides=[stride, stride], kernel_shape=[kernel, kernel], pads=pads,
                          output_padding=extra)], "up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, None, None])],
        [numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.arange(5, dtype=np.float32), "b")])
    proto = onnx_models.checked_model(graph)
    original = proto.SerializeToString()
    assert subpixel_conv_transposes(proto, {"x": [1, 6, hw, hw]}) == 1
    assert [n.op_type for n in proto.graph.node] == ["Conv", "DepthToSpace"]
    x = rng.standard_normal((3, 6, hw, hw)).astype(np.float32)
    want = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    got = ort.InferenceSession(proto.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_close(got, want, atol=TOLERANCE * float(np.abs(want).max()),
                 context="sub-pixel conv vs transposed conv")
