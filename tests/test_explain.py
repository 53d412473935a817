"""Classifier.explain: Grad-CAM against tf.GradientTape, saliency, occlusion, layer names,
heatmaps mapped back onto the image, and the typed errors.

The parity tests compare dlinfer's Explanation.raw (gradients from the ONNX file alone)
with the Keras Grad-CAM recipe (tests/explain_keras.py) on the same preprocessed batch
and class, on each backend.  Tolerance: 1e-4 of the map's maximum, the issue's bound.
Keras computes in float32 in TensorFlow; so does dlinfer's backward graph in
onnxruntime, with sums of hundreds of products in different orders: measured
differences 1e-7 to 3.5e-6 of the maximum.  On OpenVINO with AMX, explain's default
precision "bf16x3" splits each product in three bfloat16 ones, about 1e-5 of the
products' sum off each (dlinfer/runtime/backends/openvino/bf16x3.py): measured 1e-5 to
5.2e-5 of the maximum, the largest on small_convnet.
"""

from __future__ import annotations

import numpy as np
import pytest
from dlinfer import Classifier
from dlinfer.errors import InputError
from dlinfer.explain.cam import METHODS, to_image
from dlinfer.preprocessing.transform import Geometry
from explain_models import third_party_cnn
from optional import requires, requires_tf

# Of the map's maximum (see the module docstring).
PARITY = 1e-4
ZOO_CNNS = ("mnist_cnn", "fashion_cnn", "small_convnet", "vgg16_transfer")
BACKENDS = ("onnxruntime", pytest.param("openvino", marks=requires("openvino")))


def _zoo_images(name: str, exported) -> np.ndarray:
    import zoo_models

    if exported.x.shape[-1] == 1:
        return zoo_models.digits()[0][:3]
    return zoo_models.rgb_digits(exported.x.shape[1], 3).astype(np.uint8)


def _assert_parity(clf: Classifier, keras_model, images, layer: str, caplog) -> None:
    from dlinfer.runtime.backends.openvino import bf16x3
    from explain_keras import keras_gradcam

    with caplog.at_level("INFO", logger="dlinfer"):
        got = clf.explain(images, layer=layer)
    if clf.model.backend == "openvino" and bf16x3.available():  # the split ran, no fallback
        assert "its products in bf16x3" in caplog.text, caplog.text
    want = keras_gradcam(keras_model, clf.preprocess(images), layer,
                         [e.target for e in got], clf._binary)
    for i, (e, ref) in enumerate(zip(got, want)):
        assert e.raw.shape == ref.shape, (i, e.raw.shape, ref.shape)
        assert ref.max() > 0, f"image {i}: an all-zero reference proves nothing"
        err = np.abs(e.raw - ref).max() / ref.max()
        assert err <= PARITY, f"image {i}, layer {layer} -> {e.layer}: {err:.2e} of the max"


@requires_tf
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ZOO_CNNS)
def test_gradcam_matches_gradient_tape_on_zoo_cnns(name, backend, caplog):
    import zoo_models
    from explain_keras import last_conv2d

    exported = zoo_models.exported(name)
    clf = Classifier(exported.onnx_path, backend=backend)
    _assert_parity(clf, exported.keras_model, _zoo_images(name, exported),
                   last_conv2d(exported.keras_model), caplog)


@requires_tf
def test_default_layer_is_the_last_conv_block_with_its_activation():
    import zoo_models
    from explain_keras import last_conv2d

    exported = zoo_models.exported("mnist_cnn")
    clf = Classifier(exported.onnx_path)
    images = _zoo_images("mnist_cnn", exported)
    named = clf.explain(images[:1], layer=last_conv2d(exported.keras_model))[0]
    default = clf.explain(images[:1])[0]
    assert default.layer == named.layer and default.layer.endswith("/Relu:0")
    np.testing.assert_array_equal(default.raw, named.raw)


def _applications_model(which: str, size: int):
    from training._tf import keras

    keras.utils.set_random_seed(3)
    build = getattr(keras.applications, which)
    base = build(include_top=False, weights=None, input_shape=(size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    out = keras.layers.Dense(5, activation="softmax")(x)
    model = keras.Model(base.input, out, name=which.lower())
    rng = np.random.default_rng(3)
    for w in model.layers[-1].weights:  # a randomized head with spread-out logits
        w.assign(rng.normal(0, 0.5, size=tuple(w.shape)).astype("float32"))
    return model


@pytest.mark.slow
@requires_tf
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which,layer", [("MobileNetV2", "out_relu"),
                                         ("ResNet50", "conv5_block3_out")])
