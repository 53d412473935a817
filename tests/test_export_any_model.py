"""Bring your own Keras model: each exports faithfully, or is refused clearly.

Every model is exported by :func:`dlinfer.export.to_onnx` (which checks itself
against Keras), then checked again here, independently, on other samples: each
output within 1e-5 of Keras relative to the output's scale (max(1, max |keras|)),
argmax agreement 100% for classifier heads, and the file runs through
``dlinfer.Model``, ``dlinfer verify --per-layer`` (a full report: every layer
matched to an ONNX tensor and agreeing) and, for image classifiers, ``Classifier``.

1e-5: float32 kernels in a different order (onnxruntime's vs TensorFlow's) differ
by a few ulps per layer; measured <= 1.3e-6 on ConvNeXtTiny, the deepest here.
The Keras Applications are slow (5 to 25 s each); EfficientNetB0, whose
Normalization constants used to become graph inputs, stays in the default run.
"""

from __future__ import annotations

import dlinfer
import numpy as np
import pytest
from optional import HAVE_TENSORFLOW, tensorflow
from reference import assert_close, seed_of

if HAVE_TENSORFLOW:
    from dlinfer.export import to_onnx

    from training._tf import keras

    L = keras.layers

pytestmark = tensorflow
SCALED_ATOL = 1e-5


def _randomize_batchnorm(model, seed: int) -> None:
    """Non-trivial moving statistics, so that a wrong BatchNormalization shows."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, L.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.3, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))


def application(name: str, size: int):
    def build():
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                                  classes=10)
        _randomize_batchnorm(model, seed_of(name))
        return model
    return build


def text_cnn():
    tokens = keras.Input((20,), dtype="int32", name="tokens")
    x = L.Embedding(100, 8)(tokens)
    x = L.Conv1D(8, 3, activation="relu")(x)
    x = L.Conv1D(8, 3, groups=2)(x)
    x = L.GlobalMaxPooling1D()(x)
    return keras.Model(tokens, L.Dense(4, activation="softmax")(x), name="text_cnn")


def bidirectional_rnn():
    tokens = keras.Input((12,), dtype="int32")
    x = L.Embedding(50, 8, mask_zero=True)(tokens)
    x = L.Bidirectional(L.LSTM(6, return_sequences=True))(x)
    x = L.Bidirectional(L.GRU(5))(x)
    return keras.Model(tokens, L.Dense(2, activation="softmax")(x), name="birnn")


def masked_series():
    series = keras.Input((8, 3))
    x = L.Masking(0.0)(series)
    x = L.SimpleRNN(4, return_sequences=True)(x)
    return keras.Model(series, L.Dense(1)(L.LSTM(3)(x)), name="masked_series")


def tanh_gelu(t):
    return keras.activations.gelu(t, approximate=True)


def transformer_block():
    seq = keras.Input((10, 16), name="sequence")
    attn = L.MultiHeadAttention(num_heads=2, key_dim=8)(seq, seq)
    x = L.LayerNormalization()(seq + attn)
    ff = L.Dense(32, activation="gelu")(x)  # exact GELU, TensorFlow's Erfc
    ff = L.Dense(16)(ff)
    ff = L.Activation(tanh_gelu)(ff)
    x = L.LayerNormalization()(x + ff)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(seq, L.Dense(3, activation="softmax")(x), name="encoder")


def unet():
    image = keras.Input((32, 32, 3))
    c1 = L.Conv2D(8, 3, padding="same", activation="relu")(image)
    c2 = L.Conv2D(16, 3, padding="same", activation="relu")(L.MaxPooling2D()(c1))
    up = L.Conv2DTranspose(8, 2, strides=2)(c2)
    bilinear = L.UpSampling2D(interpolation="bilinear")(c2)
    nearest = L.UpSampling2D()(L.MaxPooling2D()(c1))
    x = L.Concatenate()([up, c1, L.Conv2D(8, 1)(bilinear), nearest])
    x = L.Resizing(24, 24)(L.Resizing(48, 48, interpolation="nearest")(x))
    return keras.Model(image, L.Conv2D(2, 1, activation="sigmoid", name="mask")(x), name="unet")


def grouped_convs():
    """Grouped and depthwise convolutions in each Keras spelling."""
    image = keras.Input((16, 16, 4))
    x = L.Conv2D(8, 3, groups=4, padding="same")(image)
    x = L.DepthwiseConv2D(3, depth_multiplier=2)(x)
    x = L.SeparableConv2D(8, 3, padding="same")(x)
    x = L.Conv2D(8, 3, groups=8)(x)  # depthwise written as a grouped Conv2D (ConvNeXt)
    x = L.Reshape((-1, 8))(x)
    x = L.Conv1D(8, 3, groups=2)(x)
    x = L.DepthwiseConv1D(3)(x)
    return keras.Model(image, L.Dense(3)(L.Flatten()(x)), name="grouped")


def two_inputs():
    image = keras.Input((8, 8, 3), name="image")
    table = keras.Input((4,), name="table")
    x = L.Concatenate()([L.Flatten()(L.Conv2D(2, 3)(image)), L.Dense(4)(table)])
    return keras.Model({"image": image, "table": table},
                       L.Dense(3, activation="softmax")(x), name="two_inputs")


def two_outputs():
    image = keras.Input((16, 16, 3), name="image")
    x = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, activation="relu")(image))
    return keras.Model(image, [L.Dense(5, activation="softmax", name="cls")(x),
                               L.Dense(4, name="box")(x)], name="two_outputs")


CASES = {
    "EfficientNetB0": application("EfficientNetB0", 32),
    "text_cnn": text_cnn,
    "bidirectional_rnn": bidirectional_rnn,
    "masked_series": masked_series,
    "transformer": transformer_block,
    "unet": unet,
    "grouped_convs": grouped_convs,
    "two_inputs": two_inputs,
    "two_outputs": two_outputs,
}
SLOW_CASES = {
    "MobileNetV2": application("MobileNetV2", 32),
    "MobileNetV3Small": application("MobileNetV3Small", 32),
    "ResNet50": application("ResNet50", 32),
    "EfficientNetV2B0": application("EfficientNetV2B0", 32),
    "DenseNet121": application("DenseNet121", 32),
    "Xception": application("Xception", 71),
    "InceptionV3": application("InceptionV3", 75),
    "ConvNeXtTiny": application("ConvNeXtTiny", 32),
}
ALL = [*CASES, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW_CASES)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (keras model, onnx path), each exported once."""
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(seed_of(name))
            model = {**CASES, **SLOW_CASES}[name]()
            path = str(tmp_path_factory.mktemp("byom") / f"{name}.onnx")
            to_onnx(model, path)
            cache[name] = model, path
        return cache[name]

    return get


