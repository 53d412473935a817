"""Serving on OpenVINO with batches in flight (docs/serving.md, issue 27 item 4).

The Batcher's worker starts a batch on one of OpenVINO's asynchronous infer requests
(``OpenVINOModel.start_run``) and forms the next one while it runs; a thread of the
Batcher's own (serving/inflight.py) finishes them in order.  Here: answers under
concurrency equal sequential ``Model.run``'s, an inference error fails only its own
batch (and the batches after it still run), shutdown settles every request and never
hangs, and ``dlinfer serve --backend openvino`` answers concurrent clients.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import dlinfer
import numpy as np
import onnx_models
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import Dense
from optional import requires
from reference import assert_close, seed_of

openvino = requires("openvino")
HANG_S = 30  # a bound on every wait: a hang fails the test instead of stalling the run
# One row's answer may come from a batch of 1 alone or from a batch of 8 in the Batcher;
# OpenVINO may pick another matmul kernel for another batch size, which sums the same
# float32 products in another order.  Measured: at most 1 ulp (6e-8 on values < 1).
ATOL, RTOL = 1e-6, 1e-5


def _dense_model(tmp_path) -> str:
    """softmax(x @ w + b) on (N, 16) rows: each row's answer is its own."""
    rng = np.random.default_rng(seed_of("openvino_async", "dense"))
    layer = Dense(rng.normal(size=(16, 10)).astype(np.float32),
                  rng.normal(size=10).astype(np.float32), "softmax")
    proto = onnx_models.build_mlp("dense", (None, 16), "probabilities", [layer],
                                  input_name="rows")
    path = tmp_path / "dense.onnx"
    path.write_bytes(proto.SerializeToString())
    return str(path)


def _even_batches_model(tmp_path) -> str:
    """Rows taken in pairs (Reshape to (N/2, 2, 4)), a softmax per row, and back to
    (N, 4): any batch of an odd number of rows fails inside OpenVINO at run time."""
    inits = [numpy_helper.from_array(np.array([-1, 2, 4], np.int64), "pairs"),
             numpy_helper.from_array(np.array([-1, 4], np.int64), "rows_shape")]
    nodes = [helper.make_node("Reshape", ["rows", "pairs"], ["paired"]),
             helper.make_node("Softmax", ["paired"], ["soft"], axis=2),  # not folded away
             helper.make_node("Reshape", ["soft", "rows_shape"], ["out"])]
    graph = helper.make_graph(
        nodes, "even_batches", [helper.make_tensor_value_info("rows", TensorProto.FLOAT,
                                                              ["N", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])], inits)
    path = tmp_path / "even_batches.onnx"
    path.write_bytes(onnx_models.checked_model(graph).SerializeToString())
    return str(path)


def _rows(n: int, width: int, *case: object) -> np.ndarray:
    return np.random.default_rng(seed_of("openvino_async", *case)).random(
        (n, width), dtype=np.float32)


@openvino
def test_started_runs_answer_as_run_and_fail_alone(tmp_path):
    model = dlinfer.Model(_dense_model(tmp_path), backend="openvino")
    batches = [_rows(n, 16, "started", n) for n in (1, 5, 8, 8, 3, 8)]
    started = [model.start_run(b) for b in batches]  # all in flight at once
    for b, run in zip(batches, started):
        assert_close(run.result(), model.run(b), context=f"start_run vs run, batch {len(b)}")
    with pytest.raises(RuntimeError, match="already called"):
        started[0].result()
    with pytest.raises(dlinfer.InputDtypeError):  # checked as run() checks, at the start
        model.start_run(batches[0].astype(np.float64))

    even = dlinfer.Model(_even_batches_model(tmp_path), backend="openvino")
    good, odd = _rows(4, 4, "good"), _rows(3, 4, "odd")
    runs = [even.start_run(good), even.start_run(odd), even.start_run(good)]
    want = even.run(good)
    assert_close(runs[0].result(), want, context="the run before the failing one")
    with pytest.raises(dlinfer.InferenceError, match="openvino failed on"):
        runs[1].result()
    assert_close(runs[2].result(), want, context="the run after the failing one")
    # The failed run's infer request runs again (OpenVINO's AsyncInferQueue would
    # raise the old error from every later start_async).
    assert_close(even.start_run(good).result(), want, context="a run after the failure")