def test_gradcam_matches_gradient_tape_on_keras_applications(which, layer, backend, tmp_path,
                                                             photos, caplog):
    from dlinfer.export import to_onnx
    from PIL import Image

    size = 96  # small inputs: a 3x3 map at the last block
    model = _applications_model(which, size)
    path = str(tmp_path / f"{which}.onnx")
    to_onnx(model, path, labels=[f"c{i}" for i in range(5)], mean=(127.5,) * 3,
            std=(127.5,) * 3, scale=1.0)
    images = [np.asarray(Image.fromarray(photos[k]).resize((size, size)))
              for k in ("chelsea", "astronaut")]
    _assert_parity(Classifier(path, backend=backend), model, images, layer, caplog)


# ---- no TensorFlow: a third-party CNN described with `dlinfer spec set` --------------


def test_every_method_gives_one_heatmap_per_image_at_the_images_size(tmp_path):
    clf = Classifier(third_party_cnn(tmp_path))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
              rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    proba = clf.predict_proba(images)
    for method in METHODS:
        out = clf.explain(images, method=method)
        assert [e.target for e in out] == list(proba.argmax(axis=1)), method
        for e, img in zip(out, images):
            assert e.heatmap.shape == img.shape[:2], method
            assert e.heatmap.dtype == np.float32
            assert 0.0 <= e.heatmap.min() and e.heatmap.max() <= 1.0
            assert e.label == clf.labels[e.target]
            assert e.to_dict()["map"]
    gradcam = clf.explain(images, layer="relu2")
    assert gradcam[0].raw.shape == (8, 8) and gradcam[0].layer == "relu2"
    assert clf.explain(images, method="saliency")[0].raw.shape == (3, 16, 16)


def test_target_by_index_label_and_per_image(tmp_path):
    clf = Classifier(third_party_cnn(tmp_path))
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert clf.explain(img, target=2)[0].target == 2
    assert clf.explain(img, target="d")[0].target == 3
    assert [e.target for e in clf.explain([img, img], target=[0, 4])] == [0, 4]


def test_gradcam_weights_are_the_mean_gradient_of_the_target_logit(tmp_path):
    """The map by hand from dlinfer.explain.value_and_gradient: alpha, the sum, the ReLU."""
    from dlinfer.explain import value_and_gradient

    clf = Classifier(third_party_cnn(tmp_path))
    img = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    # float32 on both sides: "bf16x3" (explain's default) is 1e-5 off on OpenVINO
    e = clf.explain(img, layer="relu2", target=1, precision="float32")[0]
    acts, grads, _ = value_and_gradient(clf.model, clf.preprocess(img), index=[1],
                                        wrt="relu2")
    want = np.maximum(np.einsum("c,chw->hw", grads[0].mean(axis=(1, 2)), acts[0]), 0)
    np.testing.assert_allclose(e.raw, want, rtol=1e-5, atol=1e-7 * abs(want).max())


def test_the_predicted_class_gets_the_same_map_as_when_asked_for(tmp_path):
    """Without target=, each image's predicted class is found and differentiated in one
    run (an ArgMax inside the backward graph): the same numbers as asking for it."""
    clf = Classifier(third_party_cnn(tmp_path))
    images = np.random.default_rng(4).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    found = clf.explain(images)
    assert len({e.target for e in found}) > 1  # several classes in one run
    asked = clf.explain(images, target=[e.target for e in found])
    for e, a in zip(found, asked):
        # the same graph and products; 1e-6 of the map's scale for summation order
        np.testing.assert_allclose(e.raw, a.raw, rtol=1e-5, atol=1e-6 * a.raw.max())


def test_occlusion_needs_no_gradients(tmp_path):
    """An op without a backward rule stops gradcam by name; occlusion still answers."""
    from dlinfer.errors import UnsupportedGradientError

    clf = Classifier(third_party_cnn(tmp_path, extra_op="Atan"))
    img = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with pytest.raises(UnsupportedGradientError, match="Atan"):
        clf.explain(img)
    (e,) = clf.explain(img, method="occlusion")
    assert e.raw.shape == (16, 16) and np.isfinite(e.raw).all()


def test_heatmap_follows_a_centre_crop_back_onto_the_image():
    # A 16x16 input cut from the middle of a 16x32 image: the sides were never seen.
    geometry = Geometry((16, 32), (0, -8), (1.0, 1.0))
    heat = to_image(np.ones((4, 4), np.float32), (16, 16), (16, 32), geometry)
    assert heat.shape == (16, 32)
    assert (heat[:, :8] == 0).all() and (heat[:, 24:] == 0).all()
    assert (heat[:, 8:24] == 1).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="lime"), "method must be one of"),
    (dict(layer="no_such_layer"), "neither a tensor"),
    (dict(layer="logits"), "no spatial axes"),
    (dict(target=5), "target"),
    (dict(target="zebra"), "not one of the labels"),
    (dict(method="saliency", layer="relu2"), "layer= is for gradcam"),
], ids=["method", "layer", "dense-layer", "target-range", "target-label", "saliency-layer"])
def test_bad_arguments_are_input_errors(tmp_path, kwargs, match):
    clf = Classifier(third_party_cnn(tmp_path))
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(InputError, match=match):
        clf.explain(img, **kwargs)
