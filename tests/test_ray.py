"""The Ray adapters on one local Ray cluster for the whole session (``ray.init(num_cpus=2)``).

Ray Data: image paths, encoded bytes and uint8 arrays through :class:`ImagePredictor`, a
corrupt file failing only its own row.  Ray Serve: the deployment on the real cluster
(``_local_testing_mode`` crashes with ``@serve.batch`` on Ray 2.60), called concurrently.
Each test skips by name without the ``ray`` extra.  The tests are few on purpose: the
cluster and each Serve application take seconds to start.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
from optional import need, requires
from reference import assert_close
from serve_helpers import free_port

ray_extra = requires("ray", "pyarrow", "starlette")
# Ray and its pydantic models warn about their own deprecations on import.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local cluster for every Ray test; Serve is shut down before Ray itself."""
    need("ray", "pyarrow", "starlette")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")), configure_logging=False)
    try:
        yield ray
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def clf(mnist_onnx):
    import dlinfer

    return dlinfer.Classifier(mnist_onnx)


@pytest.fixture(scope="module")
def image_folder(digit_pngs, mnist_digits, tmp_path_factory):
    """The ten digit PNGs, two of them as JPEGs, and one corrupt file among them."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("ray_images")
    for path in digit_pngs[0]:
        shutil.copy(path, folder)
    for i in (10, 11):
        Image.fromarray(mnist_digits.x_test[i]).save(folder / f"digit_{i}.jpg", quality=95)
    (folder / "digit_5b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated, not an image")
    return folder


def check_rows(rows, clf, key, images, bad=()):
    """Each good row equals Classifier.predict of the same image; each bad row has an error."""
    want = {k: p for k, p in zip(images, clf.predict(list(images.values()), top_k=3))}
    seen = set()
    for row in rows:
        name = row[key]
        seen.add(name)
        if name in bad:
            assert row["label"] is None and row["index"] == -1 and row["probability"] is None
            assert "ImageDecodeError" in row["error"] and os.path.basename(name) in row["error"]
            continue
        p = want[name]
        assert row["error"] is None, row["error"]
        assert (row["label"], row["index"]) == (p.label, p.index), name
        assert [c["index"] for c in row["top_k"]] == [c.index for c in p.top], name
        assert_close(np.array([c["probability"] for c in row["top_k"]], np.float32),
                     np.array([c.probability for c in p.top], np.float32), atol=1e-6,
                     context=name)
    assert seen == set(want) | set(bad)


@ray_extra
def test_dataset_of_paths_bytes_and_arrays_with_a_corrupt_file(ray_cluster, clf, image_folder,
                                                                mnist_digits, tmp_path):
    import ray.data
    from dlinfer.preprocessing.decode import iter_image_files
    from dlinfer.serving.ray import predict_dataset

    paths = list(iter_image_files(str(image_folder)))
    bad = [p for p in paths if p.endswith("digit_5b.png")]
    good = {p: p for p in paths if p not in bad}
    assert len(paths) == 13 and len(bad) == 1

    # Paths, two actors sharing the work; the job completes and writes every row.  The
    # write asks a tenth of a CPU, as `dlinfer ray predict` does, so two actors fit.
    from dlinfer.serving.ray import IO_TASK_CPUS

    ds = predict_dataset(ray.data.from_items([{"path": p} for p in paths]), clf.model.path,
                         batch_size=4, concurrency=2, top_k=3, io_cpus=IO_TASK_CPUS)
    ds.write_parquet(str(tmp_path / "out"), ray_remote_args={"num_cpus": IO_TASK_CPUS})
    import pyarrow.parquet as pq

    rows = pq.read_table(str(tmp_path / "out")).to_pylist()
    check_rows(rows, clf, "path", good, bad)

    # Encoded bytes as read_binary_files gives them, with their paths.
    ds = ray.data.read_binary_files(str(image_folder), include_paths=True)
    rows = predict_dataset(ds, clf.model.path, batch_size=5, concurrency=1, top_k=3).take_all()
    # read_binary_files names files without the leading slash of a local path.
    for row in rows:
        row["path"] = "/" + row["path"].lstrip("/")
    check_rows(rows, clf, "path", good, bad)

    # uint8 arrays, as read_images gives them, with an id column passed through.
    digits = mnist_digits.x_test[:6]
    items = [{"id": i, "image": digits[i][..., None]} for i in range(6)]
    rows = predict_dataset(ray.data.from_items(items), clf.model.path, batch_size=4,
                           concurrency=1, top_k=3).take_all()
    check_rows(rows, clf, "id", {i: digits[i] for i in range(6)})


def _docs_ray_data_example() -> str:
    """The Ray Data example of docs/scale-out.md, as printed there."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "scale-out.md").read_text()
    section = text[text.index("## Ray Data"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_docs_ray_example(model: str, images, out, cpus: int) -> None:
    """The docs' example run verbatim in a fresh process on a local cluster of ``cpus``
    CPUs; only the bucket, the model and the output folder are swapped for local ones.
    Before predict_dataset reserved CPUs for the read task it hung forever here."""
    import subprocess
    import sys

    code = _docs_ray_data_example()
    for placeholder, local in (("s3://bucket/images/", str(images)),
                               ("mnist_cnn.onnx", model), ("results/", str(out))):
        assert placeholder in code, placeholder
        code = code.replace(placeholder, local)
    # A cluster of `cpus` CPUs whatever this machine has: ray.init() keeps its arguments.
    prelude = ("import ray\n_init = ray.init\nray.init = lambda *a, **k: _init(*a, num_cpus="
               f"{cpus}, include_dashboard=False, log_to_driver=False, **k)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-c", prelude + code], env=env, timeout=240,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    import pyarrow.parquet as pq

    assert pq.read_table(str(out)).num_rows == len(os.listdir(images))


@ray_extra
def test_docs_ray_data_example_completes_on_2_cpus(clf, image_folder, tmp_path):
    need("ray", "pyarrow")
    run_docs_ray_example(clf.model.path, image_folder, tmp_path / "out", cpus=2)


@pytest.mark.slow  # a second Ray cluster start (~15 s)
@ray_extra
def test_docs_ray_data_example_completes_on_8_cpus(clf, image_folder, tmp_path):
    need("ray", "pyarrow")
    run_docs_ray_example(clf.model.path, image_folder, tmp_path / "out", cpus=8)


@ray_extra
def test_a_pool_that_would_starve_the_read_fails_at_once(ray_cluster, clf, image_folder):
    import ray.data
    from dlinfer.errors import InputError
    from dlinfer.serving.ray import predict_dataset

    # Two actors of 0.9 CPU leave 0.2 of the 2 CPUs; a default read task asks a whole one.
    ds = ray.data.read_binary_files(str(image_folder), include_paths=True)
    with pytest.raises(InputError, match="wait forever.*concurrency <= 1"):
        predict_dataset(ds, clf.model.path, concurrency=2)
    # A read asking more than the default is seen in the plan too.
    ds = ray.data.read_binary_files(str(image_folder), include_paths=True, num_cpus=2)
    with pytest.raises(InputError, match="2 CPU that Ray's read and write tasks ask"):
        predict_dataset(ds, clf.model.path)


@pytest.mark.slow  # another Ray job (~4 s): the default run keeps to the two above
@ray_extra
def test_cli_ray_predict_writes_parquet(ray_cluster, clf, image_folder, tmp_path, capsys):
    import pyarrow.parquet as pq
    from dlinfer.tools.cli import main

    out = tmp_path / "results.parquet"
    assert main(["ray", "predict", clf.model.path, str(image_folder), "--out", str(out),
                 "--batch-size", "8", "--read", "bytes", "--top-k", "3"]) == 0
    assert "13 images" in capsys.readouterr().err
    rows = pq.read_table(str(out)).to_pylist()
    good = {str(p): str(p) for p in image_folder.iterdir() if p.name != "digit_5b.png"}
    check_rows(rows, clf, "path", good, [str(image_folder / "digit_5b.png")])


@ray_extra
@requires("openvino")
def test_cli_ray_predict_on_openvino_matches_onnxruntime(ray_cluster, clf, image_folder,
                                                         tmp_path, capsys):
    """`dlinfer ray predict --backend openvino`: each row within verify's closeness rule of
    onnxruntime's Classifier (float32 on both: they differ by summation order only)."""
    import pyarrow.parquet as pq
    from dlinfer.tools.cli import main
    from dlinfer.verification.compare import DEFAULT_ATOL, DEFAULT_RTOL

    out = tmp_path / "openvino.parquet"
    assert main(["ray", "predict", clf.model.path, str(image_folder), "--out", str(out),
                 "--batch-size", "16", "--top-k", "10", "--backend", "openvino"]) == 0
    assert "13 images" in capsys.readouterr().err
    rows = [r for r in pq.read_table(str(out)).to_pylist() if r["error"] is None]
    assert len(rows) == 12
    want = clf.predict_proba([r["path"] for r in rows])
    got = np.zeros_like(want)
    for i, row in enumerate(rows):
        for c in row["top_k"]:
            got[i, c["index"]] = c["probability"]
    assert_close(got, want, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL,
                 context="ray predict --backend openvino vs onnxruntime")


def post(url: str, body: bytes, ctype: str = "application/octet-stream"):
    req = urllib.request.Request(url, body, {"content-type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except json.JSONDecodeError:
            raise AssertionError(f"{exc.code}, not JSON: {text[:300]!r}") from None


@ray_extra
def test_serve_deployment_batches_concurrent_requests_and_shuts_down(
        ray_cluster, clf, digit_pngs, mnist_digits):
    from dlinfer.serving.ray import build_app
    from dlinfer.serving.server import ServeConfig
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # A long wait lets the concurrent requests below meet in batches on a busy machine.
    config = ServeConfig(models=[], max_batch_size=16, max_delay_ms=50.0)
    handle = serve.run(build_app(f"mnist={clf.model.path}", config), name="mnist",
                       route_prefix="/mnist")
    base = f"http://127.0.0.1:{port}/mnist"
    try:
        files = [open(p, "rb").read() for p in digit_pngs[0]] * 4
        with concurrent.futures.ThreadPoolExecutor(len(files)) as pool:
            answers = list(pool.map(lambda b: post(base + "?top_k=2", b), files))
        direct = clf.predict(digit_pngs[0] * 4, top_k=2)
        for (status, body), want in zip(answers, direct, strict=True):
            assert status == 200, body
            (got,) = body["predictions"]
            assert body["model"] == "mnist"
            assert (got["label"], got["index"]) == (want.label, want.index)
            assert [c["index"] for c in got["top"]] == [c.index for c in want.top]
            assert_close(np.float32(got["probability"]), np.float32(want.probability),
                         atol=1e-6)

        # JSON pixels, as dlinfer serve takes them, in one request of three images.
        pixels = mnist_digits.x_test[:3]
        status, body = post(base, json.dumps({"images": pixels.tolist()}).encode(),
                            "application/json")
        assert status == 200
        assert [p["index"] for p in body["predictions"]] == [
            p.index for p in clf.predict(pixels)]

        # The same errors as dlinfer serve: JSON, 4xx, and the replica keeps serving.
        assert post(base, b"GIF89a nonsense") == (400, {"error": "not_an_image", "detail":
                                                        "body: not an image file Pillow can read"})
        status, body = post(base, json.dumps({"image": [[0, 1], [2]]}).encode(),
                            "application/json")
        assert status == 422 and body["error"] == "bad_input"
        status, body = post(base + "?top_k=0", files[0])
        assert status == 400 and body["error"] == "bad_parameter"

        with urllib.request.urlopen(base, timeout=30) as resp:
            meta = json.loads(resp.read())
        assert meta["max_batch_size"] == 16 and meta["batch_wait_timeout_s"] == 0.05
        assert meta["replica_mean_batch_size"] > 1, meta
        assert handle is not None
    finally:
        serve.delete("mnist")
    # Shut down cleanly: the application is gone and its route answers 404.
    assert "mnist" not in serve.status().applications
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(base, timeout=10).read()
    assert gone.value.code == 404
