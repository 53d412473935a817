"""Keras against ONNX for all 12 zoo models, at batch sizes 1, 3 and 64.

Weights are seeded random ones: parity is a property of the export, not of the
training, and random weights exercise every layer without minutes of training
(the trained figures are in the README table and in each model's report).

Tolerances: 1e-5 absolute everywhere, as the issue asks.  Measured on this
machine (TF 2.21 / oneDNN vs onnxruntime 1.31, float32): classifiers <= 1e-6,
the regression models <= 4e-6 (their outputs are raw sunspot numbers, up to ~200,
where one float32 ulp is ~1.5e-5 -- so the bound is relative to that scale and a
larger series would need a relative tolerance), generators <= 4e-7 with PSNR far
above 60 dB.  A wrong layout, padding or gate order gives differences > 1e-2.
"""

from __future__ import annotations

import functools

import dlinfer
import numpy as np
import onnx
import pytest
from optional import HAVE_TENSORFLOW, tensorflow
from zoo_models import BATCH, VGG_TEST_SIZE, build, digits, exported, rgb_digits

if HAVE_TENSORFLOW:
    from dlinfer.export import random_nodes, to_onnx

    from training import zoo
    from training.parity import psnr

pytestmark = tensorflow

ATOL = 1e-5
MIN_PSNR_DB = 60.0
NAMES = list(zoo.ZOO) if HAVE_TENSORFLOW else []


@functools.cache
def _runtime(name: str) -> dlinfer.Model:
    return dlinfer.Model(exported(name).onnx_path)


def _check_parity(name: str, keras_model, model: dlinfer.Model, x: np.ndarray, spec: dict) -> None:
    k = np.asarray(keras_model.predict_on_batch(x))
    o = model.run(x)
    assert o.shape == k.shape and o.dtype == np.float32, (o.shape, k.shape, o.dtype)
    diff = float(np.abs(o - k).max())
    assert diff <= ATOL, f"{name} batch {len(x)}: max abs diff {diff:.3g} > {ATOL}"
    task = spec["task"]
    if task == "classification":
        assert (o.argmax(-1) == k.argmax(-1)).all(), f"{name}: argmax differs"
    elif task == "binary_classification":
        t = spec["threshold"]
        assert ((o >= t) == (k >= t)).all(), f"{name}: threshold decision differs"
    elif task == "generation" and o.ndim == 4:
        assert psnr(k, o) >= MIN_PSNR_DB


@pytest.mark.parametrize("batch", [1, 3, BATCH])
@pytest.mark.parametrize("name", NAMES)
def test_keras_and_onnx_agree(name, batch):
    e = exported(name)
    _check_parity(name, e.keras_model, _runtime(name), e.x[:batch], e.spec)


@pytest.mark.parametrize("name", NAMES)
def test_exported_graph_contract(name):
    """Names, dynamic batch, no random ops, and the spec the runtime needs."""
    e = exported(name)
    entry = zoo.ZOO[name]
    proto = onnx.load(e.onnx_path)
    assert not random_nodes(proto)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == {"pixels": "images", "folder": "images", "series": "series",
                        "tokens": "tokens", "gan": "latent"}[entry.kind]
    assert out.name == {"classification": "probabilities",
                        "binary_classification": "probabilities", "regression": "value",
                        "generation": "images" if name == "dcgan_mnist" else "value",
                        }[e.spec["task"]]
    batch_dim = inp.type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value"), "batch must be dynamic"
    spec = _runtime(name).spec
    assert spec.task == e.spec["task"] and spec.name == name
    assert spec.labels == tuple(e.spec.get("labels", ()))
    if entry.kind == "series":
        assert spec.input.kind == "series" and spec.extra["n_steps"] == 3
    if entry.kind == "gan":
        assert spec.extra["latent_size"] == e.x.shape[1]
    if spec.task == "binary_classification":
        assert spec.threshold == 0.5 and len(spec.labels) == 2
    if entry.kind == "tokens":
        assert spec.input.dtype == "int32" and _runtime(name).input.dtype == np.int32


