"""`Batcher`: a dynamic micro-batcher that turns many single requests into model batches.

Requests arrive one at a time from threads or coroutines; one worker thread gathers
them into batches of up to ``max_batch_size``, waiting at most ``max_delay_ms`` after
the oldest queued request before running a partial batch (the policy of Triton's
dynamic batcher, in process).  Each result goes back to the future of the request
that sent it.

Failure is contained: a queue at ``max_queue`` rejects new requests at once
(:class:`~dlinfer.QueueFullError`); a request still queued after its timeout is
dropped, never computed, and fails with :class:`~dlinfer.RequestTimeoutError`; a bad
input fails only its own request; an inference error fails only the requests of
that batch, with the cause attached, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from ..checks import MAX_WAIT_MS, check_int, check_number
from ..errors import (
    BatcherClosedError,
    InferenceError,
    QueueFullError,
    RequestTimeoutError,
)
from ..runtime.model import Model
from ..runtime.session import batching_session_options
from ..tasks.classifier import Classifier
from .inflight import InFlight, failed, finished, settle, stop_at_exit
from .runners import runner_for

__all__ = ["MAX_WAIT_MS", "Batcher", "BatcherStats", "batching_session_options"]

# How many recent queue waits the percentiles in `stats()` are computed over.
_WAIT_WINDOW = 10_000

_log = logging.getLogger("dlinfer.serving")


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of a :class:`Batcher`'s counters.

    ``queue_wait_ms`` holds the p50/p90/p99/max time requests spent queued before
    their batch started, over the last 10,000 requests taken from the queue.
    """

    submitted: int
    completed: int
    failed: int
    rejected: int
    timed_out: int
    cancelled: int
    batches: int
    mean_batch_size: float
    queue_depth: int
    queue_wait_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Request:
    __slots__ = ("item", "top_k", "future", "loop", "enqueued", "deadline")

    def __init__(self, item: Any, top_k: int, future: Any, loop: Any, enqueued: float,
                 deadline: float | None) -> None:
        self.item = item
        self.top_k = top_k
        self.future = future  # concurrent.futures.Future, or asyncio.Future when loop is set
        self.loop = loop
        self.enqueued = enqueued
        self.deadline = deadline

    def claim(self) -> bool:
        """Mark the request as running; False if its caller cancelled it."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()
        # Read without the loop's lock: a cancel that races past this check is
        # caught again in settle, which never touches a done future.
        return not self.future.cancelled()


# -- the batcher -------------------------------------------------------------------------------

class Batcher:
    """Gathers single requests from many threads or coroutines into model batches.

    Args:
        model: a :class:`~dlinfer.Classifier` (requests are images; results are
            :class:`~dlinfer.Prediction`), a path to an exported classifier, a
            :class:`~dlinfer.Model` (requests are single samples without the batch
            axis; results are their output rows), or ``fn(list) -> list``.
        max_batch_size: most requests run together.
        max_delay_ms: how long the oldest queued request may wait for a batch to fill
            before a partial batch runs.  0 runs whatever is queued at once.
        max_queue: most requests waiting; more are rejected with
            :class:`~dlinfer.QueueFullError` at once.
        timeout_ms: a request still queued this long after it was submitted fails
            with :class:`~dlinfer.RequestTimeoutError` and is never computed.  The
            check runs whenever the worker forms a batch, so the error arrives at most
            one batch's compute time after the deadline.  None waits forever.
            ``submit(..., timeout_ms=)`` overrides it per request.
        on_batch: called after each batch (on the thread that settles it) as ``on_batch(
            size, queue_waits_s, run_s)`` (the server's metrics); an error in it is logged.
        backend: the runtime backend when ``model`` is a path (docs/runtime.md).
        in_flight: batches started on the backend at once: the worker forms and
            starts the next batch while the backend runs the last (OpenVINO;
            docs/serving.md).  None takes the backend's number (2 on OpenVINO, 1 on
            onnxruntime, which runs one batch at a time); 1 turns it off.

    Delays and timeouts must be finite and at most :data:`MAX_WAIT_MS` (a day); bad
    arguments raise :class:`~dlinfer.InputError` naming them.  An unexpected error in
    the worker fails the requests of its batch and is logged; the worker goes on.

    ``submit(x)`` returns a :class:`concurrent.futures.Future`; ``await predict(x)``
    serves asyncio.  ``close()`` (or leaving a ``with`` block) runs every queued
    request, then stops the worker.
    """

    def __init__(
        self,
        model: Classifier | Model | str | os.PathLike[str] | Callable[[list[Any]], Sequence[Any]],
        max_batch_size: int = 32,
        max_delay_ms: float = 2.0,
        max_queue: int = 1024,
        timeout_ms: float | None = None,
        *,
        name: str | None = None,
        on_batch: Callable[[int, list[float], float], None] | None = None,
        backend: str | None = None,
        in_flight: int | None = None,
    ) -> None:
        self.check_arguments(max_batch_size, max_delay_ms, max_queue, timeout_ms)
        self._runner = runner_for(model, backend, in_flight)
        self.model = model
        self.max_batch_size = max_batch_size if getattr(self._runner, "grouped", True) else 1
        self._max_delay_ms = float(max_delay_ms)
        self.max_queue = max_queue
        self._timeout_ms: float | None = None
        self._timeout_s: float | None = None
        self.timeout_ms = timeout_ms
        self.name = name or type(model).__name__
        self.on_batch = on_batch

        self._queue: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._counts = collections.Counter()  # guarded by _cond
        self._submitted = 0  # guarded by _cond; apart from _counts as the hot path bumps it
        self._waits: collections.deque[float] = collections.deque(maxlen=_WAIT_WINDOW)
        self.in_flight = getattr(self._runner, "in_flight", 1)
        self._inflight = (InFlight(self.in_flight, self._finish, self._fail, self.name)
                          if self.in_flight > 1 else None)
        self._thread = threading.Thread(target=self._work, name=f"dlinfer-batcher-{self.name}",
                                        daemon=True)
        self._thread.start()
        stop_at_exit(self)

    @staticmethod
    def check_arguments(max_batch_size: Any, max_delay_ms: Any, max_queue: Any,
                        timeout_ms: Any) -> None:
        """Raise :class:`~dlinfer.InputError` naming the first bad setting (the checks
        ``Batcher()`` runs, for callers that validate a configuration up front)."""
        check_int(max_batch_size, "max_batch_size", min=1)
        _check_ms("max_delay_ms", max_delay_ms)
        check_int(max_queue, "max_queue", min=1)
        _check_ms("timeout_ms", timeout_ms, none_ok=True)

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, x: Any, *, top_k: int | None = None,
               timeout_ms: float | None = None) -> Future:
        """Queue one request; its :class:`~concurrent.futures.Future` gets the result.

        Raises :class:`~dlinfer.QueueFullError` at once when the queue is full, and
        :class:`~dlinfer.BatcherClosedError` after ``close()``.
        """
        return self._enqueue_one(x, *self._options(top_k, timeout_ms), None)

    def submit_many(self, xs: Iterable[Any], *, top_k: int | None = None,
                    timeout_ms: float | None = None) -> list[Future]:
        """Queue several requests, all or none: a queue without room for all rejects all."""
        return self._enqueue(list(xs), top_k, timeout_ms, None)

    async def predict(self, x: Any, *, top_k: int | None = None,
                      timeout_ms: float | None = None) -> Any:
        """Await the result of one request from asyncio (same rules as :meth:`submit`)."""
        return await self._enqueue_one(x, *self._options(top_k, timeout_ms),
                                       asyncio.get_running_loop())

    async def predict_many(self, xs: Iterable[Any], *, top_k: int | None = None,
                           timeout_ms: float | None = None) -> list[Any]:
        """Await several requests admitted all or none; the first failure is raised."""
        futs = self._enqueue(list(xs), top_k, timeout_ms, asyncio.get_running_loop())
        return list(await asyncio.gather(*futs))

    def _options(self, top_k: int | None, timeout_ms: float | None) -> tuple[int, float | None]:
        """A request's top_k and timeout in seconds, the Batcher's defaults for None."""
        if top_k is None and timeout_ms is None:  # the usual request: nothing to check
            return 1, self._timeout_s
        if top_k is None:
            top_k = 1
        elif self._runner.kind != "classifier":
            raise TypeError("top_k applies only to a Batcher over a Classifier")
        else:
            check_int(top_k, "top_k", min=1)
        if timeout_ms is None:
            return top_k, self._timeout_s
        _check_ms("timeout_ms", timeout_ms)
        return top_k, timeout_ms / 1000.0

    def _enqueue_one(self, x: Any, top_k: int, timeout_s: float | None,
                     loop: asyncio.AbstractEventLoop | None) -> Any:
        """`_enqueue` for one request: the serving hot path.

        It runs once per request from every client, so it does the least it can:
        no lists, one lock hold, and a wake-up only when the worker has something
        to decide.
        """
        item = self._runner.check(x)  # in the caller's thread: a bad input fails its own call
        fut = Future() if loop is None else loop.create_future()
        req = _Request(item, top_k, fut, loop, 0.0, None)
        with self._cond:
            queue = self._queue
            n = len(queue)
            if self._closing or n >= self.max_queue:
                self._refuse(n, 1)
            req.enqueued = now = time.monotonic()
            if timeout_s is not None:
                req.deadline = now + timeout_s
            queue.append(req)
            self._submitted += 1
            if n == 0 or n + 1 == self.max_batch_size:
                self._cond.notify()
        return fut

    def _refuse(self, waiting: int, asked: int) -> NoReturn:
        """Raise the error for a request the queue can't take (called holding the lock)."""
        if self._closing:
            raise BatcherClosedError(f"Batcher {self.name!r} is closed")
        self._counts["rejected"] += asked
        raise QueueFullError(
            f"Batcher {self.name!r} queue is full ({waiting} of {self.max_queue} "
            f"waiting; {asked} more asked)"
        )

    def _enqueue(self, xs: list[Any], top_k: int | None, timeout_ms: float | None,
                 loop: asyncio.AbstractEventLoop | None) -> list[Any]:
        top_k, timeout_s = self._options(top_k, timeout_ms)
        # Checked in the caller's thread, so a malformed input fails its own call.
        check = self._runner.check
        items = [check(x) for x in xs]
        # This runs once per request from every client, so it stays lean: the
        # futures are made before taking the lock, which is held only to queue.
        make_future = Future if loop is None else loop.create_future
        futures = [make_future() for _ in items]
        queue = self._queue
        with self._cond:
            if self._closing or len(queue) + len(items) > self.max_queue:
                self._refuse(len(queue), len(items))
            now = time.monotonic()
            deadline = None if timeout_s is None else now + timeout_s
            queue.extend(_Request(item, top_k, fut, loop, now, deadline)
                         for item, fut in zip(items, futures))
            self._submitted += len(items)
            # Wake the worker only when it has something to decide: the first request
            # (it sleeps untimed on an empty queue) or a full batch.  While a partial
            # batch waits out its delay the worker sleeps on a timer, and waking it
            # for every arrival would cost a thread switch per request.
            n = len(queue)
            if n == len(items) or (n >= self.max_batch_size > n - len(items)):
                self._cond.notify()
        return futures

    @property
    def timeout_ms(self) -> float | None:
        """The default request timeout (None: wait forever); may be changed at any time."""
        return self._timeout_ms

    @timeout_ms.setter
    def timeout_ms(self, value: float | None) -> None:
        _check_ms("timeout_ms", value, none_ok=True)
        # Kept in seconds too, for the hot path's deadline arithmetic.
        self._timeout_ms = None if value is None else float(value)
        self._timeout_s = None if value is None else value / 1000.0

    @property
    def max_delay_ms(self) -> float:
        """How long a partial batch waits to fill; may be changed at any time."""
        return self._max_delay_ms

    @max_delay_ms.setter
    def max_delay_ms(self, value: float) -> None:
        _check_ms("max_delay_ms", value)
        with self._cond:  # a worker waiting out the old delay re-reads it now
            self._max_delay_ms = float(value)
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch now (read without the lock: a gauge)."""
        return len(self._queue)

    # -- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch: list[_Request] = []
            try:
                batch = self._next_batch()
                if batch is None:
                    if self._inflight is not None:
                        self._inflight.close()  # waits for the batches still running
                    return
                if batch:
                    self._run(batch)
            except Exception as exc:  # a bug, not a model error: fail the batch, keep serving
                _log.exception("Batcher %r: unexpected error in the worker; failing its batch "
                               "of %d", self.name, len(batch or ()))
                self._fail(batch or [], exc)

    def _next_batch(self) -> list[_Request] | None:
        """Wait for a full batch or the oldest request's delay; None once closed and drained."""
        with self._cond:
            while True:
                if not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                if len(self._queue) >= self.max_batch_size or self._closing:
                    break
                left = self._queue[0].enqueued + self._max_delay_ms / 1e3 - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            now = time.monotonic()
            batch: list[_Request] = []
            expired: list[_Request] = []
            while self._queue and len(batch) < self.max_batch_size:
                req = self._queue.popleft()
                if not req.claim():
                    self._counts["cancelled"] += 1
                elif req.deadline is not None and now >= req.deadline:
                    expired.append(req)
                else:
                    batch.append(req)
                    self._waits.append(now - req.enqueued)
            self._counts["timed_out"] += len(expired)
        for req in expired:
            waited = (now - req.enqueued) * 1000.0
            timeout = (req.deadline - req.enqueued) * 1000.0
            settle(
                [(req, False, RequestTimeoutError(
                    f"request waited {waited:.1f} ms in the queue of Batcher {self.name!r}, past "
                    f"its timeout of {timeout:g} ms; it was not computed"))]
            )
        return batch

    def _run(self, batch: list[_Request]) -> None:
        started = time.monotonic()
        items, top_ks = [r.item for r in batch], [r.top_k for r in batch]
        start = getattr(self._runner, "start", None)  # a runner may have run() only
        try:
            finish = start(items, top_ks) if start else finished(self._runner.run(items, top_ks))
        except Exception as exc:  # a failed batch must not stop the worker
            finish = failed(exc)
        if self._inflight is None:
            self._finish(batch, started, finish)
        else:  # finished on the InFlight's thread while this one forms the next batch
            self._inflight.hand_on((batch, started, finish))

    def _finish(self, batch: list[_Request], started: float, finish: Callable[[], Any]) -> None:
        """Wait for a started batch, count it and settle its requests."""
        outcome: list[tuple[_Request, bool, Any]]
        try:
            results, errors = finish()
        except Exception as exc:  # a failed batch fails its own requests only
            outcome = [(req, False, self._batch_error(batch, exc)) for req in batch]
        else:
            outcome = [
                (req, False, errors[i]) if i in errors else (req, True, results[i])
                for i, req in enumerate(batch)
            ]
        elapsed = time.monotonic() - started
        failed = sum(1 for _, ok, _ in outcome if not ok)
        with self._cond:
            self._counts["batches"] += 1
            self._counts["batched"] += len(batch)
            self._counts["completed"] += len(batch) - failed
            self._counts["failed"] += failed
        settle(outcome)
        if self.on_batch is not None:
            try:
                self.on_batch(len(batch), [started - r.enqueued for r in batch], elapsed)
            except Exception:  # the results are out; a broken hook only loses its numbers
                _log.exception("Batcher %r: on_batch hook failed", self.name)

    def _batch_error(self, batch: list[_Request], exc: Exception) -> InferenceError:
        err = InferenceError(
            f"inference failed for a batch of {len(batch)} in Batcher {self.name!r}: "
            f"{type(exc).__name__}: {exc}"
        )
        err.__cause__ = exc
        return err

    def _fail(self, batch: list[_Request], exc: Exception) -> None:
        """Fail whatever of ``batch`` is not settled yet (after an unexpected error)."""
        pending = [r for r in batch if not r.future.done()]
        with self._cond:
            self._counts["failed"] += len(pending)
        try:
            settle([(r, False, self._batch_error(batch, exc)) for r in pending])
        except Exception:  # nothing more can be done for these; the worker must live on
            _log.exception("Batcher %r: could not fail a batch's requests", self.name)

    # -- lifecycle and stats -------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, run every queued one, and stop the worker.

        ``timeout`` (seconds) bounds the wait for the worker; None waits until done.
        Requests still queued when it runs out fail with :class:`~dlinfer.BatcherClosedError`
        (a batch already running keeps its requests).
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is self._thread or (
                self._inflight is not None and self._inflight.on_own_thread()):
            return  # the worker (a done-callback or hook on it) cannot wait for itself
        self._thread.join(timeout)
        with self._cond:
            left = [r for r in self._queue if r.claim()]
            self._queue.clear()
            self._counts["failed"] += len(left)
        settle([(r, False, BatcherClosedError(
            f"Batcher {self.name!r} closed after {timeout:g} s with this request still queued "
            "behind a busy worker; it was not computed")) for r in left])

    @property
    def closed(self) -> bool:
        return self._closing

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> BatcherStats:
        """Counters since start, and queue-wait percentiles over recent requests."""
        with self._cond:
            c = dict(self._counts)
            submitted = self._submitted
            waits = np.array(self._waits, dtype=np.float64) * 1000.0
            depth = len(self._queue)
        if waits.size:
            p50, p90, p99 = np.percentile(waits, [50, 90, 99]).tolist()
            wait = {"p50": p50, "p90": p90, "p99": p99, "max": float(waits.max())}
        else:
            wait = {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
        batches = c.get("batches", 0)
        return BatcherStats(
            submitted=submitted,
            completed=c.get("completed", 0),
            failed=c.get("failed", 0),
            rejected=c.get("rejected", 0),
            timed_out=c.get("timed_out", 0),
            cancelled=c.get("cancelled", 0),
            batches=batches,
            mean_batch_size=c.get("batched", 0) / batches if batches else 0.0,
            queue_depth=depth,
            queue_wait_ms=wait,
        )

    def __repr__(self) -> str:
        return (f"Batcher({self.name!r}, max_batch_size={self.max_batch_size}, "
                f"max_delay_ms={self.max_delay_ms:g}, max_queue={self.max_queue}, "
                f"timeout_ms={self.timeout_ms}, closed={self._closing})")


def _check_ms(name: str, value: Any, *, none_ok: bool = False) -> None:
    """A delay or timeout in ms: a finite number in [0, MAX_WAIT_MS] (a day)."""
    if not (value is None and none_ok):
        check_number(value, name, min=0, max=MAX_WAIT_MS)
