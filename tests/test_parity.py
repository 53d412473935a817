"""Keras against ONNX on the trained MNIST CNN.

Tolerance 1e-5 absolute on softmax probabilities: both sides compute the same
float32 graph, and the measured difference is ~1e-6 (different summation order
in onnxruntime's and oneDNN's convolutions), so 1e-5 leaves room for a different
CPU without hiding a real mismatch (a wrong padding or kernel layout gives > 1e-2).
"""

from __future__ import annotations

import dlinfer
import numpy as np
import pytest
from optional import tensorflow

pytestmark = tensorflow
ATOL = 1e-5


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_keras_and_onnx_agree(mnist_trained, batch):
    x = mnist_trained.x_test[:batch]
    keras_out = np.asarray(mnist_trained.keras_model.predict_on_batch(x))
    onnx_out = dlinfer.Model(mnist_trained.onnx_path).run(x)
    assert onnx_out.shape == keras_out.shape == (batch, 10)
    assert onnx_out.dtype == np.float32
    diff = np.abs(onnx_out - keras_out).max()
    assert diff <= ATOL, f"batch {batch}: max abs diff {diff:.3g} > {ATOL}"
    assert (onnx_out.argmax(1) == keras_out.argmax(1)).all()


def test_report_records_parity_and_accuracy(mnist_trained):
    r = mnist_trained.report
    assert r["params"] == 93_322
    assert r["max_abs_diff"] <= ATOL
    assert r["argmax_agreement"] == 1.0
    assert r["keras_test_accuracy"] == r["onnx_test_accuracy"]
    # One epoch on 4,000 digits: far from chance, so agreement above means something.
    assert r["keras_test_accuracy"] > 0.8
    assert set(r["batch_max_abs_diff"]) == {"1", "7", "64"}
    assert {"keras", "tensorflow", "tf2onnx", "onnx"} <= set(r["versions"])


def test_classifier_from_uint8_pixels_matches_keras(mnist_trained):
    """End to end: raw pixels through dlinfer's native preprocessing give Keras's answer."""
    pixels = mnist_trained.split.x_test[:64]
    proba = dlinfer.Classifier(mnist_trained.onnx_path).predict_proba(pixels)
    keras_out = np.asarray(mnist_trained.keras_model.predict_on_batch(mnist_trained.x_test[:64]))
    assert np.abs(proba - keras_out).max() <= ATOL


def test_exported_graph_contract(mnist_trained):
    import onnx

    proto = onnx.load(mnist_trained.onnx_path)
    assert proto.ir_version == 8
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    (inp,) = proto.graph.input
    (out,) = proto.graph.output
    assert inp.name == "images" and out.name == "probabilities"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch must be dynamic"
    assert [d.dim_value for d in dims[1:]] == [28, 28, 1]


def test_metadata_spec_carries_everything_the_runtime_needs(mnist_trained):
    spec = dlinfer.Model(mnist_trained.onnx_path).spec
    assert spec is not None and spec.spec_version == dlinfer.spec.SPEC_VERSION == 3
    assert spec.task == "classification"
    assert spec.labels == tuple(str(i) for i in range(10))
    assert spec.input.layout == "NHWC" and spec.input.shape == (None, 28, 28, 1)
    assert spec.input.dtype == "float32" and spec.input.color == "GRAY"
    assert spec.input.scale == pytest.approx(1 / 255)
    assert spec.input.mean == (0.0,) and spec.input.std == (1.0,)
    assert {"keras", "tensorflow", "tf2onnx"} <= set(spec.versions)
    assert spec.parity["argmax_agreement"] == 1.0 and spec.parity["max_abs_diff"] <= ATOL