@openvino
def test_concurrent_requests_answer_as_sequential_runs(tmp_path):
    model = dlinfer.Model(_dense_model(tmp_path), backend="openvino", threads=1)
    rows = _rows(320, 16, "concurrent")
    want = np.concatenate([model.run(r[None]) for r in rows])  # one at a time, in order
    with dlinfer.Batcher(model, max_batch_size=8, max_delay_ms=1) as batcher:
        assert batcher.in_flight == model.in_flight == 2  # LATENCY hint: 1 stream, +1

        def client(c: int) -> list:
            mine = range(c, len(rows), 8)  # interleaved: every batch mixes clients
            return list(zip(mine, [batcher.submit(rows[i]) for i in mine]))

        with ThreadPoolExecutor(8) as pool:
            futures = [pair for part in pool.map(client, range(8)) for pair in part]

        async def from_asyncio():  # coroutines, settled through their event loop
            return await asyncio.gather(*(batcher.predict(r) for r in rows[:64]))

        awaited = asyncio.run(asyncio.wait_for(from_asyncio(), HANG_S))
        got = np.zeros_like(want)
        for i, fut in futures:
            got[i] = fut.result(HANG_S)
        stats = batcher.stats()
    assert_close(got, want, atol=ATOL, rtol=RTOL, context="threads through the Batcher")
    assert_close(np.stack(awaited), want[:64], atol=ATOL, rtol=RTOL, context="asyncio")
    assert (stats.completed, stats.failed) == (320 + 64, 0)
    assert stats.mean_batch_size > 1  # batches formed, not one request at a time


@openvino
def test_classifier_requests_answer_as_predict(mnist_onnx, mnist_digits):
    clf = dlinfer.Classifier(mnist_onnx, backend="openvino", threads=1)
    images = mnist_digits.x_test[:96]
    want = np.concatenate([clf.predict_proba(img[None]) for img in images])
    with dlinfer.Batcher(clf, max_batch_size=16, max_delay_ms=1) as batcher:
        assert batcher.in_flight == 2
        with ThreadPoolExecutor(6) as pool:
            futures = list(pool.map(lambda img: batcher.submit(img, top_k=10), images))
        preds = [f.result(HANG_S) for f in futures]
    got = np.array([[{c.label: c.probability for c in p.top}[label] for label in clf.labels]
                    for p in preds], np.float32)
    assert_close(got, want, atol=ATOL, rtol=RTOL, context="Classifier through the Batcher")


