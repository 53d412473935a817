"""The KServe v2 / Open Inference Protocol routes of `dlinfer serve`, driven by Triton's own
client (``tritonclient.http``) against a real server subprocess.

Results are compared with :meth:`Classifier.predict` of the same images; bad tensors get
the protocol's ``{"error": message}`` with a 4xx, and the server keeps serving.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from optional import requires
from reference import assert_close
from serve_helpers import Server, call

v2 = requires("starlette", "uvicorn", "tritonclient", "geventhttpclient")


@pytest.fixture(scope="module")
def server(mnist_onnx, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("kserve"), f"mnist={mnist_onnx}", "--max-delay-ms", "5")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}") as c:
        yield c


@pytest.fixture(scope="module")
def clf(mnist_onnx):
    import dlinfer

    return dlinfer.Classifier(mnist_onnx)


def infer_input(name, array, datatype, binary=True):
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


@v2
def test_tritonclient_metadata_and_a_batch_equal_classifier_predict(client, clf, mnist_digits,
                                                                     digit_pngs):
    import tritonclient.http as httpclient

    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist") and not client.is_model_ready("nope")
    meta = client.get_model_metadata("mnist")
    assert meta["name"] == "mnist" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28, 1]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_server_metadata()["name"] == "dlinfer"

    digits = mnist_digits.x_test[:8]
    want = clf.predict_proba(digits)
    # tritonclient's default: binary tensors both ways.
    result = client.infer("mnist", [infer_input("images", digits[..., None], "UINT8")])
    assert_close(result.as_numpy("probabilities"), want, atol=1e-6, context="binary UINT8")
    assert result.get_response()["model_name"] == "mnist"

    # JSON tensors (nested lists), any image size, and the classification extension.
    big = np.kron(digits[:3], np.ones((2, 2), np.uint8))  # 56x56: resized like any image
    result = client.infer(
        "mnist", [infer_input("images", big, "UINT8", binary=False)],
        outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False,
                                                 class_count=3)])
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 3)
    for row, pred in zip(top, clf.predict(list(big), top_k=3), strict=True):
        got = [(s.decode() if isinstance(s, bytes) else s).split(":") for s in row]
        assert [(int(i), label) for _, i, label in got] == [(c.index, c.label) for c in pred.top]
        assert_close(np.array([float(p) for p, _, _ in got], np.float32),
                     np.array([c.probability for c in pred.top], np.float32), atol=1e-6)

    # Pixels already scaled (FP32), and encoded image files (BYTES).
    scaled = (digits[:2, ..., None] / np.float32(255)).astype(np.float32)
    result = client.infer("mnist", [infer_input("images", scaled, "FP32")])
    assert_close(result.as_numpy("probabilities"), clf.predict_proba(scaled), atol=1e-6)
    files = np.array([open(p, "rb").read() for p in digit_pngs[0][:4]], dtype=np.object_)
    result = client.infer("mnist", [infer_input("images", files, "BYTES")])
    assert_close(result.as_numpy("probabilities"), clf.predict_proba(digit_pngs[0][:4]),
                 atol=1e-6, context="BYTES image files")


def raw_infer(server, header, binary=b""):
    head = json.dumps(header).encode()
    headers = {"content-type": "application/octet-stream" if binary else "application/json"}
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(head))
    return call(server, "POST", "/v2/models/mnist/infer", head + binary, headers)


@v2
@pytest.mark.parametrize("header, binary, status, detail", [
    ({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28, 1],
                  "data": [0] * 10}]}, b"", 400, "holds 784 values, got 10"),
    ({"inputs": [{"name": "images", "datatype": "INT32", "shape": [1, 2, 2],
                  "data": [0] * 4}]}, b"", 400, "datatype 'INT32'"),
    ({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2],
                  "data": [0] * 4}]}, b"", 400, "the model's input is 'images'"),
    ({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 2, 2],
                  "data": [300] * 4}]}, b"", 400, "integers in [0, 255]"),
    ({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28, 1],
                  "parameters": {"binary_data_size": 700}}]}, b"\0" * 700, 400, "needs 784 bytes"),
    ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 5, 7],
                  "data": [0.5] * 35}]}, b"", 422, "28x28"),
    ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                  "parameters": {"binary_data_size": 12}}]},
     struct.pack("<I", 8) + b"GIF89a!!", 400, "not an image"),
    ({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 2, 2], "data": [0] * 4}],
      "outputs": [{"name": "logits"}]}, b"", 400, "unexpected output 'logits'"),
], ids=["shape-vs-data", "datatype", "input-name", "uint8-range", "binary-size", "float-size",
        "corrupt-file", "output-name"])
def test_a_bad_tensor_gets_the_protocols_error(server, header, binary, status, detail):
    got, body = raw_infer(server, header, binary)
    assert got == status and list(body) == ["error"] and detail in body["error"], body
    assert call(server, "GET", "/v2/health/ready")[0] == 200  # and the server keeps serving


@v2
def test_tritonclient_raises_the_servers_error(client):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="datatype 'INT32' is not one of") as err:
        client.infer("mnist", [infer_input("images", np.zeros((2, 28, 28), np.int32), "INT32")])
    assert err.value.status() == "400"
    with pytest.raises(InferenceServerException, match="no model named 'nope'") as err:
        client.infer("nope", [infer_input("images", np.zeros((1, 28, 28), np.uint8), "UINT8")])
    assert err.value.status() == "404"


@v2
def test_unknown_model_and_version_are_404(server):
    assert call(server, "GET", "/v2/models/nope")[0] == 404
    status, body = call(server, "GET", "/v2/models/mnist/versions/2")
    assert status == 404 and "only version 1" in body["error"]
    assert call(server, "GET", "/v2/models/mnist/versions/1/ready") == (
        200, {"name": "mnist", "ready": True})
