"""The reference executor and `dlinfer verify` on every dense, conv and GAN model of the zoo.

Each model is built with random weights (and non-zero biases), exported with
dlinfer.export.to_onnx and compared: reference executor vs onnxruntime within
1e-4 absolute, and `verify --per-layer` must pass.  Then deliberately broken
exports (one conv's weights perturbed, one conv's padding changed) must be
named by the per-layer walk, exactly.
"""

from __future__ import annotations

import json
import os

import dlinfer
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import zoo_export_models
from dlinfer.tools.cli import main
from dlinfer.verification import reference
from onnx import TensorProto, helper, numpy_helper
from optional import need, tensorflow
from reference import assert_close

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (keras_path, onnx_path, keras_model), built on first use."""
    need("tensorflow")
    folder = tmp_path_factory.mktemp("zoo5")
    cache: dict[str, tuple[str, str, object]] = {}

    def get(name: str):
        if name not in cache:
            onnx_path = os.path.join(folder, f"{name}.onnx")
            keras_path = os.path.join(folder, f"{name}.keras")
            model = zoo_export_models.export(name, onnx_path)
            model.save(keras_path)
            cache[name] = (keras_path, onnx_path, model)
        return cache[name]

    return get


def _sample(onnx_path: str, n: int = 5) -> tuple[str, np.ndarray]:
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [n] + list(inp.shape[1:])
    return inp.name, np.random.default_rng(3).uniform(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize("name", zoo_export_models.NAMES)
def test_reference_executor_reproduces_onnxruntime(name, exported):
    _, onnx_path, _ = exported(name)
    input_name, x = _sample(onnx_path)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    expected = sess.run(None, {input_name: x})
    got = reference.run(onnx_path, {input_name: x})
    assert list(got) == [o.name for o in sess.get_outputs()]
    for (out_name, g), e in zip(got.items(), expected, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype, out_name
        err = float(np.max(np.abs(g - e)))
        assert err <= 1e-4, f"{name}: {out_name} differs from onnxruntime by {err:.3g}"


@pytest.mark.parametrize("name", zoo_export_models.NAMES)
def test_verify_per_layer_passes(name, exported):
    keras_path, onnx_path, model = exported(name)
    report = dlinfer.verify(model, onnx_path, per_layer=True, samples=4)
    assert report.ok, report.format()
    assert report.layers and all(layer.onnx_tensor for layer in report.layers), report.format()
    assert {c.name for c in report.outputs} == {
        "onnxruntime vs keras",
        "reference vs keras",
        "reference vs onnxruntime",
    }


@pytest.mark.slow
@tensorflow
@pytest.mark.parametrize("name", ["small_convnet", "vgg16_transfer"])
def test_full_size_models_reference_and_verify(name, tmp_path):
    """The zoo's own 150x150 input (the default run uses a small one)."""
    onnx_path = str(tmp_path / f"{name}.onnx")
    model = zoo_export_models.export(name, onnx_path, small=False)
    report = dlinfer.verify(model, onnx_path, per_layer=True, samples=2)
    assert report.ok, report.format()


def _conv_nodes(proto):
    return [n for n in proto.graph.node if n.op_type == "Conv"]


def test_per_layer_names_the_conv_whose_weights_were_perturbed(exported, tmp_path):
    keras_path, onnx_path, model = exported("mnist_cnn")
    proto = onnx.load(onnx_path)
    conv = _conv_nodes(proto)[1]  # the second convolution
    init = {t.name: t for t in proto.graph.initializer}[conv.input[1]]
    w = numpy_helper.to_array(init).copy()
    w[0, 0, 0, 0] += 0.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    broken = str(tmp_path / "broken.onnx")
    onnx.save(proto, broken)

    report = dlinfer.verify(model, broken, per_layer=True, samples=4)
    assert not report.ok
    conv_names = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert report.first_bad_layer.layer == conv_names[1], report.format()
    assert all(layer.ok for layer in report.layers[: report.first_bad_layer.index]), report.format()
    # onnxruntime sees the same perturbed tensor: the export is to blame, not dlinfer's kernels.
    assert report.first_bad_layer.onnxruntime is not None
    assert not report.first_bad_layer.onnxruntime.ok
    assert "the export differs from Keras" in report.format()

    # The command line: human table, exit status 1, and JSON naming the same layer.
    assert main(["verify", keras_path, broken, "--per-layer", "--samples", "4", "--json"]) == 1


def test_a_broken_reference_kernel_is_not_blamed_on_the_export(exported, monkeypatch):
    """If dlinfer's own conv were wrong, onnxruntime would still match Keras at that layer."""
    _, onnx_path, model = exported("mnist_cnn")
    conv = reference._OPS["Conv"]
    monkeypatch.setitem(reference._OPS, "Conv", lambda node: conv(node) * np.float32(1.01))
    report = dlinfer.verify(model, onnx_path, per_layer=True, samples=3)
    bad = report.first_bad_layer
    assert bad is not None and bad.index == 0 and bad.onnxruntime.ok, report.format()
    assert "suspect dlinfer's reference kernels" in report.format()
    assert report.outputs[0].name == "onnxruntime vs keras" and report.outputs[0].ok