@openvino
def test_an_inference_error_fails_only_its_batch(tmp_path):
    model = dlinfer.Model(_even_batches_model(tmp_path), backend="openvino")
    rows = _rows(15, 4, "batches")
    with dlinfer.Batcher(model, max_batch_size=4, max_delay_ms=0) as batcher:
        # Queued at once, so the worker forms batches of 4, 4 and 3: the third fails.
        first = batcher.submit_many(rows[:11])
        for i, fut in enumerate(first[:8]):
            assert_close(fut.result(HANG_S), model.run(rows[i // 4 * 4:i // 4 * 4 + 4])[i % 4],
                         context=f"request {i}, in a batch of 4")
        for fut in first[8:]:
            with pytest.raises(dlinfer.InferenceError, match="batch of 3") as info:
                fut.result(HANG_S)
            assert "openvino failed on" in str(info.value)
        later = batcher.submit_many(rows[11:])  # the batches after it still run
        assert_close(np.stack([f.result(HANG_S) for f in later]), model.run(rows[11:]),
                     context="the batch after the failed one")
        stats = batcher.stats()
    assert (stats.completed, stats.failed, stats.batches) == (12, 3, 4)


@openvino
def test_shutdown_settles_every_request_and_never_hangs(tmp_path):
    model = dlinfer.Model(_dense_model(tmp_path), backend="openvino", threads=1)
    rows = _rows(200, 16, "shutdown")
    batcher = dlinfer.Batcher(model, max_batch_size=8, max_delay_ms=5)
    futures = batcher.submit_many(rows)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    closer.join(HANG_S)
    assert not closer.is_alive(), "close() hung with batches in flight"
    assert all(f.done() for f in futures)  # close() runs every queued request first
    assert_close(np.stack([f.result() for f in futures]), model.run(rows), atol=ATOL,
                 rtol=RTOL, context="requests queued at close()")
    with pytest.raises(dlinfer.BatcherClosedError):
        batcher.submit(rows[0])

    # close() from a done-callback runs on the finishing thread: it must not wait for
    # itself, and the worker still stops.
    batcher = dlinfer.Batcher(model, max_batch_size=8, max_delay_ms=0)
    done = threading.Event()
    fut = batcher.submit(rows[0])
    fut.add_done_callback(lambda f: (batcher.close(), done.set()))
    assert done.wait(HANG_S), "close() from a done-callback hung"
    batcher.close(HANG_S)
    assert not batcher._thread.is_alive() and not batcher._inflight._thread.is_alive()


@openvino
def test_a_program_ending_with_batches_under_way_exits_cleanly(tmp_path):
    """A Batcher left open at exit is stopped by an atexit hook: its queue fails, the
    batches under way finish.  Without it, OpenVINO still running when the process ended
    aborted it (exit status 134) in most runs."""
    rng = np.random.default_rng(seed_of("openvino_async", "exit"))
    layers = [Dense(rng.normal(size=(1024, 1024)).astype(np.float32) / 32,
                    np.zeros(1024, np.float32), "relu") for _ in range(8)]  # 1 GFLOP a batch
    path = tmp_path / "deep.onnx"
    path.write_bytes(onnx_models.build_mlp("deep", (None, 1024), "out", layers,
                                           input_name="rows").SerializeToString())
    script = textwrap.dedent(f"""
        import numpy as np, dlinfer
        model = dlinfer.Model({str(path)!r}, backend="openvino")
        batcher = dlinfer.Batcher(model, max_batch_size=64, max_delay_ms=0)
        futures = batcher.submit_many(list(np.ones((1024, 1024), np.float32)))
        futures[0].result({HANG_S})
        print("left open", flush=True)
    """)
    for _ in range(3):  # the abort came in most runs, not all
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=4 * HANG_S)
        assert (done.returncode, done.stdout) == (0, "left open\n"), done.stderr[-2000:]


@openvino
def test_in_flight_is_the_backends_or_asked(tmp_path, mnist_onnx, monkeypatch):
    path = _dense_model(tmp_path)
    with dlinfer.Batcher(dlinfer.Model(path, backend="onnxruntime")) as on_ort:  # one at a time
        assert on_ort.in_flight == 1 and on_ort._inflight is None
    ov = dlinfer.Model(path, backend="openvino")
    with dlinfer.Batcher(ov, in_flight=1) as off, dlinfer.Batcher(ov, in_flight=3) as three:
        assert (off.in_flight, off._inflight, three.in_flight) == (1, None, 3)
        assert_close(three.submit(_rows(1, 16, "three")[0]).result(HANG_S),
                     ov.run(_rows(1, 16, "three"))[0], context="in_flight=3")
    with pytest.raises(dlinfer.InputError, match="in_flight"):
        dlinfer.Batcher(ov, in_flight=0)

    class Calibrated(dlinfer.Classifier):  # its own run_batch runs, one batch at a time
        def run_batch(self, batch):
            return super().run_batch(batch)

    with dlinfer.Batcher(Calibrated(mnist_onnx, backend="openvino")) as own:
        assert own.in_flight == 1
    calls = []
    patched = dlinfer.Classifier.run_batch  # a patched run_batch (a test's fault) runs too
    monkeypatch.setattr(dlinfer.Classifier, "run_batch",
                        lambda self, batch: calls.append(len(batch)) or patched(self, batch))
    with dlinfer.Batcher(dlinfer.Classifier(mnist_onnx, backend="openvino")) as b:
        assert b.in_flight == 1
        b.submit(np.zeros((28, 28), np.uint8)).result(HANG_S)
    assert calls == [1]


@requires("starlette", "uvicorn", "prometheus_client")
def test_serve_in_flight_is_checked():
    from dlinfer.serving.server import ServeConfig
    from dlinfer.tools.cli import build_parser

    assert build_parser().parse_args(["serve", "m.onnx", "--in-flight", "1"]).in_flight == 1
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "m.onnx", "--in-flight", "0"])
    assert info.value.code == 2
    with pytest.raises(dlinfer.InputError, match="in_flight"):
        ServeConfig(models=["m.onnx"], in_flight=0).check()


@requires("openvino", "starlette", "uvicorn")
def test_serve_on_openvino_answers_concurrent_clients(mnist_onnx, digit_pngs, tmp_path):
    from serve_helpers import Server, call

    paths, _ = digit_pngs
    bodies = [open(p, "rb").read() for p in paths]
    clf = dlinfer.Classifier(mnist_onnx, backend="openvino")
    want = clf.predict_proba(paths)
    server = Server(tmp_path, f"mnist={mnist_onnx}", "--backend", "openvino", "--threads", "1",
                    "--max-delay-ms", "2")
    try:
        def client(i: int) -> tuple[int, int, dict]:
            k = i % 11  # every 11th request is not an image: a 400 of its own
            body = bodies[k] if k < 10 else b"not a png"
            return (k, *call(server, "POST", "/v1/models/mnist/predict?top_k=10", body))

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(client, range(132)))
        for k, status, body in answers:
            if k == 10:
                assert status == 400, body
                continue
            assert status == 200, body
            got = {c["label"]: c["probability"] for c in body["predictions"][0]["top"]}
            assert_close(np.array([got[label] for label in clf.labels], np.float32), want[k],
                         atol=ATOL, rtol=RTOL, context=f"serve --backend openvino, digit {k}")
    finally:
        assert server.stop() == 0, server.output()  # SIGTERM drains; no hang
