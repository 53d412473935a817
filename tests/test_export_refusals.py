"""An export that would be broken is refused, by name, and writes nothing.

The broken graphs here are made the way they arise: tf2onnx's own
``from_function`` turns an eagerly captured constant into a graph input (what
EfficientNet's Normalization did), and a converter bug that changes a weight is
played by perturbing one initializer of a correct conversion.
"""

from __future__ import annotations

import logging

import dlinfer
import numpy as np
import onnx
import pytest
from optional import HAVE_TENSORFLOW, tensorflow

if HAVE_TENSORFLOW:
    from dlinfer.export import ExportError, convert, prepare, to_onnx
    from dlinfer.export import keras as exporter

    from training._tf import keras, tf

    L = keras.layers

pytestmark = tensorflow


class Shift(L.Layer if HAVE_TENSORFLOW else object):
    """Adds a constant captured eagerly, as Keras' Normalization holds its mean."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.offset = tf.constant([0.5, -0.25, 1.0])

    def call(self, x):
        return x - self.offset


def _shift_model():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((3,), name="features")
    return keras.Model(inputs, L.Dense(2)(Shift(name="shift")(inputs)), name="shifted")


def test_a_captured_constant_is_folded_into_the_graph(tmp_path):
    path = tmp_path / "ok.onnx"
    to_onnx(_shift_model(), path)
    assert [i.name for i in dlinfer.Model(str(path)).inputs] == ["features"]


def test_a_graph_input_that_is_not_a_model_input_fails_the_export(tmp_path, monkeypatch):
    import tf2onnx

    def as_from_function_did(model, traced):
        spec = tf.TensorSpec([None, 3], tf.float32, name=traced.input_names[0])

        @tf.function(input_signature=[spec])
        def f(x):
            return {traced.output_names[0]: model(x, training=False)}

        return tf2onnx.convert.from_function(f, input_signature=[spec], opset=17)[0]

    monkeypatch.setattr(exporter, "convert", as_from_function_did)
    path = tmp_path / "broken.onnx"
    with pytest.raises(ExportError) as info:
        to_onnx(_shift_model(), path)
    message = str(info.value)
    assert "are not model inputs" in message and "shift" in message, message
    assert "['features']" in message and "not written" in message
    assert not path.exists() and not list(tmp_path.iterdir())


def test_outputs_that_differ_from_keras_fail_the_export(tmp_path, monkeypatch):
    def with_a_wrong_weight(model, traced):
        proto = convert.convert(model, traced)
        weights = max(proto.graph.initializer, key=lambda t: len(t.raw_data or t.float_data))
        array = onnx.numpy_helper.to_array(weights).copy()
        array.flat[0] += 0.5
        weights.CopyFrom(onnx.numpy_helper.from_array(array, weights.name))
        return proto

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"),
                              L.Dense(3, activation="softmax")], name="seq")
    monkeypatch.setattr(exporter, "convert", with_a_wrong_weight)
    path = tmp_path / "wrong.onnx"
    with pytest.raises(ExportError) as info:
        to_onnx(model, path, labels=("a", "b", "c"))
    message = str(info.value)
    assert "differs from Keras on 16 samples" in message
    assert "output 'probabilities'" in message and "worst at index" in message, message
    assert "--atol" in message and not path.exists()


def test_output_names_that_differ_from_the_model_fail():
    from dlinfer.export.validate import check_io

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 2])])
    traced = convert.Traced(["x"], [None], ["probabilities"], [None], None, [0])
    with pytest.raises(ExportError, match=r"model output\(s\) \['probabilities'\] are missing"):
        check_io(onnx.helper.make_model(graph), traced, "m")


def test_a_layer_onnx_cannot_express_is_named_before_conversion(tmp_path, monkeypatch):
    class Igamma(L.Layer):
        """Built on a TensorFlow op with no ONNX counterpart."""

        def call(self, x):
            return tf.math.igamma(x * x + 1.0, x * x + 2.0)

    import tf2onnx

    def never(*args, **kwargs):
        raise AssertionError("the converter ran on a graph the preflight should refuse")

    monkeypatch.setattr(tf2onnx.convert, "_convert_common", never)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), Igamma(name="odd_layer")])
    with pytest.raises(ExportError) as info:
        to_onnx(model, tmp_path / "x.onnx")
    message = str(info.value)
    assert "layer 'odd_layer' (Igamma) (op Igamma)" in message, message
    assert "has no equivalent" in message and "standard Keras layers" in message
    assert not (tmp_path / "x.onnx").exists()


def test_recurrent_layers_are_traced_without_cudnn_and_restored():
    lstm = L.LSTM(4)
    wrapped = L.Bidirectional(L.GRU(3, return_sequences=True))
    inputs = keras.Input((5, 2))
    model = keras.Model(inputs, lstm(wrapped(inputs)))
    inner = [wrapped.forward_layer, wrapped.backward_layer, lstm]
    assert all(layer.use_cudnn == "auto" for layer in inner)
    with prepare.tracing(model):
        assert all(layer.use_cudnn is False for layer in inner)
    assert all(layer.use_cudnn == "auto" for layer in inner)


def test_a_classifier_without_labels_gets_index_labels(tmp_path, caplog):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Flatten(),
                              L.Dense(4, activation="softmax")], name="unlabelled")
    path = tmp_path / "m.onnx"
    with caplog.at_level(logging.WARNING, logger="dlinfer"):
        to_onnx(model, path)
    assert "index labels '0'..'3'" in caplog.text
    clf = dlinfer.Classifier(str(path))
    assert clf.labels == ["0", "1", "2", "3"]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 6, 6), dtype=np.uint8)
    assert {p.label for p in clf.predict(pixels)} <= set(clf.labels)


def test_wrong_label_counts_and_names_are_refused(tmp_path):
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, activation="softmax")])
    with pytest.raises(ExportError, match=r"4 unit\(s\) but 3 labels"):
        to_onnx(model, labels=("a", "b", "c"))
    two = keras.Model(model.inputs, [model.outputs[0], L.Dense(1, name="score")(model.inputs[0])])
    with pytest.raises(ExportError, match="give labels as a dict"):
        to_onnx(two, labels=("a", "b", "c", "d"))
    with pytest.raises(ExportError, match="not a named output"):
        to_onnx(two, labels={"nope": ("a",)})


def test_export_cli_checks_against_given_data_and_reports_parity(tmp_path, capsys):
    from dlinfer.tools.cli import main

    keras.utils.set_random_seed(9)
    image = keras.Input((8, 8, 3), name="image")
    table = keras.Input((2,), name="table")
    x = L.Concatenate()([L.GlobalAveragePooling2D()(image), table])
    model = keras.Model([image, table], L.Dense(2, activation="softmax", name="cls")(x))
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "data.npz", image=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
             table=rng.standard_normal((5, 2)).astype(np.float32))
    (tmp_path / "labels.txt").write_text("cat\n\ndog\n")
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "m.keras"), "--out", str(out), "--labels",
                 str(tmp_path / "labels.txt"), "--data", str(tmp_path / "data.npz")]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: matches Keras on 5 samples" in printed
    assert "cls " in printed and "argmax agreement 100%" in printed
    spec = dlinfer.Model(str(out)).spec
    assert spec.labels == ("cat", "dog") and "data.npz" in spec.parity["data"]
    assert main(["verify", str(tmp_path / "m.keras"), str(out), "--data",
                 str(tmp_path / "data.npz")]) == 0
    assert "5 uint8 samples from" in capsys.readouterr().out

    # Data that does not fit the model: exit 1, a message naming the inputs, no file.
    np.save(tmp_path / "one.npy", np.zeros((3, 2), np.float32))
    assert main(["export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "bad.onnx"),
                 "--data", str(tmp_path / "one.npy")]) == 1
    assert "give the data as a dict or .npz" in capsys.readouterr().err
    assert not (tmp_path / "bad.onnx").exists()