def test_per_layer_names_the_conv_whose_padding_was_changed(exported, tmp_path, capsys):
    keras_path, onnx_path, model = exported("dcgan_mnist")
    proto = onnx.load(onnx_path)
    conv = _conv_nodes(proto)[-1]  # Conv2D(1, 7, padding="same"): pads 3,3,3,3
    pads = next(a for a in conv.attribute if a.name == "pads")
    assert list(pads.ints) == [3, 3, 3, 3]
    pads.ints[:] = [2, 2, 4, 4]  # same output size, shifted window
    broken = str(tmp_path / "broken_pads.onnx")
    onnx.save(proto, broken)

    assert main(["verify", keras_path, broken, "--per-layer", "--samples", "3", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    conv_names = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert report["first_bad_layer"] == conv_names[-1]
    assert report["ok"] is False


@tensorflow
def test_per_layer_walks_a_branching_model(tmp_path):
    from dlinfer.export import to_onnx

    from training._tf import keras

    inp = keras.Input((4,))
    left, right = keras.layers.Dense(4, name="left"), keras.layers.Dense(4, name="right")
    out = keras.layers.Add(name="join")([left(inp), right(inp)])
    model = keras.Model(inp, out, name="branches")
    path = str(tmp_path / "branches.onnx")
    to_onnx(model, path, task="regression", input_kind="features", output_kind="value")
    report = dlinfer.verify(model, path, per_layer=True)
    assert report.ok, report.format()
    assert [row.layer for row in report.layers] == ["left", "right", "join"]
    assert all(row.comparison is not None for row in report.layers), report.format()


def test_verify_cli_passes_with_npy_data(exported, tmp_path, capsys):
    keras_path, onnx_path, _ = exported("mnist_cnn")
    data = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "digits.npy", data)
    assert (
        main(
            ["verify", keras_path, onnx_path, "--data", str(tmp_path / "digits.npy"), "--per-layer"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "6 uint8 samples" in out and "OK: all outputs agree layer by layer" in out
    assert "onnxruntime vs keras" in out and "max abs" in out


def test_verify_with_an_image_folder(exported, tmp_path):
    from PIL import Image

    _, onnx_path, model = exported("mnist_cnn")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    report = dlinfer.verify(model, onnx_path, str(tmp_path))
    assert report.ok and report.samples == 3, report.format()
    assert "3 images from" in report.data_source


def test_reference_returns_intermediate_tensors_by_name(exported):
    _, onnx_path, _ = exported("mnist_cnn")
    proto = onnx.load(onnx_path)
    first_conv = _conv_nodes(proto)[0].output[0]
    input_name, x = _sample(onnx_path, 2)
    got = reference.run(proto, {input_name: x}, outputs=[first_conv, "probabilities"])
    assert list(got) == [first_conv, "probabilities"]
    assert got[first_conv].shape == (2, 32, 26, 26)
    with pytest.raises(dlinfer.InputError, match="no tensor named 'nope'"):
        reference.run(proto, {input_name: x}, outputs=["nope"])


def test_unsupported_op_names_op_and_node():
    node = helper.make_node("Det", ["x"], ["y"], name="my_det")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(
        reference.UnsupportedOpError, match="op 'Det' .node 'my_det'. is not supported"
    ):
        reference.run(model, np.zeros((2, 2), np.float32))
    assert issubclass(reference.UnsupportedOpError, dlinfer.DlinferError)


NO_TF_SCRIPT = """
import json, sys
import dlinfer
from dlinfer.verification import reference
x = __import__("numpy").random.default_rng(0).uniform(0, 1, (2, 28, 28, 1)).astype("float32")
reference.run(sys.argv[1], x)
report = dlinfer.verify(None, sys.argv[1], samples=2)
mods = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))
print(json.dumps({"ok": report.ok, "modules": mods}))
"""


def test_reference_and_onnx_only_verify_never_import_tensorflow(exported):
    import subprocess
    import sys

    _, onnx_path, _ = exported("mnist_cnn")
    proc = subprocess.run(
        [sys.executable, "-c", NO_TF_SCRIPT, onnx_path],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"ok": True, "modules": []}


def test_reference_executor_on_a_graph_of_every_supported_family():
    """Ops the zoo's exports do not all use, in one hand-built graph, against onnxruntime."""
    rng = np.random.default_rng(2)
    f = TensorProto.FLOAT

    def const(name, arr):
        return numpy_helper.from_array(np.asarray(arr), name)

    inits = [
        const("w", rng.uniform(-1, 1, (6, 3, 3, 3)).astype(np.float32)),
        const("bn_g", rng.uniform(0.5, 1.5, 6).astype(np.float32)),
        const("bn_b", rng.uniform(-1, 1, 6).astype(np.float32)),
        const("bn_m", rng.uniform(-1, 1, 6).astype(np.float32)),
        const("bn_v", rng.uniform(0.5, 2, 6).astype(np.float32)),
        const("gw", rng.uniform(-1, 1, (5, 6)).astype(np.float32)),
        const("gb", rng.uniform(-1, 1, 5).astype(np.float32)),
        const("idx", np.array([4, 0, 2], np.int64)),
        const("starts", np.array([1], np.int64)),
        const("ends", np.array([np.iinfo(np.int64).max], np.int64)),
        const("axes0", np.array([0], np.int64)),
        const("two", np.array(2.0, np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n(
            "Conv",
            ["x", "w"],
            ["c"],
            pads=[1, 0, 1, 2],
            strides=[2, 1],
            dilations=[1, 2],
            name="conv",
        ),
        n("BatchNormalization", ["c", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-3),
        n("Tanh", ["bn"], ["t"]),
        n(
            "AveragePool",
            ["t"],
            ["ap"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
            ceil_mode=1,
        ),
        n("MaxPool", ["t"], ["mp"], kernel_shape=[2, 2], auto_pad="SAME_UPPER", strides=[2, 2]),
        n("GlobalAveragePool", ["ap"], ["gap"]),
        n("GlobalMaxPool", ["mp"], ["gmp"]),
        n("Sub", ["gap", "gmp"], ["d"]),
        n("Div", ["d", "two"], ["d2"]),
        n("Flatten", ["d2"], ["flat"], axis=1),
        n("Dropout", ["flat"], ["drop"]),
        n("Gemm", ["drop", "gw", "gb"], ["g"], transB=1),
        n("Sigmoid", ["g"], ["s"]),
        n("Gather", ["s", "idx"], ["ga"], axis=1),
        n("Unsqueeze", ["ga", "axes0"], ["u"]),
        n("Squeeze", ["u", "axes0"], ["sq"]),
        n("Slice", ["sq", "starts", "ends", "axes0"], ["sl"]),
        n("Concat", ["sq", "sl"], ["cat"], axis=0),
        n("Identity", ["cat"], ["id"]),
        n("Softmax", ["id"], ["y"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "families",
        [helper.make_tensor_value_info("x", f, [3, 3, 11, 12])],
        [helper.make_tensor_value_info("y", f, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.uniform(-1, 1, (3, 3, 11, 12)).astype(np.float32)
    expected = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    got = reference.run(model, x)["y"]
    assert got.shape == expected.shape
    assert_close(got, expected, atol=1e-5, rtol=1e-5)


@tensorflow
def test_layers_beyond_the_zoo_reference_and_per_layer(tmp_path):
    """BatchNormalization, DepthwiseConv2D, AveragePooling2D, GlobalAveragePooling2D, Rescaling:
    the layers issue 3 uses to prove the exporter general must run here too."""
    from dlinfer.export import to_onnx

    from training._tf import keras

    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Rescaling(1.0 / 127.5, offset=-1.0),
            L.Conv2D(8, 3, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="tanh"),
            L.AveragePooling2D(2),
            L.Conv2D(6, 3, strides=2, padding="same", activation="sigmoid"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, activation="softmax"),
        ],
        name="beyond_zoo",
    )
    rng = np.random.default_rng(5)
    for w in model.weights:  # non-trivial BN statistics and biases
        w.assign(
            rng.uniform(0.5, 1.5, tuple(w.shape)).astype("float32")
            if "variance" in w.path
            else rng.uniform(-0.5, 0.5, tuple(w.shape)).astype("float32")
        )
    path = str(tmp_path / "beyond.onnx")
    to_onnx(model, path, labels=("a", "b", "c"), scale=1.0)
    x = rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"images": x})[0]
    assert_close(reference.run(path, x)["probabilities"], expected, atol=1e-5)
    report = dlinfer.verify(model, path, x, per_layer=True)
    assert report.ok, report.format()


def _single_node(op, x, inits, **attrs):
    node = helper.make_node(op, ["x", *inits], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize(("k", "s"), [(3, 2), (4, 2), (3, 3)])
def test_conv_transpose_auto_pad_and_pad_match_onnxruntime(auto_pad, k, s):
    rng = np.random.default_rng(k * 10 + s)
    x = rng.uniform(-1, 1, (2, 3, 5, 6)).astype(np.float32)
    model = _single_node(
        "ConvTranspose",
        x,
        {"w": rng.uniform(-1, 1, (3, 4, k, k)).astype(np.float32)},
        strides=[s, s],
        auto_pad=auto_pad,
        kernel_shape=[k, k],
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x})[0]
    assert_close(reference.run(model, x)["y"], expected, atol=1e-5)

    model = _single_node(
        "Pad",
        x,
        {"pads": np.array([0, 1, 2, 0, 0, 0, 1, 3], np.int64), "value": np.array(0.5, np.float32)},
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(reference.run(model, x)["y"], sess.run(None, {"x": x})[0])