def _samples(onnx_model: dlinfer.Model, name: str) -> dict[str, np.ndarray]:
    """Seven fresh samples per input (not the exporter's), drawn from the spec."""
    from dlinfer.verification.samples import random_samples

    feed = random_samples(onnx_model.spec.inputs, 7, seed_of(name, "check"))[0]
    for spec in onnx_model.spec.inputs:
        if spec.kind == "series":  # zero time steps in front, as padded series have them
            feed[spec.name][::2, :3] = 0
    return feed


def _keras_outputs(model, feed: dict[str, np.ndarray], onnx_model: dlinfer.Model) -> list:
    names = [i.name for i in onnx_model.inputs]
    arrays = [feed[n] for n in names]
    if isinstance(model._inputs_struct, dict):
        args = dict(zip(model._inputs_struct, arrays))
    else:
        args = arrays[0] if len(arrays) == 1 else arrays
    result = model(args, training=False)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(r) for r in result]


@pytest.mark.parametrize("name", ALL)
def test_export_matches_keras_and_runs_everywhere(exported, name):
    model, path = exported(name)
    onnx_model = dlinfer.Model(path)
    spec = onnx_model.spec
    assert [i.name for i in spec.inputs] == [i.name for i in onnx_model.inputs]
    assert [o.name for o in spec.outputs] == [o.name for o in onnx_model.outputs]
    assert spec.parity["max_abs_diff"] <= 1e-4 and spec.parity["samples"] == 16

    feed = _samples(onnx_model, name)
    got = onnx_model.run(feed)
    got = [got] if isinstance(got, np.ndarray) else [got[o.name] for o in onnx_model.outputs]
    want = _keras_outputs(model, feed, onnx_model)
    for output, o, k in zip(spec.outputs, got, want):
        scale = max(1.0, float(np.abs(k).max()))
        assert_close(o, k, atol=SCALED_ATOL * scale, context=f"{name}: {output.name}")
        if output.labels:
            assert (o.argmax(-1) == k.argmax(-1)).all(), f"{name}: {output.name} argmax"
            assert len(output.labels) == o.shape[-1]

    report = dlinfer.verify(model, path, per_layer=True, samples=4)
    assert report.ok, report.format()
    assert not report.notes, report.notes  # dlinfer's reference executor ran it too
    matched = [row for row in report.layers if row.comparison is not None]
    # Only a zero padding the converter folds into the next convolution has no tensor.
    assert all(row.layer_type == "ZeroPadding2D" for row in report.layers
               if row.comparison is None), report.format()
    assert len(matched) >= 3 and all(row.ok or row.fused for row in matched), report.format()

    if spec.input.kind == "image" and len(spec.inputs) == 1 and spec.labels:
        clf = dlinfer.Classifier(path)
        pixels = np.random.default_rng(seed_of(name, "pixels")).integers(
            0, 256, (3, 40, 48, 3), dtype=np.uint8)
        batch = clf.preprocess(pixels)
        k = _keras_outputs(model, {spec.input.name: batch}, onnx_model)[0]
        assert_close(clf.predict_proba(pixels), k.reshape(len(k), -1), atol=SCALED_ATOL,
                     context=f"{name}: Classifier")
        assert [p.index for p in clf.predict(pixels)] == list(k.argmax(-1))


