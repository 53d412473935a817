"""How a :class:`~dlinfer.Batcher`'s batches finish: their requests settled, and the
batches started on the backend and not finished yet.

Where the backend can start a run without waiting for it (OpenVINO's asynchronous
infer requests, :meth:`dlinfer.runtime.backends.openvino.model.OpenVINOModel.start_run`),
the Batcher's worker preprocesses and starts a batch, hands it here, and goes on to
form the next one while the backend runs this one.  One thread of this module's own
waits for the batches in the order they started, and settles their requests.

At most ``limit`` batches are started and unfinished: the worker that hands on one
more waits until the oldest finishes.  That batch is already started (queued in
OpenVINO behind the one running), so the backend goes from one batch to the next
without waiting for Python, and requests arriving meanwhile wait in the Batcher's
queue, where they join the next batch, rather than in OpenVINO's.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["InFlight", "failed", "finished", "settle", "stop_at_exit"]

_log = logging.getLogger("dlinfer.serving")

# How long the interpreter's exit waits for each open Batcher's batches under way.
EXIT_WAIT_S = 30.0
_open: weakref.WeakSet[Any] = weakref.WeakSet()


def stop_at_exit(batcher: Any) -> None:
    """Stop ``batcher`` when the interpreter exits, if it is still open then."""
    _open.add(batcher)


@atexit.register
def _stop_open_batchers() -> None:
    """Close the Batchers a program left open: their queued requests fail (nobody waits
    for them any more), the batches under way finish, and the workers end.  A worker
    still inside the backend when the process ended aborted it ("terminate called
    without an active exception", exit status 134, on OpenVINO)."""
    batchers = list(_open)
    for batcher in batchers:
        batcher.close(0)  # stop taking requests, fail the queue at once
    for batcher in batchers:
        batcher.close(EXIT_WAIT_S)  # then wait for what is running


class InFlight:
    """Finishes started batches in order on a thread of its own.

    Each ``(batch, *rest)`` handed on is finished on that thread by ``finish(batch,
    *rest)``, which settles its requests; if that raises (a bug), ``fail(batch, exc)``
    fails whatever it left unsettled, and the thread goes on.
    """

    def __init__(self, limit: int, finish: Callable[..., None],
                 fail: Callable[[Any, Exception], None], name: str) -> None:
        if limit < 2:
            raise ValueError("InFlight is for two or more batches in flight")
        self.limit = limit
        self._finish = finish
        self._fail = fail
        self._name = name
        # The worker holds one started batch while it waits: limit - 1 slots here.
        self._slots = threading.Semaphore(limit - 1)
        self._started: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"dlinfer-finish-{name}",
                                        daemon=True)
        self._thread.start()

    def hand_on(self, item: Any) -> None:
        """Queue a started batch for finishing; waits while ``limit`` are unfinished."""
        self._slots.acquire()
        self._started.put(item)

    def close(self) -> None:
        """Finish every batch handed on, then stop the thread (the worker's last call)."""
        self._started.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def on_own_thread(self) -> bool:
        """Whether the caller runs on the finishing thread (a done-callback, a hook)."""
        return threading.current_thread() is self._thread

    def _work(self) -> None:
        while True:
            item = self._started.get()
            if item is None:
                return
            try:
                self._finish(*item)
            except Exception as exc:  # a bug, not a model error: fail the batch, go on
                _log.exception("Batcher %r: unexpected error finishing a batch; failing its "
                               "batch of %d", self._name, len(item[0]))
                try:
                    self._fail(item[0], exc)
                except Exception:  # the thread must live on for the batches behind
                    _log.exception("Batcher %r: could not fail a batch", self._name)
            finally:
                self._slots.release()


def finished(value: Any) -> Callable[[], Any]:
    """A batch that has run: its finish function returns ``value``."""
    return lambda: value


def failed(exc: Exception) -> Callable[[], Any]:
    """A batch that failed to start: its finish function raises ``exc``."""
    def finish() -> Any:
        raise exc
    return finish


def settle(outcome: list[tuple[Any, bool, Any]]) -> None:
    """Deliver each ``(request, ok, result or error)`` to the request's future."""
    by_loop: dict[Any, list[tuple[Any, bool, Any]]] = {}
    for req, ok, value in outcome:
        if req.loop is None:
            if ok:
                req.future.set_result(value)
            else:
                req.future.set_exception(value)
        else:
            by_loop.setdefault(req.loop, []).append((req.future, ok, value))
    # One wake-up per event loop per batch, not one per request.
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_async, items)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is waiting any more


def _settle_async(items: list[tuple[asyncio.Future, bool, Any]]) -> None:
    for fut, ok, value in items:
        if fut.done():  # cancelled by its caller meanwhile
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
