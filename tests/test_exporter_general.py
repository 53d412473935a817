"""dlinfer.export.to_onnx on models the zoo does not contain: the exporter is general.

Tolerance 1e-5 absolute on softmax outputs, as for the zoo (measured ~1e-7 here).
"""

from __future__ import annotations

import dlinfer
import numpy as np
import onnx
import pytest
from optional import HAVE_TENSORFLOW, tensorflow

if HAVE_TENSORFLOW:
    from dlinfer.export import inference_model, random_nodes, to_onnx

    from training._tf import keras

    L = keras.layers

pytestmark = tensorflow
ATOL = 1e-5


def _randomize_batchnorm(model) -> None:
    """Give BatchNormalization non-trivial statistics, so that getting it wrong shows."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                rng.normal(0, 0.3, beta.shape).astype(np.float32),
                rng.normal(0, 0.3, mean.shape).astype(np.float32),
                rng.uniform(0.5, 2.0, var.shape).astype(np.float32),
            ])


@pytest.fixture(scope="module")
def general(tmp_path_factory):
    """A Functional model: Rescaling + RandomFlip front, BN, depthwise, average pooling."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    x = L.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = L.RandomFlip("horizontal")(x)
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu6")(x)
    x = L.AveragePooling2D(2)(x)
    x = L.Conv2D(16, 1)(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(5, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="general")
    _randomize_batchnorm(model)
    path = str(tmp_path_factory.mktemp("general") / "general.onnx")
    to_onnx(model, path, labels=tuple("abcde"), color="RGB", scale=1.0)
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype(np.float32)
    return model, path, x


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_general_model_agrees(general, batch):
    model, path, x = general
    k = np.asarray(model.predict_on_batch(x[:batch]))
    o = dlinfer.Model(path).run(x[:batch])
    assert o.shape == k.shape == (batch, 5)
    assert np.abs(o - k).max() <= ATOL
    assert (o.argmax(1) == k.argmax(1)).all()


def test_general_model_graph_has_its_layers_and_no_augmentation(general):
    _, path, _ = general
    proto = onnx.load(path)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Conv", "GlobalAveragePool", "AveragePool"} <= ops, ops
    assert not random_nodes(proto)
    assert not any("random_flip" in n.name for n in proto.graph.node)
    assert dlinfer.Model(path).spec.labels == tuple("abcde")


def test_nested_augmentation_model_is_stripped_and_weights_are_shared():
    augment = keras.Sequential([L.RandomFlip(), L.RandomRotation(0.2), L.GaussianNoise(0.1)],
                               name="augment")
    inputs = keras.Input((8, 8, 1))
    dense = L.Dense(3)
    outputs = dense(L.Flatten()(augment(inputs)))
    model = keras.Model(inputs, outputs)
    clean = inference_model(model)
    assert clean is not model

    def classes(m):
        out = []
        for layer in m.layers:
            out.append(type(layer).__name__)
            out.extend(classes(layer) if hasattr(layer, "layers") else [])
        return out

    assert not any(c.startswith("Random") or c == "GaussianNoise" for c in classes(clean))
    assert dense in clean.layers  # the same layer object: weights shared, not copied
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    np.testing.assert_array_equal(model.predict_on_batch(x), clean.predict_on_batch(x))


def test_model_without_augmentation_is_used_as_is():
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    assert inference_model(model) is model


def test_export_cli_round_trip(tmp_path):
    """python -m training export KERAS_FILE --out ONNX_FILE, for a binary classifier."""
    from training.cli import main

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((6, 6, 3)), L.RandomFlip(), L.Rescaling(1 / 255),
                              L.Flatten(), L.Dense(1, activation="sigmoid")])
    keras_file = tmp_path / "m.keras"
    model.save(keras_file)
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(keras_file), "--out", str(onnx_file), "--labels", "cat,dog",
                 "--scale", "1"]) == 0
    clf = dlinfer.Classifier(str(onnx_file))
    assert clf.spec.task == "binary_classification" and clf.labels == ["cat", "dog"]
    pixels = np.random.default_rng(0).integers(0, 256, (3, 6, 6, 3), dtype=np.uint8)
    keras_p = np.asarray(model.predict_on_batch(pixels.astype(np.float32)))[:, 0]
    assert np.abs(clf.predict_proba(pixels)[:, 1] - keras_p).max() <= ATOL


def test_export_refuses_classification_on_one_sigmoid_unit():
    """Argmax over one sigmoid unit is always label 0: export points to binary instead."""
    model = keras.Sequential([keras.Input((4,)), L.Dense(1, activation="sigmoid")])
    with pytest.raises(dlinfer.errors.ExportError,
                       match=r"output 'probabilities' has 1 value per item .* use --task "
                             r"binary_classification with two labels"):
        to_onnx(model, task="classification")


def test_dlinfer_export_runs_from_the_installed_package_outside_the_repo(tmp_path):
    """`dlinfer export` as a user runs it: the installed console script, away from the repo."""
    import os
    import shutil
    import subprocess
    import sys

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(3, 3, activation="relu"),
                              L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")])
    model.save(tmp_path / "digits.keras")
    script = shutil.which("dlinfer", path=os.path.dirname(sys.executable))
    assert script, "the dlinfer console script is not installed next to this Python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = dict(cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    where = subprocess.run([sys.executable, "-c", "import dlinfer; print(dlinfer.__file__)"],
                           check=True, **run).stdout.strip()
    sources = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")
    assert "site-packages" in where and not where.startswith(sources), where
    proc = subprocess.run([script, "export", "digits.keras", "--out", "digits.onnx",
                           "--labels", "a,b,c"], **run)
    assert proc.returncode == 0, proc.stderr
    assert "wrote digits.onnx" in proc.stdout
    clf = dlinfer.Classifier(str(tmp_path / "digits.onnx"))
    assert clf.labels == ["a", "b", "c"] and clf.spec.task == "classification"
    pixels = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    keras_p = np.asarray(model.predict_on_batch(pixels.astype(np.float32) / 255))
    assert np.abs(clf.predict_proba(pixels) - keras_p).max() <= ATOL
    # A file that is not a Keras model: a clear error, exit 1, and nothing written.
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    proc = subprocess.run([script, "export", "junk.keras", "--out", "junk.onnx"], **run)
    assert proc.returncode == 1 and "cannot load junk.keras" in proc.stderr
    assert not (tmp_path / "junk.onnx").exists()
