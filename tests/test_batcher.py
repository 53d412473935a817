"""dlinfer.Batcher: batch formation, exact result mapping, failure containment, asyncio.

No test asserts on wall time.  Where a test needs the worker to be busy or a request
to be old, it blocks the batch function on an Event and waits for that state, or
sleeps for a time well past a timeout (a sleep is never shorter than asked).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dlinfer
import numpy as np
import pytest
from optional import onnxruntime_only
from reference import assert_close

# Long enough that no scheduler hiccup can fill it, short of a hung test.
FOREVER_MS = 60_000


@pytest.fixture(scope="module")
def clf(mnist_onnx):
    return dlinfer.Classifier(mnist_onnx, threads=1)


@pytest.fixture(scope="module")
def digits(mnist_digits):
    return mnist_digits.x_test[:64]  # uint8 (64, 28, 28), held out


def probabilities(preds) -> np.ndarray:
    """The top-k probabilities of each prediction, as one array (N, k)."""
    return np.array([[c.probability for c in p.top] for p in preds])


class Recorder:
    """A batch function that records every batch and can be held on an Event."""

    def __init__(self, fail_when=None):
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_when = fail_when

    def __call__(self, items):
        self.entered.set()
        self.gate.wait()
        self.batches.append(list(items))
        if self.fail_when is not None and self.fail_when(items):
            raise RuntimeError("boom: injected failure")
        return [x * 10 for x in items]


def hold_worker(batcher, rec):
    """Park the worker inside a batch of one sentinel request; returns its future."""
    rec.gate.clear()
    rec.entered.clear()
    fut = batcher.submit(-1)
    assert rec.entered.wait(10)
    return fut


# -- batch formation ---------------------------------------------------------------------------

def test_full_batches_form_while_the_worker_is_busy():
    rec = Recorder()
    with dlinfer.Batcher(rec, max_batch_size=4, max_delay_ms=FOREVER_MS) as b:
        futs = [b.submit(i) for i in range(11)]
        # 4 queued requests make a full batch, which leaves without waiting...
        assert [f.result(10) for f in futs[:8]] == [i * 10 for i in range(8)]
        # ...while the 3 left over are a partial batch, held for the (long) delay
        # until close() flushes them.
        assert not any(f.done() for f in futs[8:])
    assert [f.result(0) for f in futs[8:]] == [80, 90, 100]
    # FIFO: requests run in the order they were submitted.
    assert rec.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_partial_batch_goes_out_after_the_delay():
    rec = Recorder()
    with dlinfer.Batcher(rec, max_batch_size=64, max_delay_ms=20) as b:
        futs = [b.submit(i) for i in range(3)]
        assert [f.result(10) for f in futs] == [0, 10, 20]  # 3 < 64: only the delay sends it
        assert b.stats().batches >= 1
    assert sum(len(x) for x in rec.batches) == 3


def test_lowering_the_delay_releases_a_waiting_partial_batch():
    rec = Recorder()
    with dlinfer.Batcher(rec, max_batch_size=64, max_delay_ms=FOREVER_MS) as b:
        futs = [b.submit(i) for i in range(3)]
        b.max_delay_ms = 0  # what `dlinfer serve` does on SIGTERM
        assert [f.result(10) for f in futs] == [0, 10, 20]  # not after FOREVER_MS
        assert b.max_delay_ms == 0


def test_ordering_and_batch_size_bound_under_a_busy_worker():
    rec = Recorder()
    with dlinfer.Batcher(rec, max_batch_size=5, max_delay_ms=0) as b:
        first = hold_worker(b, rec)
        futs = [b.submit(i) for i in range(23)]
        rec.gate.set()
        assert [f.result(10) for f in futs] == [i * 10 for i in range(23)]
        assert first.result(10) == -10
        stats = b.stats()
    assert [len(x) for x in rec.batches] == [1, 5, 5, 5, 5, 3]
    assert [x for batch in rec.batches[1:] for x in batch] == list(range(23))
    assert stats.batches == 6 and stats.completed == 24 and stats.mean_batch_size == 4.0
    assert set(stats.queue_wait_ms) == {"p50", "p90", "p99", "max"}


# -- exact mapping against direct predictions --------------------------------------------------

def test_32_threads_x_200_requests_map_exactly(clf, digits):
    rng = np.random.default_rng(7)
    # Distinct inputs per request, so a swapped result cannot go unnoticed.
    pool = np.concatenate([digits, 255 - digits, np.roll(digits, 3, axis=2)])
    expected = clf.predict(pool, top_k=3)
    n_threads, per_thread = 32, 200
    picks = rng.integers(0, len(pool), size=(n_threads, per_thread))

    with dlinfer.Batcher(clf, max_batch_size=32, max_delay_ms=2, max_queue=n_threads * 20) as b:
        def client(t):
            # Waves of 20 in flight per thread: deep queues, and full and partial batches.
            out = []
            for wave in np.split(picks[t], per_thread // 20):
                futs = [(int(i), b.submit(pool[i], top_k=3)) for i in wave]
                out += [(i, f.result(60)) for i, f in futs]
            return out

        with ThreadPoolExecutor(n_threads) as ex:
            answers = [a for chunk in ex.map(client, range(n_threads)) for a in chunk]
        stats = b.stats()

    assert len(answers) == n_threads * per_thread
    for i, pred in answers:
        want = expected[i]
        assert pred.label == want.label
        assert [c.index for c in pred.top] == [c.index for c in want.top]
    got = probabilities(pred for _, pred in answers)
    assert_close(got, probabilities(expected[i] for i, _ in answers), rtol=1e-5, atol=1e-6,
                 context="batched vs direct")
    assert stats.completed == n_threads * per_thread and stats.failed == 0
    assert stats.mean_batch_size > 1  # it did batch


def test_model_batcher_returns_output_rows(clf, digits):
    x = clf.preprocess(digits[:20])
    direct = clf.model.run(x)
    with dlinfer.Batcher(clf.model, max_batch_size=8, max_delay_ms=1) as b:
        futs = b.submit_many(list(x))
        rows = [f.result(10) for f in futs]
    assert_close(np.stack(rows), direct, rtol=1e-5, atol=1e-6)


def test_mixed_request_kinds_and_top_k(clf, digits, digit_pngs):
    paths, _ = digit_pngs
    from PIL import Image

    items = [paths[0], Image.open(paths[1]), digits[2], digits[3][:, :, None], digits[4][None]]
    with dlinfer.Batcher(clf, max_batch_size=8, max_delay_ms=5) as b:
        got = [f.result(10) for f in [b.submit(x, top_k=k + 1) for k, x in enumerate(items)]]
    for k, (pred, item) in enumerate(zip(got, items, strict=True)):
        want = clf.predict(item, top_k=k + 1)[0]
        assert len(pred.top) == k + 1 and pred.label == want.label


@pytest.mark.parametrize(
    "form", [lambda d: d, lambda d: d[:, :, None], lambda d: d[None], lambda d: d[None, :, :, None],
             lambda d: (d / 255.0).astype(np.float32)],
    ids=["HW", "HWC", "1HW", "1HWC", "float-HW"])
def test_same_shape_arrays_in_every_layout(clf, digits, form):
    with dlinfer.Batcher(clf, max_batch_size=8, max_delay_ms=FOREVER_MS) as b:
        futs = b.submit_many([form(d) for d in digits[:8]])  # one full batch, same shapes
        got = [f.result(10) for f in futs]
    want = clf.predict(digits[:8])
    assert [p.label for p in got] == [p.label for p in want]
    assert_close(probabilities(got), probabilities(want), rtol=1e-5, atol=1e-6)


# -- failures ----------------------------------------------------------------------------------

def test_queue_full_rejects_at_once():
    rec = Recorder()
    b = dlinfer.Batcher(rec, max_batch_size=2, max_delay_ms=0, max_queue=3)
    first = hold_worker(b, rec)
    queued = [b.submit(i) for i in range(3)]
    with pytest.raises(dlinfer.QueueFullError, match="queue is full"):
        b.submit(99)
    with pytest.raises(dlinfer.QueueFullError):  # all or none
        b.submit_many([7])
    rec.gate.set()
    assert [f.result(10) for f in queued] == [0, 10, 20] and first.result(10) == -10
    b.submit(5).result(10)  # room again
    b.close()
    assert b.stats().rejected == 2
    assert not any(99 in batch for batch in rec.batches)


def test_submit_many_is_all_or_none():
    rec = Recorder()
    with dlinfer.Batcher(rec, max_batch_size=2, max_delay_ms=0, max_queue=4) as b:
        hold_worker(b, rec)
        with pytest.raises(dlinfer.QueueFullError, match="5 more asked"):
            b.submit_many(range(5))
        assert b.stats().queue_depth == 0
        rec.gate.set()


def test_timed_out_request_fails_and_is_never_computed():
    rec = Recorder()
    with dlinfer.Batcher(rec, max_batch_size=4, max_delay_ms=0, timeout_ms=FOREVER_MS) as b:
        hold_worker(b, rec)
        late = b.submit(42, timeout_ms=20)
        patient = b.submit(43)
        time.sleep(0.2)  # well past 20 ms: `late` is stale before the worker is free
        rec.gate.set()
        with pytest.raises(dlinfer.RequestTimeoutError, match="past its timeout of 20 ms") as info:
            late.result(10)
        assert isinstance(info.value, TimeoutError)
        assert patient.result(10) == 430
        assert b.stats().timed_out == 1
    assert not any(42 in batch for batch in rec.batches)


def test_the_default_timeout_applies_to_plain_submits_and_may_change():
    rec = Recorder()
    with dlinfer.Batcher(rec, max_batch_size=4, max_delay_ms=0, timeout_ms=20) as b:
        hold_worker(b, rec)
        late = b.submit(42)  # no per-call options: the single-request fast path
        b.timeout_ms = None
        patient = b.submit(43)
        time.sleep(0.2)
        rec.gate.set()
        with pytest.raises(dlinfer.RequestTimeoutError, match="past its timeout of 20 ms"):
            late.result(10)
        assert patient.result(10) == 430
        assert b.timeout_ms is None
        with pytest.raises(ValueError, match="timeout_ms"):
            b.timeout_ms = -1
        stats = b.stats()
        assert (stats.submitted, stats.timed_out, stats.completed) == (3, 1, 2)
    assert not any(42 in batch for batch in rec.batches)


def test_failing_batch_fails_only_its_requests():
    rec = Recorder(fail_when=lambda items: 13 in items)
    with dlinfer.Batcher(rec, max_batch_size=3, max_delay_ms=0) as b:
        hold_worker(b, rec)
        doomed = b.submit_many([12, 13, 14])  # one full batch holding the poison
        fine = b.submit_many([15, 16, 17])  # the next batch
        rec.gate.set()
        for f in doomed:
            with pytest.raises(dlinfer.InferenceError, match="boom: injected failure") as info:
                f.result(10)
            assert isinstance(info.value.__cause__, RuntimeError)
        assert [f.result(10) for f in fine] == [150, 160, 170]
        assert b.submit(1).result(10) == 10  # still serving
        stats = b.stats()
    assert stats.failed == 3 and stats.completed == 5


@onnxruntime_only("a patched onnxruntime session")
def test_onnxruntime_failure_keeps_the_batcher_serving(clf, digits, monkeypatch):
    calls = []
    real_run = clf.model._session.run

    class FlakySession:  # fails the first run only, like a transient device error
        def run(self, *args):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("simulated onnxruntime failure")
            return real_run(*args)

    monkeypatch.setattr(clf.model, "_session", FlakySession())
    # Model.run calls onnxruntime's C-level run directly when it can; route it
    # through the flaky session instead.
    monkeypatch.setattr(clf.model, "_c_run", None)
    with dlinfer.Batcher(clf, max_batch_size=4, max_delay_ms=0) as b:
        with pytest.raises(dlinfer.InferenceError) as info:
            b.submit(digits[0]).result(10)
        assert isinstance(info.value.__cause__, dlinfer.InferenceError)
        assert b.submit(digits[1]).result(10).label == clf.predict(digits[1])[0].label


def test_bad_input_fails_alone(clf, digits, tmp_path):
    bad_file = tmp_path / "bad.png"
    bad_file.write_text("not an image")
    with dlinfer.Batcher(clf, max_batch_size=8, max_delay_ms=FOREVER_MS) as b:
        good = b.submit(digits[0])
        bad_shape = b.submit(np.zeros((30, 30), np.float32))  # uint8 would be resized
        bad_dtype = b.submit(digits[1].astype(np.int64))
        not_image = b.submit(str(bad_file))
        good2 = b.submit(digits[2])
    with pytest.raises(dlinfer.InputShapeError, match="28x28"):
        bad_shape.result(0)
    with pytest.raises(dlinfer.InputDtypeError):
        bad_dtype.result(0)
    with pytest.raises(dlinfer.ImageDecodeError, match="bad.png"):
        not_image.result(0)
    assert good.result(0).label == clf.predict(digits[0])[0].label
    assert good2.result(0).label == clf.predict(digits[2])[0].label


def test_a_request_is_one_image(clf, digits):
    with dlinfer.Batcher(clf) as b:
        with pytest.raises(dlinfer.InputShapeError, match="one image, got an array of 5"):
            b.submit(digits[:5])
        with pytest.raises(dlinfer.InputShapeError, match="of 2 images"):
            b.submit(digits[:2, :, :, None])
        with pytest.raises(TypeError, match="top_k"):
            dlinfer.Batcher(lambda xs: xs).submit(1, top_k=2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_batch_size"):
        dlinfer.Batcher(lambda xs: xs, max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_ms"):
        dlinfer.Batcher(lambda xs: xs, max_delay_ms=-1)
    with pytest.raises(ValueError, match="max_queue"):
        dlinfer.Batcher(lambda xs: xs, max_queue=0)
    with pytest.raises(ValueError, match="timeout_ms"):
        dlinfer.Batcher(lambda xs: xs, timeout_ms=-5)
    with pytest.raises(TypeError, match="Batcher needs"):
        dlinfer.Batcher(42)


# -- lifecycle ---------------------------------------------------------------------------------

def test_close_drains_the_queue_then_rejects():
    rec = Recorder()
    b = dlinfer.Batcher(rec, max_batch_size=4, max_delay_ms=FOREVER_MS)
    futs = [b.submit(i) for i in range(10)]
    b.close()  # no waiting for the delay: close runs everything queued
    assert [f.result(0) for f in futs] == [i * 10 for i in range(10)]
    assert not b._thread.is_alive() and b.closed
    with pytest.raises(dlinfer.BatcherClosedError):
        b.submit(1)
    b.close()  # idempotent


def test_cancelled_request_is_skipped():
    rec = Recorder()
    with dlinfer.Batcher(rec, max_batch_size=4, max_delay_ms=0) as b:
        hold_worker(b, rec)
        gone = b.submit(77)
        kept = b.submit(78)
        assert gone.cancel()
        rec.gate.set()
        assert kept.result(10) == 780
    assert not any(77 in batch for batch in rec.batches)
    assert b.stats().cancelled == 1


# -- asyncio -----------------------------------------------------------------------------------

def test_asyncio_predict(clf, digits):
    expected = clf.predict(digits)

    async def main(b):
        preds = await asyncio.gather(*(b.predict(d) for d in digits))
        many = await b.predict_many(digits[:5], top_k=2)
        return preds, many

    with dlinfer.Batcher(clf, max_batch_size=16, max_delay_ms=2) as b:
        preds, many = asyncio.run(main(b))
        stats = b.stats()
    assert [p.label for p in preds] == [p.label for p in expected]
    assert [len(p.top) for p in many] == [2] * 5
    assert stats.mean_batch_size > 1  # 64 coroutines queued at once were batched


def test_asyncio_errors_and_timeout():
    rec = Recorder()

    async def main(b):
        first = asyncio.ensure_future(b.predict(-1))
        await asyncio.get_running_loop().run_in_executor(None, rec.entered.wait, 10)
        late = asyncio.ensure_future(b.predict(5, timeout_ms=10))
        await asyncio.sleep(0)  # let the task run up to its await: it is queued now
        assert b.stats().queue_depth == 1
        with pytest.raises(dlinfer.QueueFullError):
            await b.predict_many([0, 1])  # 1 queued + 2 > max_queue 2
        await asyncio.sleep(0.1)
        rec.gate.set()
        assert await first == -10
        with pytest.raises(dlinfer.RequestTimeoutError):
            await late
        return await b.predict(2)

    rec.gate.clear()
    with dlinfer.Batcher(rec, max_batch_size=4, max_delay_ms=0, max_queue=2) as b:
        assert asyncio.run(main(b)) == 20
