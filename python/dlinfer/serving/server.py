"""`dlinfer serve`: classifiers over HTTP, one :class:`~dlinfer.Batcher` per model.

Built on Starlette and uvicorn (``pip install 'dlinfer[serve]'``).  Routes::

    GET  /healthz                      liveness
    GET  /v1/models                    names and metadata
    GET  /v1/models/{name}             one model's metadata
    POST /v1/models/{name}/predict     image bytes, multipart files, or JSON arrays
    GET  /metrics                      Prometheus text format (prometheus_client)

Every answer is JSON; an error is ``{"error": code, "detail": message}`` with a 4xx/5xx
status (:func:`~.responses.error_response`), and the server keeps serving.  Every wait
has a bound: request heads (``head_timeout_s``), bodies (``body_timeout_s``), open
connections (``max_connections``, :mod:`.connections`), queued requests (``timeout_ms``)
and shutdown (``graceful_timeout_s``).  SIGTERM stops accepting connections, finishes the requests
already taken, drains the batchers and exits 0.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..checks import check_int, check_number
from ..errors import SpecError
from ..runtime.model import Model
from ..runtime.warmup import serving_model_options, warm_up_for_batcher
from ..tasks.classifier import Classifier
from .batcher import MAX_WAIT_MS, Batcher
from .explain_route import explain_routes
from .kserve import v2_routes
from .metrics import MULTIPROC_ENV, Metrics
from .responses import ErrorResponse, HTTPError, error_response, json_response
from .uploads import BodyReader, images_from
from .v2_tensors import served_model, tensor_metadata

__all__ = ["ServeConfig", "create_app", "model_name", "query_param", "serve"]

_CONFIG_ENV = "DLINFER_SERVE_CONFIG"
#: Longest body timeout and graceful-shutdown timeout taken, in seconds (an hour).
MAX_SERVER_TIMEOUT_S = 3600.0


@dataclass
class ServeConfig:
    """Everything ``dlinfer serve`` needs to build the app (JSON-able for worker processes).

    ``head_timeout_s`` bounds the time to receive a request's head (slower: closed) and
    ``body_timeout_s`` its body (slower: 408); past ``max_connections`` open connections
    (None: what the descriptor limit leaves), those waiting for a request are closed,
    longest-waiting first (:mod:`.connections`);
    ``graceful_timeout_s`` bounds a shutdown's wait for requests in flight.  An upload
    needing more than ``max_image_bytes`` decoded is refused from its header (None: each
    model's own budget, 512 MiB unless its spec says otherwise), and at most
    ``decode_threads`` uploads are decoded at once (None: min(4, cores)), so decoding
    never holds more than that many budgets.
    """

    models: list[str]
    names: list[str] = field(default_factory=list)
    max_batch_size: int = 32
    max_delay_ms: float = 2.0
    max_queue: int = 1024
    timeout_ms: float | None = 10_000.0
    max_body_bytes: int = 10 * 1024 * 1024
    device: str = "cpu"
    threads: int | None = None
    body_timeout_s: float = 60.0
    graceful_timeout_s: float = 20.0
    max_image_bytes: int | None = None
    decode_threads: int | None = None
    head_timeout_s: float = 10.0
    max_connections: int | None = None
    cuda: dict[str, Any] | None = None  # provider options (dlinfer.runtime.provider_options)
    tensorrt: dict[str, Any] | None = None
    # onnxruntime, openvino or auto; None: $DLINFER_BACKEND, else onnxruntime
    backend: str | None = None
    in_flight: int | None = None  # batches started at once (Batcher's; None: the backend's)

    def resolved_names(self) -> list[str]:
        names = self.names or [model_name(p) for p in self.models]
        if len(names) != len(self.models):
            raise ValueError(f"{len(names)} names for {len(self.models)} models")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"two models would both be served as {dupes[0]!r}; name them NAME=PATH")
        return names

    def check(self) -> None:
        """Refuse limits that are not finite or out of range (:class:`~dlinfer.InputError`);
        the batching settings get the Batcher's own checks."""
        Batcher.check_arguments(self.max_batch_size, self.max_delay_ms, self.max_queue,
                                self.timeout_ms)
        for name in ("body_timeout_s", "graceful_timeout_s", "head_timeout_s"):
            check_number(getattr(self, name), name, min=0, max=MAX_SERVER_TIMEOUT_S,
                         min_open=True)
        check_int(self.max_body_bytes, "max_body_bytes", min=1)
        for name in ("max_image_bytes", "decode_threads", "max_connections", "in_flight"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, min=1)


def model_name(arg: str) -> str:
    """``NAME=PATH`` gives NAME; a bare path gives its file stem."""
    if "=" in arg:
        return arg.split("=", 1)[0]
    return os.path.splitext(os.path.basename(arg))[0]


def _model_path(arg: str) -> str:
    return arg.split("=", 1)[1] if "=" in arg else arg


# -- query parameters -------------------------------------------------------------------------

def query_param(request: Request, name: str, kind: type, low: float, high: float,
           default: Any = None) -> Any:
    """A query parameter as ``kind`` (int or float), finite and in [low, high]; else 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError
    except ValueError:
        what = "an integer" if kind is int else "a finite number"
        raise HTTPError(400, "bad_parameter", f"{name} must be between {low:g} and {high:.0f} "
                        f"({what}), got {raw!r}") from None
    return value


def _metadata(name: str, clf: Classifier | Model, batcher: Batcher) -> dict[str, Any]:
    if isinstance(clf, Model):
        return {**tensor_metadata(name, clf), "path": clf.path, "device": clf.device,
                "max_batch_size": batcher.max_batch_size, "max_delay_ms": batcher.max_delay_ms}
    spec = clf.spec
    return {
        "name": name,
        "path": clf.model.path,
        "task": spec.task,
        "labels": list(spec.labels),
        "input": {"shape": list(spec.input.shape), "layout": spec.input.layout,
                  "color": spec.input.color, "value_range": list(spec.input.value_range)},
        "device": clf.model.device,
        "providers": clf.model.providers,
        "backend": clf.model.backend,
        "max_batch_size": batcher.max_batch_size,
        "max_delay_ms": batcher.max_delay_ms,
        "max_queue": batcher.max_queue,
        "timeout_ms": batcher.timeout_ms,
    }


def _chain_stop_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on this loop when SIGTERM or SIGINT arrives, then the handler the
    server installed (uvicorn's, which starts its shutdown).  Returns the undo.

    The app learns of a shutdown no other way before uvicorn waits on the requests in
    flight, and a request still receiving its body would hold that wait.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # no server handler to chain to: leave the signal alone

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(callback)
            previous(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)

    def undo() -> None:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)

    return undo


def create_app(config: ServeConfig) -> Starlette:
    """The Starlette app; models load now, batchers start and drain with the app's lifespan."""
    config.check()
    names = config.resolved_names()
    # A file that is not a classifier is served as its Model, tensors in and out (v2).
    classifiers = {
        name: served_model(Model(_model_path(arg), device=config.device, threads=config.threads,
                                 **serving_model_options(_model_path(arg), config.backend,
                                                         config.device, config.threads,
                                                         config.cuda, config.tensorrt,
                                                         config.max_batch_size)))
        for name, arg in zip(names, config.models, strict=True)
    }
    for name, clf in classifiers.items():
        if isinstance(clf, Model):
            continue
        if len(clf.model.inputs) > 1:
            # Refused now, at startup, rather than with a 4xx on every request.
            raise SpecError(
                f"cannot serve {name!r} ({clf.model.path}): it takes the inputs "
                f"{[i.name for i in clf.model.inputs]}, and a request carries images only; "
                "call dlinfer.Classifier with a dict of every input instead")
        warm_up_for_batcher(clf.model, config.max_batch_size)  # GPU: every batch size once
    batchers: dict[str, Batcher] = {}
    metrics = Metrics()
    bodies = BodyReader(config.max_body_bytes, config.body_timeout_s)
    decode_threads = config.decode_threads or min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="dlinfer-decode")

    @asynccontextmanager
    async def lifespan(app: Starlette):
        for name, clf in classifiers.items():
            batcher = Batcher(clf, config.max_batch_size, config.max_delay_ms,
                              config.max_queue, config.timeout_ms, name=name,
                              in_flight=config.in_flight)
            batcher.on_batch = metrics.batch_hook(name, lambda b=batcher: b.queue_depth)
            batchers[name] = batcher
        def begin_shutdown() -> None:
            bodies.begin_shutdown()
            for b in batchers.values():
                # Run partial batches at once rather than after max_delay_ms, which could
                # outlast graceful_timeout_s; requests still arriving are served.
                b.max_delay_ms = 0

        undo_signals = _chain_stop_signals(begin_shutdown)
        try:
            yield
        finally:
            undo_signals()
            # uvicorn has finished the requests in flight (or given up on them after
            # graceful_timeout_s); this drains what is still queued, within that bound too.
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(None, b.close, config.graceful_timeout_s)
                                   for b in batchers.values()))
            pool.shutdown(wait=False, cancel_futures=True)
            metrics.process_exited()

    def batcher_for(name: str) -> Batcher:
        if name not in batchers:
            raise HTTPError(404, "unknown_model",
                            f"no model named {name!r}; serving {sorted(batchers)}")
        return batchers[name]

    def observed(route: str, handler: Callable[[Request], Awaitable[Response]],
                 method: str | None = None) -> Route:
        """``handler`` with every error answered as JSON and every request counted once."""
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except Exception as exc:
                response = error_response(exc)
            name = request.path_params.get("name", "")
            outcome = response.code if isinstance(response, ErrorResponse) else "ok"
            metrics.observe_request(route, name if name in batchers else "",
                                    response.status_code, outcome,
                                    time.perf_counter() - started)
            return response

        methods = [method] if method else ["POST"] if route.endswith("/predict") else ["GET"]
        return Route(route, endpoint, methods=methods)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": sorted(batchers)})

    async def list_models(request: Request) -> Response:
        return JSONResponse(
            {"models": [_metadata(n, classifiers[n], b) for n, b in batchers.items()]})

    async def show_model(request: Request) -> Response:
        name = request.path_params["name"]
        batcher = batcher_for(name)
        return JSONResponse(_metadata(name, classifiers[name], batcher))

    async def predict(request: Request) -> Response:
        name = request.path_params["name"]
        batcher = batcher_for(name)
        top_k = query_param(request, "top_k", int, 1, 2**31 - 1, default=1)
        timeout_ms = query_param(request, "timeout_ms", float, 0, MAX_WAIT_MS)
        if isinstance(classifiers[name], Model):
            raise HTTPError(400, "bad_request", f"model {name!r} is not a classifier: send "
                            f"tensors to POST /v2/models/{name}/infer")
        body = await bodies.read(request)
        images = await images_from(request, body, classifiers[name].preprocessing, pool,
                                   config.max_image_bytes)
        preds = await batcher.predict_many(images, top_k=top_k, timeout_ms=timeout_ms)
        return json_response({"model": name, "predictions": [p.to_dict() for p in preds]})

    async def metrics_route(request: Request) -> Response:
        for name, batcher in batchers.items():
            metrics.set_queue_depth(name, batcher.queue_depth)
        text, ctype = metrics.render()
        return Response(text, media_type=ctype)

    async def unrouted(request: Request, exc: HTTPException) -> Response:
        # No route matched (404) or the method is wrong (405): answered and counted here.
        response = error_response(exc)
        metrics.observe_request("unmatched", "", response.status_code, response.code, 0.0)
        return response

    async def uncaught(request: Request, exc: Exception) -> Response:
        # Only errors outside the routes reach here; Starlette re-raises them afterwards and
        # uvicorn logs the traceback, so this one does not log.
        return ErrorResponse(500, "internal", f"internal server error ({type(exc).__name__})")

    return Starlette(
        routes=[
            observed("/healthz", healthz),
            observed("/v1/models", list_models),
            observed("/v1/models/{name}", show_model),
            observed("/v1/models/{name}/predict", predict),
            observed("/metrics", metrics_route),
            # The KServe v2 / Open Inference Protocol routes, through the same batchers.
            *(observed(*route) for route in v2_routes(classifiers, batcher_for, bodies, pool)),
            *(observed(*r) for r in explain_routes(classifiers, batcher_for, bodies, pool, config)),
        ],
        exception_handlers={HTTPException: unrouted, Exception: uncaught},
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """App factory for uvicorn worker processes; the config travels in an env variable."""
    from . import connections

    config = ServeConfig(**json.loads(os.environ[_CONFIG_ENV]))
    app = create_app(config)
    connections.configure(config.head_timeout_s, config.max_connections)  # this worker's
    return app


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with dlinfer's server log lines printed the same way."""
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["dlinfer"] = {"handlers": ["default"], "level": "INFO",
                                        "propagate": False}
    return log_config


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> int:
    """Run the server until SIGINT or SIGTERM; returns 0 after a graceful shutdown."""
    import uvicorn

    from . import connections

    check_int(workers, "workers", min=1)
    check_int(port, "port", min=0, max=65_535)
    config.check()
    # uvicorn re-raises the signal it stopped on once it is done, to run the previous
    # handler; a no-op handler makes a completed graceful shutdown exit 0, not -15.
    signal.signal(signal.SIGTERM, lambda *_: None)
    options = dict(host=host, port=port, log_level=log_level, log_config=_log_config(),
                   timeout_graceful_shutdown=config.graceful_timeout_s,
                   http=connections.PROTOCOL)
    if workers == 1:
        app = create_app(config)
        connections.configure(config.head_timeout_s, config.max_connections)
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return 0
    # Each worker process writes its metrics to files here and a scrape sums them all;
    # set before any prometheus_client import, which reads it once.
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="dlinfer-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    try:
        create_app(config)  # fail here, once, on a bad model rather than in every worker
        os.environ[_CONFIG_ENV] = json.dumps(asdict(config))
        uvicorn.run("dlinfer.serving.server:app_from_env", factory=True, workers=workers,
                    **options)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
    return 0
