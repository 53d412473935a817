"""`dlinfer optimize`: int8, float16 and graph modes, the accuracy gate, and bad input.

TF-free: the CNN is built with onnx.helper (Transpose -> Conv -> Relu -> MaxPool ->
Reshape -> MatMul -> Add -> Softmax, as tf2onnx lays out an NHWC Keras CNN), with fixed
random filters and a softmax head fitted in NumPy on real MNIST digits; every check runs
on the 1,000 held-out digits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import dlinfer
import numpy as np
import onnx
import onnx_models
import onnxruntime as ort
import pytest
from dlinfer.optimize import optimize
from dlinfer.tools.cli import main
from onnx import TensorProto, helper, numpy_helper
from reference import assert_close, seed_of

FILTERS = 8
FEATURES = FILTERS * 13 * 13


def _cnn(conv_w: np.ndarray, head: tuple[np.ndarray, np.ndarray] | None) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(conv_w, "conv.w"),
             numpy_helper.from_array(np.zeros(FILTERS, np.float32), "conv.b"),
             numpy_helper.from_array(np.array([-1, FEATURES], np.int64), "flat_shape")]
    nodes = [helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "conv.w", "conv.b"], ["conv"],
                              kernel_shape=[3, 3], name="conv1"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu1"),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2],
                              strides=[2, 2], name="pool1"),
             helper.make_node("Reshape", ["pool", "flat_shape"], ["flat"], name="flatten")]
    out, dims = "flat", ["N", FEATURES]
    if head is not None:
        inits += [numpy_helper.from_array(head[0], "dense.w"),
                  numpy_helper.from_array(head[1], "dense.b")]
        nodes += [helper.make_node("MatMul", ["flat", "dense.w"], ["mm"], name="dense"),
                  helper.make_node("Add", ["mm", "dense.b"], ["logits"], name="dense_bias"),
                  helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1,
                                   name="softmax")]
        out, dims = "probabilities", ["N", 10]
    graph = helper.make_graph(
        nodes, "digit_cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, dims)], inits)
    return onnx_models.checked_model(graph)


def _run(proto_or_path, x: np.ndarray) -> np.ndarray:
    source = proto_or_path if isinstance(proto_or_path, str) else proto_or_path.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


@dataclass(frozen=True)
class Case:
    model: str  # the float32 CNN, with a dlinfer spec
    calibrate: str  # 512 uint8 training digits (N, 28, 28, 1), .npy
    eval: str  # the 1,000 held-out digits and their labels, .npz
    eval_unlabelled: str  # the same digits, .npy
    zeros: str  # all-black images: a calibration set that cannot work
    folder: str


@pytest.fixture(scope="module")
def case(mnist_digits, tmp_path_factory) -> Case:
    folder = tmp_path_factory.mktemp("optimize")
    rng = np.random.default_rng(seed_of("optimize", "cnn"))
    conv_w = (rng.standard_normal((FILTERS, 1, 3, 3)) / 3).astype(np.float32)
    features = _run(_cnn(conv_w, None), (mnist_digits.x_fit / np.float32(255))[..., None])
    onehot = np.eye(10, dtype=np.float32)[mnist_digits.y_fit]
    w, b = np.zeros((FEATURES, 10), np.float32), np.zeros(10, np.float32)
    for _ in range(100):  # the head: softmax regression on the conv features
        z = features @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        grad = (p / p.sum(axis=1, keepdims=True) - onehot) / np.float32(len(features))
        w -= np.float32(0.5) * (features.T @ grad)
        b -= np.float32(0.5) * grad.sum(axis=0)
    spec = onnx_models.digit_spec("digit_cnn", {}, {})
    model = onnx_models.save(_cnn(conv_w, (w, b)), spec, folder)
    paths = {k: os.path.join(folder, f"{k}.{ext}") for k, ext in (
        ("calibrate", "npy"), ("eval", "npz"), ("eval_unlabelled", "npy"), ("zeros", "npy"))}
    np.save(paths["calibrate"], mnist_digits.x_fit[:512, ..., None])
    np.savez(paths["eval"], images=mnist_digits.x_test[..., None], labels=mnist_digits.y_test)
    np.save(paths["eval_unlabelled"], mnist_digits.x_test[..., None])
    np.save(paths["zeros"], np.zeros((64, 28, 28, 1), np.uint8))
    return Case(model=model, folder=str(folder), **paths)


def _held_out(mnist_digits) -> np.ndarray:
    return (mnist_digits.x_test / np.float32(255))[..., None]


def _only_files(folder) -> list[str]:
    return sorted(os.listdir(folder))


# ---- int8 -------------------------------------------------------------------------------

def test_int8_keeps_accuracy_shrinks_and_records_the_report(case, mnist_digits, tmp_path):
    out = str(tmp_path / "cnn.int8.onnx")
    report = optimize(case.model, out, "int8", calibrate=case.calibrate, eval=case.eval,
                      json_path=str(tmp_path / "report.json"))
    m = report.metrics
    assert m["metric"] == "accuracy" and m["samples"] == 1000
    assert m["accuracy_float32"] > 0.8, "the float CNN must be a real classifier"
    assert report.drop_points <= 0.5, report.format()
    assert os.path.getsize(out) < 0.5 * os.path.getsize(case.model)
    assert {n.op_type for n in onnx.load(out).graph.node} >= {"QuantizeLinear", "Conv"}
    assert report.settings["activations"] == "uint8" and report.settings["weights"] == "int8"

    # The runtime loads the file unchanged and the report rides in its spec.
    model = dlinfer.Model(out)
    stored = model.spec.extra["optimize"]
    assert stored["mode"] == "int8" and stored["passed"]
    assert stored["metrics"]["accuracy"] == pytest.approx(m["accuracy"])
    assert stored["settings"]["reduce_range"] == report.settings["reduce_range"]
    clf = dlinfer.Classifier(out)
    preds = clf.predict(list(mnist_digits.x_test[:200]))
    agree = np.mean([p.index for p in preds] == _run(out, _held_out(mnist_digits)[:200])
                    .argmax(1))
    assert agree == 1.0
    assert json.loads((tmp_path / "report.json").read_text())["metrics"] == json.loads(
        json.dumps(m))


def test_int8_calibrates_on_an_image_folder(mnist_onnx, digit_pngs, tmp_path):
    """The MLP digit classifier, calibrated on PNG files through its own preprocessing."""
    paths, _ = digit_pngs
    out = str(tmp_path / "mlp.int8.onnx")
    report = optimize(mnist_onnx, out, "int8", calibrate=os.path.dirname(paths[0]),
                      max_drop=100)
    assert report.calibration.startswith("10 images from")
    assert report.written and dlinfer.Classifier(out).spec.extra["optimize"]["mode"] == "int8"


# ---- the gate -----------------------------------------------------------------------------

def test_gate_refuses_a_bad_calibration_set_naming_the_layer(case, tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(dlinfer.OptimizeError) as info:
        optimize(case.model, out, "int8", calibrate=case.zeros, eval=case.eval)
    message = str(info.value)
    assert "points" in message and "accuracy fell" in message
    # All-black calibration leaves the logits' range near zero: the head clips.
    assert "'dense_bias'" in message, message
    assert _only_files(tmp_path) == [], "a refusal writes nothing, not even a temp file"


def test_gate_refuses_any_disagreement_at_max_drop_0(case, tmp_path):
    with pytest.raises(dlinfer.OptimizeError, match="top-1 agreement .* layer adding the most"):
        optimize(case.model, tmp_path / "x.onnx", "int8", calibrate=case.calibrate,
                 eval=case.eval_unlabelled, max_drop=0)
    assert _only_files(tmp_path) == []


# ---- fp16 and graph -----------------------------------------------------------------------

def test_fp16_agrees_with_float32_on_cpu(case, mnist_digits, tmp_path):
    out = str(tmp_path / "cnn.fp16.onnx")
    report = optimize(case.model, out, "fp16", eval=case.eval)
    assert report.metrics["top1_agreement"] >= 0.999 and report.drop_points <= 0.1
    assert os.path.getsize(out) < 0.6 * os.path.getsize(case.model)
    model = dlinfer.Model(out)  # keep_io_types: float32 in and out, as before
    x = _held_out(mnist_digits)
    got = model.run(x)
    assert got.dtype == np.float32
    # float16 keeps 11 significant bits; probabilities are within 1e-3 of float32.
    assert_close(got, _run(case.model, x), atol=1e-3, context="fp16 vs float32")
    assert model.spec.extra["optimize"]["settings"]["keep_io_types"] is True


def test_fp16_io_takes_and_gives_float16_and_the_classifier_follows(case, mnist_digits,
                                                                    tmp_path):
    out = str(tmp_path / "cnn.fp16io.onnx")
    assert main(["optimize", case.model, "--out", out, "--mode", "fp16", "--fp16-io",
                 "--eval", case.eval]) == 0
    model = dlinfer.Model(out)
    assert model.inputs[0].dtype == np.float16 and model.outputs[0].dtype == np.float16
    assert model.spec.input.dtype == "float16", "the spec says what the graph takes"
    assert model.spec.extra["optimize"]["settings"]["keep_io_types"] is False
    # Classifier preprocesses straight to float16: same classes as the float32 model.
    digits = list(mnist_digits.x_test[:300])
    half = [p.index for p in dlinfer.Classifier(out).predict(digits)]
    full = [p.index for p in dlinfer.Classifier(case.model).predict(digits)]
    assert np.mean(np.equal(half, full)) >= 0.995


def test_graph_mode_records_its_provider(case, mnist_digits, tmp_path):
    out = str(tmp_path / "cnn.graph.onnx")
    report = optimize(case.model, out, "graph")  # no data: random inputs from the spec
    assert report.evaluation.startswith("random")
    stored = dlinfer.Model(out).spec.extra["optimize"]
    assert stored["settings"] == {"level": "extended", "device": "cpu",
                                  "provider": "CPUExecutionProvider",
                                  "rewrites": {"reshape_to_flatten": 1}}
    x = _held_out(mnist_digits)
    # Fusions reorder float sums; 1e-5 covers that on probabilities.
    assert_close(_run(out, x), _run(case.model, x), atol=1e-5, context="graph vs float32")


# ---- bad input ----------------------------------------------------------------------------

def test_calibration_with_the_wrong_channels_is_named(case, tmp_path):
    # uint8 pixels go through the model's preprocessing, which converts RGB to GRAY and
    # resizes as the Classifier does; what it cannot read is refused there.
    two = tmp_path / "two.npy"
    np.save(two, np.zeros((8, 28, 28, 2), np.uint8))
    with pytest.raises(dlinfer.ChannelError, match="got 2"):
        optimize(case.model, tmp_path / "x.onnx", "int8", calibrate=two)
    # Float arrays are the model's input as is: three channels for a GRAY model are wrong.
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((8, 28, 28, 3), np.float32))
    with pytest.raises(dlinfer.InputShapeError, match="rgb.npy.*size 1 on axis 3"):
        optimize(case.model, tmp_path / "x.onnx", "int8", calibrate=rgb)


def test_calibration_with_the_wrong_shape_is_named(case, tmp_path):
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((8, 784), np.float32))
    with pytest.raises(dlinfer.InputError, match="flat.npy.*rank 4"):
        optimize(case.model, tmp_path / "x.onnx", "int8", calibrate=flat)


def test_an_empty_folder_is_refused(case, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(dlinfer.InputError, match="no image files"):
        optimize(case.model, tmp_path / "x.onnx", "int8", calibrate=empty)


def test_an_already_quantized_model_is_refused(case, tmp_path):
    first = tmp_path / "once.onnx"
    optimize(case.model, first, "int8", calibrate=case.calibrate, max_drop=100)
    with pytest.raises(dlinfer.OptimizeError, match="already quantized.*QuantizeLinear"):
        optimize(first, tmp_path / "twice.onnx", "int8", calibrate=case.calibrate)
    half = tmp_path / "half.onnx"
    optimize(case.model, half, "fp16", max_drop=100)
    with pytest.raises(dlinfer.OptimizeError, match="FLOAT16 weights"):
        optimize(half, tmp_path / "again.onnx", "fp16")


def test_fp16_without_fp16_kernels_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("CumSum", ["x", "axis"], ["sums"]),
         helper.make_node("TopK", ["sums", "k"], ["top", "where"])],
        "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("top", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.array(1, np.int64), "axis"),
         numpy_helper.from_array(np.array([2], np.int64), "k")])
    path = str(tmp_path / "blocked.onnx")
    onnx.save(onnx_models.checked_model(graph), path)
    with pytest.raises(dlinfer.OptimizeError, match="no op would run in float16.*CumSum, TopK"):
        optimize(path, tmp_path / "x.onnx", "fp16")


def test_image_calibration_needs_a_spec(digit_pngs, tmp_path):
    rng = np.random.default_rng(seed_of("optimize", "plain"))
    net = onnx_models.ConvNet(rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                              np.zeros(4, np.float32),
                              rng.standard_normal((4, 5)).astype(np.float32),
                              np.zeros(5, np.float32))
    path = str(tmp_path / "plain.onnx")
    onnx.save(onnx_models.build_plain_classifier(net, 8, 8), path)
    with pytest.raises(dlinfer.OptimizeError, match="need the model's dlinfer spec"):
        optimize(path, tmp_path / "x.onnx", "int8", calibrate=os.path.dirname(digit_pngs[0][0]))
    # Arrays need no spec: they are the model's inputs as they are.
    data = tmp_path / "x.npy"
    np.save(data, rng.uniform(0, 1, (32, 3, 8, 8)).astype(np.float32))
    report = optimize(path, tmp_path / "plain.int8.onnx", "int8", calibrate=data, max_drop=100)
    assert report.metrics["metric"] == "top1_agreement" and report.written


def test_missing_files_and_missing_calibration(case, tmp_path):
    with pytest.raises(dlinfer.ModelNotFoundError):
        optimize(tmp_path / "nope.onnx", tmp_path / "x.onnx", "int8", calibrate=case.calibrate)
    with pytest.raises(dlinfer.OptimizeError, match="calibration data not found"):
        optimize(case.model, tmp_path / "x.onnx", "int8", calibrate=tmp_path / "nope.npy")
    with pytest.raises(dlinfer.OptimizeError, match="int8 needs calibration data"):
        optimize(case.model, tmp_path / "x.onnx", "int8")
    with pytest.raises(dlinfer.OptimizeError, match="mode must be one of"):
        optimize(case.model, tmp_path / "x.onnx", "int4")
    assert _only_files(tmp_path) == []


# ---- the command line ---------------------------------------------------------------------

def test_cli_writes_the_model_and_the_json_report(case, tmp_path, capsys):
    out, report = tmp_path / "cli.onnx", tmp_path / "cli.json"
    status = main(["optimize", case.model, "--out", str(out), "--mode", "int8",
                   "--calibrate", case.calibrate, "--samples", "128", "--eval", case.eval,
                   "--json", str(report)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "accuracy:" in printed and f"wrote {out}" in printed
    data = json.loads(report.read_text())
    assert data["passed"] and data["calibration"].startswith("128 uint8 samples")
    # dlinfer info says what was done to the file and at what cost.
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert f"({out.stat().st_size:,} bytes)" in info
    assert "optimized: int8, " in info and f"drop {data['drop_points']:.2f} points" in info


def test_cli_refusal_exits_1_and_writes_nothing(case, tmp_path, capsys):
    out = tmp_path / "refused.onnx"
    status = main(["optimize", case.model, "--out", str(out), "--mode", "int8",
                   "--calibrate", case.zeros, "--eval", case.eval,
                   "--json", str(tmp_path / "r.json")])
    assert status == 1
    err = capsys.readouterr().err
    assert "dlinfer: error: int8 refused" in err and "dense_bias" in err
    assert _only_files(tmp_path) == []


def test_fp16_on_the_trained_zoo_mnist_cnn_agrees_with_float32(mnist_trained, tmp_path):
    """The zoo's own mnist_cnn (trained 1 epoch on real digits), on its held-out split.

    Needs TensorFlow to train it: the fixture skips without.
    """
    out = str(tmp_path / "mnist_cnn.fp16.onnx")
    x = mnist_trained.x_test
    report = optimize(mnist_trained.onnx_path, out, "fp16",
                      eval={"images": x, "labels": mnist_trained.split.y_test})
    assert report.metrics["top1_agreement"] >= 0.999 and abs(report.drop_points) <= 0.1
    # float16 weights and activations keep 11 significant bits: 1e-3 on probabilities.
    assert_close(dlinfer.Model(out).run(x), dlinfer.Model(mnist_trained.onnx_path).run(x),
                 atol=1e-3, context="fp16 vs float32, zoo mnist_cnn")
