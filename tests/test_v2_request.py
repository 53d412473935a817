"""Issue 28: the KServe v2 ``/infer`` route checks every field's type and every shape's
product before use (dlinfer.serving.v2_request).

Each of the ten bodies the adversarial sweep found answered ``500 internal`` with a logged
traceback now gets 400 with the protocol's ``{"error": message}``, counted in the metrics
with the code ``bad_request``, and nothing is logged.
"""

from __future__ import annotations

import json

import pytest
from optional import requires
from serve_helpers import Server, call, metric_samples

serving = requires("starlette", "uvicorn", "prometheus_client")

INFER = "/v2/models/mnist/infer"


def good(**changes) -> dict:
    """A valid request for one 2x2 UINT8 image, with ``changes`` applied to its input."""
    tensor = {"name": "images", "datatype": "UINT8", "shape": [1, 2, 2], "data": [0, 1, 2, 3]}
    return {"inputs": [{**tensor, **changes}]}


def deep(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"


BINARY_TRUE = good(parameters={"binary_data_size": True})
del BINARY_TRUE["inputs"][0]["data"]

# (body, extra headers, what the error names)
CASES = {
    "request-parameters-list": (json.dumps({**good(), "parameters": []}).encode(), {},
                                "the request: parameters must be an object, got []"),
    "request-parameters-string": (json.dumps({**good(), "parameters": "x"}).encode(), {},
                                  "the request: parameters must be an object, got 'x'"),
    "request-parameters-number": (json.dumps({**good(), "parameters": 3}).encode(), {},
                                  "the request: parameters must be an object, got 3"),
    "input-parameters-list": (json.dumps(good(parameters=[1])).encode(), {},
                              "input 'images': parameters must be an object, got [1]"),
    "input-parameters-string": (json.dumps(good(parameters="binary")).encode(), {},
                                "input 'images': parameters must be an object"),
    "input-parameters-number": (json.dumps(good(parameters=1.5)).encode(), {},
                                "input 'images': parameters must be an object, got 1.5"),
    "output-parameters-list": (json.dumps({**good(), "outputs": [
        {"name": "probabilities", "parameters": []}]}).encode(), {},
        "output 'probabilities': parameters must be an object, got []"),
    "output-parameters-string": (json.dumps({**good(), "outputs": [
        {"name": "probabilities", "parameters": "x"}]}).encode(), {},
        "output 'probabilities': parameters must be an object, got 'x'"),
    "output-parameters-number": (json.dumps({**good(), "outputs": [
        {"name": "probabilities", "parameters": 7}]}).encode(), {},
        "output 'probabilities': parameters must be an object, got 7"),
    "datatype-list": (json.dumps(good(datatype=["UINT8"])).encode(), {},
                      "inputs[0]: datatype must be a string, got ['UINT8']"),
    "binary-data-size-true": (json.dumps(BINARY_TRUE).encode(), {},
                              "binary_data_size must be an integer >= 0, got True"),
    # http.client sends header values as Latin-1: "²" is the one byte 0xB2.
    "header-length-superscript-two": (json.dumps(good()).encode(),
                                      {"Inference-Header-Content-Length": "²"},
                                      "Inference-Header-Content-Length '²' is not a length"),
    "header-json-100k-deep": (deep(100_000), {}, "nests 100,001 levels deep"),
    "shape-2^62-4-1": (json.dumps(good(shape=[2**62, 4, 1])).encode(), {},
                       "holds more than 2**63 - 1 elements"),
    "shape-2^32-2^32-1-1": (json.dumps(good(shape=[2**32, 2**32, 1, 1])).encode(), {},
                            "holds more than 2**63 - 1 elements"),
    # Beyond the ten: the rest of the protocol's fields.
    "id-number": (json.dumps({**good(), "id": 5}).encode(), {}, "id must be a string, got 5"),
    "binary-data-output-string": (json.dumps({**good(), "parameters": {
        "binary_data_output": "yes"}}).encode(), {}, "binary_data_output must be true or false"),
    "output-binary-data-number": (json.dumps({**good(), "outputs": [
        {"name": "probabilities", "parameters": {"binary_data": 1}}]}).encode(), {},
        "binary_data must be true or false, got 1"),
    "output-classification-true": (json.dumps({**good(), "outputs": [
        {"name": "probabilities", "parameters": {"classification": True}}]}).encode(), {},
        "classification must be a count >= 0, got True"),
    "output-name-missing": (json.dumps({**good(), "outputs": [{}]}).encode(), {},
                            "outputs[0]: name must be a string, got None"),
    "inputs-object": (json.dumps({"inputs": {"name": "images"}}).encode(), {},
                      "inputs must be a list of objects"),
    "input-name-number": (json.dumps(good(name=3)).encode(), {},
                          "inputs[0]: name must be a string, got 3"),
    "shape-negative": (json.dumps(good(shape=[1, -2, 2])).encode(), {},
                       "shape must be a list of integers >= 0, got [1, -2, 2]"),
    "shape-float": (json.dumps(good(shape=[1, 2.0, 2])).encode(), {},
                    "shape must be a list of integers >= 0"),
    "shape-zero-beside-huge": (json.dumps(good(shape=[0, 2**62, 4])).encode(), {},
                               "holds more than 2**63 - 1 elements"),
    "data-strings": (json.dumps(good(data=["0", "1", "2", "3"])).encode(), {},
                     "data must be a (nested) list of numbers"),
    "data-object": (json.dumps(good(data={"a": 1})).encode(), {},
                    "input 'images': data must be a list"),
    "header-length-too-long": (json.dumps(good()).encode(),
                               {"Inference-Header-Content-Length": "9" * 40},
                               "is not a length within the body"),
}


@pytest.fixture(scope="module")
def server(mnist_onnx, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("v2"), f"mnist={mnist_onnx}", "--threads", "1",
                 "--log-level", "warning")
    yield srv
    assert srv.stop() == 0, srv.output()


@serving
@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_v2_body_is_a_json_400(server, case):
    body, headers, detail = CASES[case]
    before = metric_samples(call(server, "GET", "/metrics")[1], "dlinfer_http_requests_total",
                            outcome="bad_request", status="400")
    status, answer = call(server, "POST", INFER, body,
                          {"content-type": "application/json", **headers})
    assert status == 400 and list(answer) == ["error"], answer
    assert detail in answer["error"], answer
    after = metric_samples(call(server, "GET", "/metrics")[1], "dlinfer_http_requests_total",
                           outcome="bad_request", status="400")
    assert after == before + 1  # the code the metrics count: bad_request


@serving
def test_the_valid_request_still_works_and_nothing_was_logged(server):
    status, answer = call(server, "POST", INFER, json.dumps(good()).encode(),
                          {"content-type": "application/json"})
    assert status == 200 and answer["outputs"][0]["shape"] == [1, 10], answer
    assert "Traceback" not in server.output() and "internal" not in server.output()
