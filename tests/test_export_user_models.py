"""Models users have, which used to crash export (issue 28): each exports, or is refused
with an ExportError that says what to do, and nothing is written on a refusal.

- a string input (TextVectorization, StringLookup): ``TypeError: data type 'string'``;
- an image-to-image model with Keras's default names (every U-Net or autoencoder built
  without names): input and output were both named ``images`` and tf2onnx dropped the input;
- a subclassed ``keras.Model``: ``AttributeError: ... has no attribute 'inputs'``;
- a Lambda layer: the CLI printed Keras's advice to pass ``safe_mode=False``.
"""

from __future__ import annotations

import dlinfer
import numpy as np
import pytest
from optional import HAVE_TENSORFLOW, tensorflow
from reference import assert_close

if HAVE_TENSORFLOW:
    from dlinfer.export import ExportError, to_onnx

    from training._tf import keras

    L = keras.layers

pytestmark = tensorflow


def test_a_string_input_is_refused_naming_the_layer_that_reads_it(tmp_path):
    inputs = keras.Input((1,), dtype="string")
    x = L.StringLookup(vocabulary=["a", "b", "c"], name="words")(inputs)
    x = L.Flatten()(L.Embedding(5, 4)(x))
    model = keras.Model(inputs, L.Dense(2, activation="softmax")(x))
    with pytest.raises(ExportError, match=r"takes strings .*'words' \(StringLookup\).*text "
                                          r"preprocessing .* before the model"):
        to_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_default_named_image_to_image_model_exports(tmp_path):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    skip = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = L.UpSampling2D()(L.MaxPooling2D()(skip))
    outputs = L.Conv2D(3, 1, activation="sigmoid")(L.Concatenate()([x, skip]))
    model = keras.Model(inputs, outputs)
    to_onnx(model, tmp_path / "unet.onnx")
    onnx_model = dlinfer.Model(str(tmp_path / "unet.onnx"))
    # The output may not take the input's name: it gets the uniqueness suffix.
    assert [i.name for i in onnx_model.inputs] == ["images"]
    assert [o.name for o in onnx_model.outputs] == ["images_1"]
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    # float32 convolutions summed in another order: 1e-5 covers the rounding.
    assert_close(onnx_model.run(x), np.asarray(model(x)), atol=1e-5, rtol=1e-5)


class TinyNet(keras.Model if HAVE_TENSORFLOW else object):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = L.Dense(8, activation="relu")
        self.head = L.Dense(3, activation="softmax")

    def call(self, x):
        return self.head(self.hidden(x))


def test_a_subclassed_model_exports_through_its_call_once_built(tmp_path):
    keras.utils.set_random_seed(5)
    unbuilt = TinyNet()
    with pytest.raises(ExportError, match=r"subclassed keras.Model \(TinyNet\).*wrap it: "
                                          r"inp = keras.Input"):
        to_onnx(unbuilt, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()

    built = TinyNet()
    x = np.random.default_rng(1).random((4, 5), dtype=np.float32)
    want = np.asarray(built(x))
    to_onnx(built, tmp_path / "m.onnx", labels=["a", "b", "c"])
    # float32 dense layers: 1e-6 covers summation order.
    assert_close(dlinfer.Model(str(tmp_path / "m.onnx")).run(x), want, atol=1e-6, rtol=1e-5)


def _lambda_model_file(tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = L.Lambda(lambda t: t / 127.5 - 1)(inputs)
    model = keras.Model(inputs, L.Dense(2, activation="softmax")(L.Flatten()(x)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    return path


def test_a_lambda_layer_loads_with_unsafe_deserialization_and_a_warning(tmp_path, capsys,
                                                                        caplog):
    from dlinfer.tools.cli import main

    path = _lambda_model_file(tmp_path)
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "holds a Lambda layer" in err and "--unsafe-deserialization" in err
    assert "safe_mode=False" not in err and not out.exists()

    assert main(["export", str(path), "--out", str(out), "--unsafe-deserialization"]) == 0
    assert "runs the Python code stored in the file" in caplog.text
    assert out.exists() and f"wrote {out}" in capsys.readouterr().out
