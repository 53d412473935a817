"""`dlinfer explain`, `dlinfer activations`, `dlinfer filters` and POST /explain, on a
`dlinfer spec set` third-party CNN (no TensorFlow) and on the zoo's MNIST CNN; bad
input gets the usual typed errors (CLI: exit 1 and one line; HTTP: the JSON codes)."""

from __future__ import annotations

import importlib.util
import io
import json
import urllib.request

import numpy as np
import pytest
from dlinfer.tools import cli
from explain_models import third_party_cnn
from optional import requires, requires_tf
from PIL import Image

HAVE_SERVE = all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn"))
# `dlinfer filters` runs a few ascent steps here: the test is about the plumbing.
STEPS = "3"


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> str:
    return third_party_cnn(tmp_path_factory.mktemp("explain"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


@pytest.mark.parametrize("method", ["gradcam", "saliency", "occlusion"])
def test_explain_writes_overlays_and_numbers(cnn, photo, tmp_path, method, capsys):
    out = tmp_path / "out"
    assert cli.main(["explain", cnn, photo, photo, "--method", method, "--out", str(out)]) == 0
    report = json.loads((out / "explanations.json").read_text())
    assert report["method"] == method and len(report["explanations"]) == 2
    names = {e["overlay"] for e in report["explanations"]}
    assert names == {f"photo_{method}.png", f"photo_2_{method}.png"}
    for name in names:
        assert _png_size(out / name) == (40, 24)  # the image's own size
    first = report["explanations"][0]
    assert first["label"] in "abcde" and 0 <= first["probability"] <= 1
    assert max(max(row) for row in first["map"]) == 1.0
    assert "photo.png" in capsys.readouterr().out


def test_activations_and_filters_write_grids(cnn, photo, tmp_path, capsys):
    grid = tmp_path / "act.png"
    assert cli.main(["activations", cnn, photo, "--layer", "relu1", "--out", str(grid)]) == 0
    assert "6 channels of 16x16" in capsys.readouterr().out
    assert min(_png_size(grid)) > 16
    kernels = tmp_path / "k.png"
    assert cli.main(["filters", cnn, "--layer", "relu1", "--out", str(kernels)]) == 0
    assert "(kernels)" in capsys.readouterr().out
    ascent = tmp_path / "a.png"
    assert cli.main(["filters", cnn, "--layer", "relu2", "--count", "4", "--steps", STEPS,
                     "--out", str(ascent)]) == 0
    assert "4 filters (input patterns" in capsys.readouterr().out
    assert _png_size(ascent)[0] > 16


@pytest.mark.parametrize("argv,message", [
    (["explain", "{cnn}", "{bad}", "--out", "{out}"], "not an image file"),
    (["explain", "{cnn}", "{photo}", "--layer", "nope", "--out", "{out}"], "neither a tensor"),
    (["explain", "{cnn}", "{photo}", "--target", "9", "--out", "{out}"], "target"),
    (["activations", "{cnn}", "{photo}", "--layer", "logits", "--out", "{out}/a.png"],
     "no spatial axes"),
    (["filters", "{cnn}", "--layer", "nope", "--out", "{out}/f.png"], "neither a tensor"),
], ids=["not-an-image", "layer", "target", "dense-layer", "filters-layer"])
def test_bad_input_is_one_error_line(cnn, photo, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    args = [a.format(cnn=cnn, photo=photo, bad=bad, out=tmp_path) for a in argv]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlinfer: error:") and message in err and "Traceback" not in err


def test_bad_flags_are_usage_errors(cnn, photo, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["explain", cnn, photo, "--method", "lime", "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_the_cli_lists_the_same_methods_and_precisions_as_the_library():
    from dlinfer.explain.cam import METHODS
    from dlinfer.explain.gradient import PRECISIONS
    from dlinfer.tools.explain_command import METHODS as CLI_METHODS
    from dlinfer.tools.explain_command import PRECISIONS as CLI_PRECISIONS

    assert CLI_METHODS == METHODS and CLI_PRECISIONS == PRECISIONS


def test_precision_reaches_the_gradients(cnn, photo, tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("dlinfer.explain.gradient")  # not the function
    seen = []
    real = module.value_and_gradient

    def spy(*args, **kwargs):
        seen.append(kwargs["precision"])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "value_and_gradient", spy)
    assert cli.main(["explain", cnn, photo, "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["explain", cnn, photo, "--precision", "float32",
                     "--out", str(tmp_path / "b")]) == 0
    assert seen == ["bf16x3", "float32"]
    with pytest.raises(SystemExit) as exc:
        cli.main(["explain", cnn, photo, "--precision", "fp8", "--out", str(tmp_path / "c")])
    assert exc.value.code == 2


@requires_tf
def test_cli_on_the_zoo_mnist_cnn_by_keras_layer_name(tmp_path, capsys):
    import zoo_models
    from explain_keras import last_conv2d

    exported = zoo_models.exported("mnist_cnn")
    digit = tmp_path / "digit.png"
    Image.fromarray(zoo_models.digits()[0][0]).save(digit)
    layer = last_conv2d(exported.keras_model)
    assert cli.main(["explain", exported.onnx_path, str(digit), "--layer", layer,
                     "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "explanations.json").read_text())
    assert report["explanations"][0]["layer"].endswith(f"/{layer}_1/Relu:0")
    assert cli.main(["activations", exported.onnx_path, str(digit), "--layer", layer,
                     "--out", str(tmp_path / "a.png")]) == 0
    assert cli.main(["filters", exported.onnx_path, "--layer", layer, "--count", "2",
                     "--steps", STEPS, "--out", str(tmp_path / "f.png")]) == 0
    assert "2 filters (input patterns" in capsys.readouterr().out
    if HAVE_SERVE:
        from serve_helpers import Server

        server = Server(tmp_path, f"mnist={exported.onnx_path}")
        try:
            status, _, body = _post(server, f"/v1/models/mnist/explain?layer={layer}",
                                    digit.read_bytes(), {"content-type": "image/png"})
        finally:
            server.stop()
        assert status == 200, body
        assert np.asarray(json.loads(body)["explanations"][0]["map"]).shape == (3, 3)


# ---- POST /v1/models/{name}/explain -------------------------------------------------


def _post(server, path, body, headers):
    req = urllib.request.Request(server.base + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", ""), err.read()


@requires("starlette", "uvicorn")
def test_explain_route_json_png_errors_and_metrics(cnn, photo, tmp_path):
    from serve_helpers import Server, call, metric_samples

    png = open(photo, "rb").read()
    server = Server(tmp_path, f"cnn={cnn}")
    try:
        status, ctype, body = _post(server, "/v1/models/cnn/explain?method=gradcam&target=1",
                                    png, {"content-type": "image/png"})
        assert status == 200 and "json" in ctype, body
        answer = json.loads(body)
        (e,) = answer["explanations"]
        assert e["target"] == 1 and e["label"] == "b" and e["image_size"] == [24, 40]
        assert np.asarray(e["map"]).shape == (8, 8)

        status, ctype, body = _post(server, "/v1/models/cnn/explain?method=occlusion", png,
                                    {"content-type": "image/png", "accept": "image/png"})
        assert status == 200 and ctype == "image/png"
        assert Image.open(io.BytesIO(body)).size == (40, 24)

        for path, data, headers, want in [
            ("/v1/models/cnn/explain", b"not an image", {"content-type": "image/png"},
             (400, "not_an_image")),
            ("/v1/models/cnn/explain?method=lime", png, {}, (400, "bad_parameter")),
            ("/v1/models/cnn/explain?layer=nope", png, {}, (422, "bad_input")),
            ("/v1/models/cnn/explain?target=7", png, {}, (422, "bad_input")),
            ("/v1/models/nope/explain", png, {}, (404, "unknown_model")),
        ]:
            status, _, body = _post(server, path, data, headers)
            assert (status, json.loads(body)["error"]) == want, path
        status, text = call(server, "GET", "/metrics")
        route = "/v1/models/{name}/explain"
        assert metric_samples(text, "dlinfer_http_requests_total", route=route,
                              status="200") == 2
        assert metric_samples(text, "dlinfer_http_requests_total", route=route,
                              outcome="bad_input") == 2
    finally:
        server.stop()
