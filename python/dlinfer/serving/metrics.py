"""`dlinfer serve`'s Prometheus metrics, through ``prometheus_client``.

One :class:`Metrics` per app.  With several server processes (``--workers N``) every
process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any
one of them sums all (prometheus_client's multiprocess mode); ``serve`` sets the
directory up.  The variable must be set before prometheus_client is first imported,
which is why this module imports it only when a :class:`Metrics` is made.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["MULTIPROC_ENV", "Metrics", "multiprocess_mode"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Request latency from 0.5 ms (a cached answer on a fast model) to a whole timeout.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def multiprocess_mode() -> bool:
    """Whether samples go to files shared by several processes."""
    return bool(os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()))


class Metrics:
    """Counters and histograms for the server's routes and batchers.

    ``dlinfer_http_requests_total{route, model, status, outcome}`` counts every HTTP
    request once, whatever answered it (a 413 before any decoding, a 429 for a request
    of 1,025 images): ``outcome`` is ``ok`` or the JSON ``error`` code.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode the samples live in files and a scrape reads them all, so
        # the metrics are not registered with this process's registry.
        registry = None if self.multiprocess else self.registry
        if not self.multiprocess:
            ProcessCollector(registry=self.registry)  # RSS, CPU, open fds of this process
        self.requests = Counter(
            "dlinfer_http_requests", "HTTP requests by route, model, status and outcome "
            "(ok or the JSON error code).", ["route", "model", "status", "outcome"],
            registry=registry)
        self.latency = Histogram(
            "dlinfer_http_request_duration_seconds", "Time from routing to the answer.",
            ["route", "model"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram(
            "dlinfer_batch_size", "Images per batch run (the _count is the batches run).",
            ["model"], buckets=_BATCH_BUCKETS, registry=registry)
        self.batch_seconds = Histogram(
            "dlinfer_batch_duration_seconds", "Time to run one batch: preprocessing, "
            "inference, postprocessing.", ["model"], buckets=_LATENCY_BUCKETS,
            registry=registry)
        self.queue_wait = Histogram(
            "dlinfer_queue_wait_seconds", "Time an image waited in the queue before its "
            "batch ran.", ["model"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.queue_depth = Gauge(
            "dlinfer_queue_depth", "Images waiting for a batch (summed over processes).",
            ["model"], multiprocess_mode="livesum", registry=registry)

    def observe_request(self, route: str, model: str, status: int, outcome: str,
                        seconds: float) -> None:
        self.requests.labels(route, model, str(status), outcome).inc()
        self.latency.labels(route, model).observe(seconds)

    def batch_hook(self, model: str, depth: Any) -> Any:
        """A :class:`~dlinfer.Batcher` ``on_batch`` hook recording into this model's series;
        ``depth()`` gives the queue depth left after the batch."""
        size_h = self.batch_size.labels(model)
        run_h = self.batch_seconds.labels(model)
        wait_h = self.queue_wait.labels(model)
        depth_g = self.queue_depth.labels(model)

        def on_batch(size: int, waits: list[float], run_s: float) -> None:
            size_h.observe(size)
            run_h.observe(run_s)
            for w in waits:
                wait_h.observe(w)
            depth_g.set(depth())

        return on_batch

    def set_queue_depth(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)

    def render(self) -> tuple[bytes, str]:
        """The exposition text of every process, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def process_exited(self) -> None:
        """Drop this process's live gauges from the shared files (at shutdown)."""
        if self.multiprocess:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid())
