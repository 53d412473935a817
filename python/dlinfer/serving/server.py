"""`dlinfer serve`: classifiers over HTTP, one :class:`~dlinfer.Batcher` per model.

Built on Starlette and uvicorn (``pip install 'dlinfer[serve]'``).  Routes::

    GET  /healthz                      liveness
    GET  /v1/models                    names and metadata
    GET  /v1/models/{name}             one model's metadata
    POST /v1/models/{name}/predict     image bytes, multipart files, or JSON arrays
    GET  /metrics                      Prometheus text format

Every error is JSON ``{"error": code, "detail": message}`` with a 4xx/5xx status,
and the server keeps serving.  SIGTERM stops accepting connections, finishes the
requests already taken, drains the batchers and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from ..errors import (
    BatcherClosedError,
    DecompressionBombError,
    DlinferError,
    ImageDecodeError,
    InferenceError,
    InputError,
    QueueFullError,
    RequestTimeoutError,
    SpecError,
)
from ..preprocessing.decode import decode_bytes
from ..preprocessing.transform import PreprocessSpec
from ..runtime.session import batching_session_options
from ..runtime.warmup import serving_provider_options, warm_up_for_batcher
from ..tasks.classifier import Classifier
from .batcher import Batcher

__all__ = ["ServeConfig", "create_app", "model_name", "serve"]

_CONFIG_ENV = "DLINFER_SERVE_CONFIG"
# Bodies this big are decoded off the event loop; smaller ones cost less than the hop.
_DECODE_INLINE_BYTES = 256 * 1024
# How much of a body over the size limit is read and dropped before answering 413.
_DRAIN_BYTES = 1024 * 1024


@dataclass
class ServeConfig:
    """Everything ``dlinfer serve`` needs to build the app (JSON-able for worker processes)."""

    models: list[str]
    names: list[str] = field(default_factory=list)
    max_batch_size: int = 32
    max_delay_ms: float = 2.0
    max_queue: int = 1024
    timeout_ms: float | None = 10_000.0
    max_body_bytes: int = 10 * 1024 * 1024
    device: str = "cpu"
    threads: int | None = None
    cuda: dict[str, Any] | None = None  # provider options (dlinfer.runtime.provider_options)
    tensorrt: dict[str, Any] | None = None

    def resolved_names(self) -> list[str]:
        names = self.names or [model_name(p) for p in self.models]
        if len(names) != len(self.models):
            raise ValueError(f"{len(names)} names for {len(self.models)} models")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"two models would both be served as {dupes[0]!r}; name them NAME=PATH")
        return names


def model_name(arg: str) -> str:
    """``NAME=PATH`` gives NAME; a bare path gives its file stem."""
    if "=" in arg:
        return arg.split("=", 1)[0]
    return os.path.splitext(os.path.basename(arg))[0]


def _model_path(arg: str) -> str:
    return arg.split("=", 1)[1] if "=" in arg else arg


class _HTTPError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


# Batcher and input errors -> HTTP, most specific first.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (QueueFullError, 429, "queue_full"),
    (RequestTimeoutError, 504, "timeout"),
    (DecompressionBombError, 413, "image_too_large"),
    (ImageDecodeError, 400, "not_an_image"),
    (InputError, 422, "bad_input"),
    (BatcherClosedError, 503, "shutting_down"),
    (InferenceError, 500, "inference_failed"),
]


def _json_images(payload: Any) -> list[np.ndarray]:
    if isinstance(payload, dict) and "image" in payload:
        raw = [payload["image"]]
    elif isinstance(payload, dict) and isinstance(payload.get("images"), list):
        raw = payload["images"]
    else:
        raise _HTTPError(400, "bad_json",
                         'JSON body must be {"image": pixels} or {"images": [pixels, ...]}')
    images = []
    for i, item in enumerate(raw):
        try:
            arr = np.asarray(item)
        except ValueError as exc:  # ragged nested lists
            raise _HTTPError(422, "bad_input",
                             f"image {i}: not a rectangular array ({exc})") from None
        if arr.dtype.kind in "iu":
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise _HTTPError(422, "bad_input",
                                 f"image {i}: integer pixels must be in [0, 255]")
            arr = arr.astype(np.uint8)
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        else:
            raise _HTTPError(422, "bad_input",
                             f"image {i}: pixels must be numbers, got {arr.dtype}")
        images.append(arr)
    if not images:
        raise _HTTPError(422, "bad_input", "no images in the request")
    return images


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = declared is not None and declared.isdigit() and int(declared) > limit
    if too_big and int(declared) > limit + _DRAIN_BYTES:
        raise _HTTPError(413, "payload_too_large",
                         f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    # Chunked bodies have no length to check up front, so the count happens here.  A
    # body over the limit is still read (up to a bound) and dropped: closing a socket
    # with unread data resets it, and the client would never see the 413.
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > limit + _DRAIN_BYTES:
            break
    if size > limit:
        raise _HTTPError(413, "payload_too_large",
                         f"body of {declared or 'at least ' + str(size)} bytes is over the "
                         f"limit of {limit} bytes")
    return b"".join(chunks)


async def _images_from(request: Request, body: bytes,
                       spec: PreprocessSpec | None) -> list[Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            return _json_images(json.loads(body))
        except json.JSONDecodeError as exc:
            raise _HTTPError(400, "bad_json", f"body is not valid JSON: {exc}") from None
    if spec is None:
        raise _HTTPError(422, "bad_input",
                         "this model takes token ids, not images; send them as JSON")
    if ctype == "multipart/form-data":
        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form()
        try:
            files = [(v.filename or k, await v.read()) for k, v in form.multi_items()
                     if isinstance(v, UploadFile)]
        finally:
            await form.close()
        if not files:
            raise _HTTPError(400, "not_an_image", "multipart body has no file parts")
        return [await _decode(data, name, spec) for name, data in files]
    if not body:
        raise ImageDecodeError("empty body; send image bytes, multipart files or JSON")
    return [await _decode(body, "body", spec)]


async def _decode(data: bytes, where: str, spec: PreprocessSpec) -> np.ndarray:
    """Pixels of one uploaded image, through the same decoder and budget as files."""
    # The model's size lets Pillow draft-decode a large JPEG, as for files.
    args = (data, where, spec.draft_target, spec.max_image_bytes)
    if len(data) <= _DECODE_INLINE_BYTES:
        return decode_bytes(*args)[0]
    return (await asyncio.get_running_loop().run_in_executor(None, decode_bytes, *args))[0]


def _int_param(request: Request, name: str, default: Any, low: float) -> Any:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw) if name.endswith("_ms") else int(raw)
    except ValueError:
        raise _HTTPError(400, "bad_parameter", f"{name} must be a number, got {raw!r}") from None
    if value < low:
        raise _HTTPError(400, "bad_parameter", f"{name} must be >= {low:g}, got {raw!r}")
    return value


def _metadata(name: str, clf: Classifier, batcher: Batcher) -> dict[str, Any]:
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
        "max_batch_size": batcher.max_batch_size,
        "max_delay_ms": batcher.max_delay_ms,
        "max_queue": batcher.max_queue,
        "timeout_ms": batcher.timeout_ms,
    }


def _metrics_text(batchers: Mapping[str, Batcher]) -> str:
    lines: list[str] = []

    def family(metric: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        lines.extend(f"{metric}{{{labels}}} {value:g}" for labels, value in rows)

    stats = {name: b.stats() for name, b in batchers.items()}
    outcomes = ("completed", "failed", "rejected", "timed_out", "cancelled")
    family("dlinfer_requests_total", "counter", "Requests by outcome.",
           [(f'model="{n}",outcome="{o}"', getattr(s, o))
            for n, s in stats.items() for o in outcomes])
    family("dlinfer_batches_total", "counter", "Batches run.",
           [(f'model="{n}"', s.batches) for n, s in stats.items()])
    family("dlinfer_batch_size_mean", "gauge", "Mean requests per batch since start.",
           [(f'model="{n}"', s.mean_batch_size) for n, s in stats.items()])
    family("dlinfer_queue_depth", "gauge", "Requests waiting for a batch.",
           [(f'model="{n}"', s.queue_depth) for n, s in stats.items()])
    family("dlinfer_queue_wait_seconds", "summary", "Time queued before the batch ran (recent).",
           [(f'model="{n}",quantile="{q}"', s.queue_wait_ms[f"p{round(q * 100)}"] / 1000.0)
            for n, s in stats.items() for q in (0.5, 0.9, 0.99)])
    return "\n".join(lines) + "\n"


def create_app(config: ServeConfig) -> Starlette:
    """The Starlette app; models load now, batchers start and drain with the app's lifespan."""
    names = config.resolved_names()
    classifiers = {
        name: Classifier(_model_path(arg), device=config.device, threads=config.threads,
                         session_options=batching_session_options(config.threads),
                         **serving_provider_options(config.device, config.cuda,
                                                    config.tensorrt, config.max_batch_size))
        for name, arg in zip(names, config.models, strict=True)
    }
    for name, clf in classifiers.items():
        if len(clf.model.inputs) > 1:
            # Refused now, at startup, rather than with a 4xx on every request.
            raise SpecError(
                f"cannot serve {name!r} ({clf.model.path}): it takes the inputs "
                f"{[i.name for i in clf.model.inputs]}, and a request carries images only; "
                "call dlinfer.Classifier with a dict of every input instead")
        warm_up_for_batcher(clf.model, config.max_batch_size)  # GPU: every batch size once
    batchers: dict[str, Batcher] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette):
        for name, clf in classifiers.items():
            batchers[name] = Batcher(clf, config.max_batch_size, config.max_delay_ms,
                                     config.max_queue, config.timeout_ms, name=name)
        try:
            yield
        finally:
            # uvicorn has already finished the in-flight requests; this drains the rest.
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(None, b.close) for b in batchers.values()))

    def batcher_for(name: str) -> Batcher:
        if name not in batchers:
            raise _HTTPError(404, "unknown_model",
                             f"no model named {name!r}; serving {sorted(batchers)}")
        return batchers[name]

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "models": sorted(batchers)})

    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse(
            {"models": [_metadata(n, classifiers[n], b) for n, b in batchers.items()]})

    async def show_model(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        return JSONResponse(_metadata(name, classifiers[name], batcher_for(name)))

    async def predict(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        batcher = batcher_for(name)
        top_k = _int_param(request, "top_k", 1, 1)
        timeout_ms = _int_param(request, "timeout_ms", None, 0)
        body = await _read_body(request, config.max_body_bytes)
        images = await _images_from(request, body, classifiers[name].preprocessing)
        preds = await batcher.predict_many(images, top_k=top_k, timeout_ms=timeout_ms)
        return JSONResponse({"model": name, "predictions": [p.to_dict() for p in preds]})

    async def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(_metrics_text(batchers),
                                 media_type="text/plain; version=0.0.4")

    async def on_http_error(request: Request, exc: _HTTPError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.detail)

    async def on_dlinfer_error(request: Request, exc: DlinferError) -> JSONResponse:
        for cls, status, code in _STATUS:
            if isinstance(exc, cls):
                return _error(status, code, str(exc))
        return _error(500, "error", str(exc))

    async def on_starlette_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, "not_found" if exc.status_code == 404 else "http_error",
                      exc.detail or "")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/v1/models", list_models),
            Route("/v1/models/{name}", show_model),
            Route("/v1/models/{name}/predict", predict, methods=["POST"]),
            Route("/metrics", metrics),
        ],
        exception_handlers={
            _HTTPError: on_http_error,
            DlinferError: on_dlinfer_error,
            HTTPException: on_starlette_error,
        },
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """App factory for uvicorn worker processes; the config travels in an env variable."""
    return create_app(ServeConfig(**json.loads(os.environ[_CONFIG_ENV])))


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> int:
    """Run the server until SIGINT or SIGTERM; returns 0 after a graceful shutdown."""
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    # uvicorn re-raises the signal it stopped on once it is done, to run the previous
    # handler; a no-op handler makes a completed graceful shutdown exit 0, not -15.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if workers == 1:
        app = create_app(config)
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level)).run()
        return 0
    create_app(config)  # fail here, once, on a bad model rather than in every worker
    os.environ[_CONFIG_ENV] = json.dumps(asdict(config))
    uvicorn.run("dlinfer.serving.server:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level=log_level)
    return 0
