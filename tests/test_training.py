"""The training CLI and data sources, offline."""

from __future__ import annotations

import subprocess
import sys

import pytest
from optional import tensorflow

pytestmark = tensorflow


def test_list_shows_mnist_cnn_with_its_parameter_count():
    proc = subprocess.run([sys.executable, "-m", "training", "list"], capture_output=True,
                          text=True, timeout=300, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("mnist_cnn"))
    assert "93,322" in line


def test_zoo_models_have_the_workshop_parameter_counts():
    from training import zoo

    for entry in zoo.ZOO.values():
        assert entry.build().count_params() == entry.params, entry.name


def test_mnist5k_split_is_fixed_and_disjoint():
    from training.data import load_mnist

    a, b = load_mnist("mnist5k"), load_mnist("mnist5k")
    assert a.x_train.shape == (4000, 28, 28) and a.x_test.shape == (1000, 28, 28)
    assert a.x_train.dtype == a.x_test.dtype == "uint8"
    assert (a.y_test == b.y_test).all() and (a.x_test == b.x_test).all()
    assert sorted(set(a.y_test.tolist())) == list(range(10))
    train_rows = {r.tobytes() for r in a.x_train}
    assert not any(r.tobytes() in train_rows for r in a.x_test)


def test_full_mnist_without_network_fails_clearly(monkeypatch):
    from training import data
    from training._tf import keras

    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(data.DataUnavailableError, match="internet access or a cached copy"):
        data.load_mnist("full")


def _pass_through_classifier(path, input_spec, labels=("r", "g", "b"), threshold=None):
    """A classifier whose graph only averages its input: what matters here is the spec
    (with a threshold: a binary one, on the one channel of a gray input)."""
    import onnx
    from dlinfer.spec import METADATA_KEY, ModelSpec, OutputSpec
    from onnx import TensorProto, helper

    shape = ["N", *input_spec.shape[1:]]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2], keepdims=0),
         helper.make_node("Softmax", ["m"], ["probabilities"], axis=1)],
        "pass_through",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       ["N", len(labels) if threshold is None else 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    task = "classification" if threshold is None else "binary_classification"
    spec = ModelSpec(name="pass_through", task=task, input=input_spec,
                     output=OutputSpec(name="probabilities", kind="probabilities"),
                     labels=tuple(labels), threshold=threshold)
    model.metadata_props.add(key=METADATA_KEY, value=spec.to_json())
    onnx.save(model, path)


@pytest.mark.parametrize(
    "norm",
    [dict(scale=1.0, mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0)),  # VGG16's spec
     dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))],
    ids=["vgg16", "imagenet-std"],
)
def test_training_input_is_bit_identical_to_the_deployed_classifiers(tmp_path, norm):
    """What training feeds the model and what Classifier feeds it, bit for bit.

    Both the uint8 path (MNIST-style data) and the float path (the image-folder
    loader's resized floats, ``pixels * scale``) are checked, and the values are
    checked against the spec's formula so that the comparison is not vacuous.
    """
    import dlinfer
    import numpy as np
    from reference import assert_close

    from training.train import _input_spec, model_input

    spec = dict(input_name="images", color="RGB", **norm)
    input_spec = _input_spec(spec, (None, 12, 10, 3))
    path = str(tmp_path / "m.onnx")
    _pass_through_classifier(path, input_spec)
    clf = dlinfer.Classifier(path)
    pixels = np.random.default_rng(7).integers(0, 256, (5, 12, 10, 3), dtype=np.uint8)
    floats = (pixels * np.float32(norm["scale"])).astype(np.float32)
    for given in (pixels, floats):
        trained_on = model_input(given, input_spec)
        deployed = clf.preprocess(given)
        assert trained_on.dtype == deployed.dtype == np.float32
        np.testing.assert_array_equal(trained_on.view(np.uint32), deployed.view(np.uint32))
        # The spec's formula in float64; 1e-5 relative covers float32 rounding of the
        # coefficients and one multiply-add.
        want = (pixels * norm["scale"] - np.array(norm["mean"])) / np.array(norm["std"])
        assert_close(deployed.astype(np.float64), want, atol=1e-5, rtol=1e-5,
                     context=f"{given.dtype} input", layout="NHWC")


def test_mnist_training_input_is_what_the_classifier_feeds(tmp_path):
    """The pixel models' own normalization step (training.train._to_input), bit for bit."""
    import dlinfer
    import numpy as np

    from training.train import _input_spec, _to_input

    input_spec = _input_spec({"mean": (0.1307,), "std": (0.3081,)})
    path = str(tmp_path / "digits.onnx")
    _pass_through_classifier(path, input_spec, labels=("no", "yes"), threshold=0.5)
    digits = np.random.default_rng(3).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(_to_input(digits, input_spec).view(np.uint32),
                                  dlinfer.Classifier(path).preprocess(digits).view(np.uint32))


def test_cli_errors_follow_dlinfers_exit_rule(tmp_path, capsys):
    """docs/errors.md: one line `dlinfer: error: ...`, exit 1, the traceback only with --debug."""
    from training.cli import main

    assert main(["make-images", str(tmp_path), "--classes", "foo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlinfer: error: ValueError: classes must be two or more")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert main(["train", "resnet"]) == 1
    assert capsys.readouterr().err.startswith("dlinfer: error: unknown model 'resnet'")
    assert main(["--debug", "make-images", str(tmp_path), "--classes", "foo"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_small_convnet_takes_46_pixels_and_no_fewer():
    from training import zoo

    assert zoo.ZOO["small_convnet"].min_image_size == 46
    assert zoo.small_convnet(image_size=46).output_shape == (None, 1)
    with pytest.raises(ValueError):
        zoo.small_convnet(image_size=45)


def test_train_refuses_what_it_cannot_do_before_writing_anything(tmp_path, capsys,
                                                                 monkeypatch):
    from training import zoo
    from training.cli import main

    out = tmp_path / "out"
    assert main(["train", "small_convnet", "--image-size", "45", "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith(
        "dlinfer: error: small_convnet: --image-size 45 is too small; its architecture needs "
        "at least 46 pixels a side")
    with pytest.raises(SystemExit) as info:
        main(["train", "small_convnet", "--epochs", "0"])
    assert info.value.code == 2 and "argument --epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--epochs must be at least 1"):
        zoo.check_request(zoo.ZOO["mnist_cnn"], epochs=0, image_size=150, weights=None)

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

    monkeypatch.setattr(zoo.keras.utils, "get_file", offline)
    assert main(["train", "vgg16_transfer", "--weights", "imagenet", "--out", str(out)]) == 1
    assert "could not download VGG16's ImageNet weights" in capsys.readouterr().err
    assert not out.exists()  # no 1,000 images first