def test_augmentation_layers_are_not_in_the_graph():
    proto = onnx.load(exported("small_convnet").onnx_path)
    names = " ".join(n.name.lower() for n in proto.graph.node)
    for layer in ("random_flip", "random_rotation", "random_zoom"):
        assert layer not in names


@pytest.mark.parametrize("name", [n for n in NAMES if n != "vgg16_transfer"])
def test_built_models_have_the_workshop_parameter_counts(name):
    assert exported(name).keras_model.count_params() == zoo.ZOO[name].params


def test_vgg16_base_has_the_workshop_parameter_count():
    model = exported("vgg16_transfer").keras_model
    assert model.layers[0].count_params() == zoo.VGG16_BASE_PARAMS
    assert not model.layers[0].trainable


@pytest.mark.parametrize("name", [n for n in NAMES if zoo.ZOO[n].kind in ("pixels", "folder")])
def test_classifier_runs_every_image_classifier_with_labels_from_metadata(name):
    """dlinfer.Classifier on uint8 pixels gives Keras's probabilities and labels."""
    e = exported(name)
    clf = dlinfer.Classifier(e.onnx_path)
    if zoo.ZOO[name].kind == "pixels":
        pixels = digits()[0][:16]
    else:
        pixels = rgb_digits(int(e.x.shape[1]), 16).astype(np.uint8)
    keras_out = np.asarray(e.keras_model.predict_on_batch(e.x[:16]))
    proba = clf.predict_proba(pixels)
    if e.spec["task"] == "binary_classification":
        keras_out = np.concatenate([1 - keras_out, keras_out], axis=1)
    assert np.abs(proba - keras_out).max() <= ATOL
    assert clf.labels == list(e.spec["labels"])
    binary = e.spec["task"] == "binary_classification"
    for p, row in zip(clf.predict(pixels), keras_out, strict=True):
        want = int(row[1] >= 0.5) if binary else int(row.argmax())
        assert p.index == want and p.label == e.spec["labels"][want]


@pytest.mark.parametrize("name", ["timeseries_mlp", "timeseries_lstm"])
def test_regression_models_run_through_model_with_their_metadata(name):
    """Raw series values in, the next raw value out: no scaling by hand."""
    from training.data import series_split

    model = _runtime(name)
    n_steps = model.spec.extra["n_steps"]
    split = series_split("sunspots", n_steps)
    window = split.x_test[:5].reshape((-1, *model.input.shape[1:]))
    value = model.run(window)
    assert value.shape == (5, 1)
    keras_value = np.asarray(exported(name).keras_model.predict_on_batch(window))
    assert np.abs(value - keras_value).max() <= ATOL


@pytest.mark.slow
def test_vgg16_at_150x150_agrees(tmp_path):
    model = build("vgg16_transfer", image_size=150)
    path = str(tmp_path / "vgg16_150.onnx")
    spec = exported("vgg16_transfer").spec
    to_onnx(model, path, name="vgg16_transfer", **spec)
    x = rgb_digits(150, 8) - np.asarray(zoo.VGG_MEAN_RGB, np.float32)
    for batch in (1, 3, 8):
        _check_parity("vgg16_transfer@150", model, dlinfer.Model(path), x[:batch], spec)
    assert VGG_TEST_SIZE < 150


def test_small_convnet_with_three_classes_ends_in_softmax(tmp_path):
    model = build("small_convnet", n_classes=3, image_size=48)
    assert model.layers[-1].units == 3
    path = str(tmp_path / "three.onnx")
    spec = dict(zoo.ZOO["small_convnet"].spec, task="classification", labels=("a", "b", "c"))
    to_onnx(model, path, name="small_convnet", **spec)
    x = rgb_digits(48, 3)
    _check_parity("small_convnet/3", model, dlinfer.Model(path), x, spec)
    assert dlinfer.Classifier(path).labels == ["a", "b", "c"]
