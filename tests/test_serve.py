"""`dlinfer serve` over real HTTP: a subprocess on a free loopback port, stopped by its pid.

Every route, every error code, decompression bombs, and a graceful SIGTERM shutdown
that finishes the request it holds.  Nothing here asserts on wall time: readiness and
shutdown are polled for, with generous limits that only a hung server reaches.
The HTTP tests need Starlette and uvicorn (the ``serve`` extra); each skips without them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import dlinfer
import numpy as np
import pytest
from dlinfer.preprocessing.decode import DEFAULT_MAX_IMAGE_BYTES, decode_bytes
from optional import requires
from serve_helpers import Server, call, metric_samples, multipart, post_json, zero_png

serving = requires("starlette", "uvicorn")

MAX_QUEUE = 4
MAX_BODY = 1024 * 1024  # room for the bombs below (a few hundred KB each)


@pytest.fixture(scope="module")
def server(mnist_onnx, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"), f"mnist={mnist_onnx}", f"again={mnist_onnx}",
                 "--max-batch-size", "8", "--max-delay-ms", "2", "--max-queue", str(MAX_QUEUE),
                 "--max-body-bytes", str(MAX_BODY), "--threads", "1", "--log-level", "warning")
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.fixture(scope="module")
def clf(mnist_onnx):
    return dlinfer.Classifier(mnist_onnx, threads=1)


def check_matches(preds, direct):
    assert len(preds) == len(direct)
    for got, want in zip(preds, direct, strict=True):
        assert got["label"] == want.label and got["index"] == want.index
        assert got["probability"] == pytest.approx(want.probability, rel=1e-5, abs=1e-6)
        assert [c["index"] for c in got["top"]] == [c.index for c in want.top]


# -- routes ------------------------------------------------------------------------------------

@serving
def test_healthz_and_models(server):
    assert call(server, "GET", "/healthz") == (200, {"status": "ok", "models": ["again", "mnist"]})
    status, body = call(server, "GET", "/v1/models")
    assert status == 200 and [m["name"] for m in body["models"]] == ["mnist", "again"]
    meta = body["models"][0]
    assert meta["labels"] == [str(i) for i in range(10)] and meta["task"] == "classification"
    assert meta["input"]["shape"] == [None, 28, 28, 1] and meta["max_queue"] == MAX_QUEUE
    assert call(server, "GET", "/v1/models/again")[1]["name"] == "again"


@serving
def test_predict_raw_body_matches_direct_prediction(server, clf, digit_pngs):
    paths, _ = digit_pngs
    for path in paths[:4]:
        with open(path, "rb") as f:
            status, body = call(server, "POST", "/v1/models/mnist/predict?top_k=3", f.read())
        assert status == 200 and body["model"] == "mnist"
        check_matches(body["predictions"], clf.predict(path, top_k=3))
        assert len(body["predictions"][0]["top"]) == 3


@serving
def test_predict_multipart_and_json(server, clf, digit_pngs, mnist_digits):
    paths, _ = digit_pngs
    data, headers = multipart({f"f{i}": open(p, "rb").read() for i, p in enumerate(paths[:3])})
    status, body = call(server, "POST", "/v1/models/again/predict", data, headers)
    assert status == 200
    check_matches(body["predictions"], clf.predict(paths[:3]))

    pixels = mnist_digits.x_test[20:23]
    status, body = post_json(server, "/v1/models/mnist/predict?top_k=2",
                             {"images": pixels.tolist()})
    assert status == 200
    check_matches(body["predictions"], clf.predict(pixels, top_k=2))
    scaled = (pixels[0] / 255.0).astype(np.float32)
    status, body = post_json(server, "/v1/models/mnist/predict", {"image": scaled.tolist()})
    assert status == 200
    check_matches(body["predictions"], clf.predict(scaled))


@serving
def test_metrics(server, digit_pngs):
    call(server, "POST", "/v1/models/mnist/predict", b"not an image")
    with open(digit_pngs[0][0], "rb") as f:
        call(server, "POST", "/v1/models/mnist/predict", f.read())
    status, text = call(server, "GET", "/metrics")
    assert status == 200
    route = "/v1/models/{name}/predict"
    assert metric_samples(text, "dlinfer_http_requests_total", route=route, model="mnist",
                          status="400", outcome="not_an_image") >= 1
    assert metric_samples(text, "dlinfer_http_requests_total", route=route, model="mnist",
                          status="200", outcome="ok") >= 1
    assert metric_samples(text, "dlinfer_batch_size_count", model="mnist") >= 1
    assert metric_samples(text, "dlinfer_queue_wait_seconds_count", model="mnist") >= 1
    assert "# TYPE dlinfer_http_request_duration_seconds histogram" in text


# -- errors: JSON, 4xx, and the server stays up ------------------------------------------------

@serving
@pytest.mark.parametrize(
    "path, body, headers, status, code, detail",
    [
        ("/v1/models/mnist/predict", b"GIF89a nonsense", {}, 400, "not_an_image", "not an image"),
        ("/v1/models/mnist/predict", b"", {}, 400, "not_an_image", "empty body"),
        ("/v1/models/mnist/predict", json.dumps({"image": np.full((5, 7), 0.5).tolist()}).encode(),
         {"content-type": "application/json"}, 422, "bad_input", "28x28"),
        ("/v1/models/mnist/predict", json.dumps({"image": [[0, 1], [2]]}).encode(),
         {"content-type": "application/json"}, 422, "bad_input", "rectangular"),
        ("/v1/models/mnist/predict", b"{oops", {"content-type": "application/json"}, 400,
         "bad_json", "not valid JSON"),
        ("/v1/models/mnist/predict", json.dumps({"pixels": []}).encode(),
         {"content-type": "application/json"}, 400, "bad_json", '"images"'),
        ("/v1/models/nope/predict", b"x", {}, 404, "unknown_model", "no model named 'nope'"),
        ("/v1/models/mnist/predict", b"x" * (MAX_BODY + 1), {}, 413, "payload_too_large",
         f"limit of {MAX_BODY} bytes"),
        ("/v1/models/mnist/predict", json.dumps({"images": [[[0] * 28] * 28] * (MAX_QUEUE + 1)}
                                                ).encode(),
         {"content-type": "application/json"}, 429, "queue_full", "queue is full"),
        ("/v1/models/mnist/predict?timeout_ms=0", json.dumps({"image": [[0] * 28] * 28}).encode(),
         {"content-type": "application/json"}, 504, "timeout", "not computed"),
        ("/v1/models/mnist/predict?top_k=0", b"x", {}, 400, "bad_parameter",
         "top_k must be between 1 and"),
        ("/v1/nowhere", None, {}, 404, "not_found", ""),
    ],
    ids=["not-image", "empty", "wrong-shape", "ragged", "bad-json", "json-keys", "unknown-model",
         "too-large", "queue-full", "timeout", "bad-top-k", "no-route"],
)
def test_errors(server, path, body, headers, status, code, detail):
    got_status, got = call(server, "POST" if body is not None else "GET", path, body, headers)
    assert (got_status, got["error"]) == (status, code), got
    assert detail in got["detail"]
    assert call(server, "GET", "/healthz")[0] == 200


@serving
def test_chunked_body_over_the_limit_gets_413(server):
    def chunks():
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024

    req = urllib.request.Request(server.base + "/v1/models/mnist/predict", data=chunks(),
                                 method="POST", headers={"transfer-encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=60)
    assert info.value.code == 413
    assert call(server, "GET", "/healthz")[0] == 200


# -- decompression bombs: a JSON 413 naming the budget, and the server keeps serving --------

@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {
        # 400 M pixels: over Pillow's own limit, which refuses it when the file is opened
        "20000x20000": zero_png(20000, 20000),
        # 100 M 16-bit pixels: under Pillow's limit, 600 MB decoded, over dlinfer's budget
        "10000x10000x16bit": zero_png(10000, 10000, 16),
    }


# Pillow warns above 89 M pixels; it is dlinfer's budget that refuses the 16-bit one.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", ["20000x20000", "10000x10000x16bit"])
def test_bomb_is_refused_by_the_shared_decoder_before_decoding(bombs, name):
    assert len(bombs[name]) < MAX_BODY
    with pytest.raises(dlinfer.DecompressionBombError, match="max_image_bytes") as info:
        decode_bytes(bombs[name], "upload")
    assert f"{DEFAULT_MAX_IMAGE_BYTES:,}" in str(info.value)
    assert isinstance(info.value, dlinfer.ImageDecodeError)


@serving
@pytest.mark.parametrize("form", ["raw", "multipart"])
@pytest.mark.parametrize("name", ["20000x20000", "10000x10000x16bit"])
def test_bomb_upload_gets_json_413_naming_the_limit(server, clf, digit_pngs, bombs, name, form):
    if form == "raw":
        data, headers = bombs[name], {"content-type": "image/png"}
    else:
        data, headers = multipart({"bomb": bombs[name]})
    status, body = call(server, "POST", "/v1/models/mnist/predict", data, headers)
    assert (status, body["error"]) == (413, "image_too_large"), body
    assert "max_image_bytes" in body["detail"], body
    assert f"{DEFAULT_MAX_IMAGE_BYTES:,}" in body["detail"], body
    # still serving: a normal upload right after gets its answer
    with open(digit_pngs[0][0], "rb") as f:
        status, body = call(server, "POST", "/v1/models/mnist/predict", f.read())
    assert status == 200
    check_matches(body["predictions"], clf.predict(digit_pngs[0][0]))


# -- graceful shutdown -------------------------------------------------------------------------

@serving
def test_sigterm_finishes_queued_requests_and_exits_0(mnist_onnx, clf, digit_pngs, tmp_path):
    paths, _ = digit_pngs
    # A long batching delay keeps the request queued while the server is told to stop;
    # the stop runs it at once, not after the delay (longer than the waits below).
    srv = Server(tmp_path, mnist_onnx, "--max-batch-size", "8", "--max-delay-ms", "60000",
                 "--graceful-timeout-s", "600", "--threads", "1")
    name = os.path.splitext(os.path.basename(mnist_onnx))[0]
    result = {}

    def client():
        with open(paths[5], "rb") as f:
            result["answer"] = call(srv, "POST", f"/v1/models/{name}/predict", f.read())

    try:
        thread = threading.Thread(target=client)
        thread.start()
        deadline = time.monotonic() + 60
        while metric_samples(call(srv, "GET", "/metrics")[1], "dlinfer_queue_depth",
                             model=name) != 1:
            assert time.monotonic() < deadline and thread.is_alive(), "request never queued"
            time.sleep(0.02)
        srv.proc.send_signal(signal.SIGTERM)
        # New connections are refused while the queued request is still being finished.
        while True:
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "server kept accepting after SIGTERM"
            time.sleep(0.02)
        thread.join(30)
        assert not thread.is_alive(), "the queued request waited out its batching delay"
        assert srv.proc.wait(30) == 0, srv.output()
    finally:
        srv.stop()
    status, body = result["answer"]
    assert status == 200
    check_matches(body["predictions"], clf.predict(paths[5]))
    assert "Application shutdown complete" in srv.output()


@serving
@pytest.mark.slow
def test_two_worker_processes_serve_and_stop_cleanly(mnist_onnx, clf, digit_pngs, tmp_path):
    paths, _ = digit_pngs
    srv = Server(tmp_path, f"mnist={mnist_onnx}", "--workers", "2", "--threads", "1")
    try:
        for path in paths[:6]:
            with open(path, "rb") as f:
                status, body = call(srv, "POST", "/v1/models/mnist/predict", f.read())
            assert status == 200
            check_matches(body["predictions"], clf.predict(path))
    finally:
        assert srv.stop() == 0, srv.output()