def test_specs_describe_each_input_and_output(exported):
    spec = dlinfer.Model(exported("two_inputs")[1]).spec
    image, table = spec.inputs
    assert (image.name, image.kind, image.layout, image.color) == ("image", "image", "NHWC", "RGB")
    assert (table.name, table.kind, table.shape) == ("table", "features", (None, 4))
    assert spec.task == "classification" and spec.labels == ("0", "1", "2")

    spec = dlinfer.Model(exported("two_outputs")[1]).spec
    assert [(o.name, o.kind) for o in spec.outputs] == [("cls", "probabilities"),
                                                       ("box", "value")]
    assert spec.output.name == "cls" and spec.labels == tuple("01234")
    assert set(spec.parity["outputs"]) == {"cls", "box"}

    spec = dlinfer.Model(exported("bidirectional_rnn")[1]).spec
    assert spec.input.kind == "tokens" and spec.input.vocab_size == 50
    # Keras named these layers itself: the names say what the tensors are instead.
    assert (spec.input.name, spec.output.name) == ("tokens", "probabilities")
    spec = dlinfer.Model(exported("unet")[1]).spec
    assert (spec.task, spec.output.name, spec.output.kind) == ("regression", "mask", "images")
    # EfficientNet rescales its own pixels: the spec feeds it 0..255.
    spec = dlinfer.Model(exported("EfficientNetB0")[1]).spec
    assert spec.input.scale == 1.0


def test_efficientnet_takes_only_its_images(exported):
    """Its Normalization constants used to become two extra required graph inputs."""
    onnx_model = dlinfer.Model(exported("EfficientNetB0")[1])
    assert [i.name for i in onnx_model.inputs] == ["images"]


def test_two_input_model_runs_by_dict_and_by_position(exported):
    model, path = exported("two_inputs")
    onnx_model = dlinfer.Model(path)
    feed = _samples(onnx_model, "positional")
    by_name = onnx_model.run(feed)
    assert_close(onnx_model.run(feed["image"], feed["table"]), by_name)
    clf = dlinfer.Classifier(path)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    table = feed["table"][:2]
    want = _keras_outputs(model, {"image": clf.preprocess({"image": pixels, "table": table})
                                  ["image"], "table": table}, onnx_model)[0]
    assert_close(clf.predict_proba({"image": pixels, "table": table}), want, atol=SCALED_ATOL)


def test_gelu_exact_and_tanh_both_export(exported):
    import onnx

    ops = {n.op_type for n in onnx.load(exported("transformer")[1]).graph.node}
    assert "Erf" in ops and "Tanh" in ops and "Erfc" not in ops
