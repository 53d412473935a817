"""``POST /v1/models/{name}/explain``: Grad-CAM, saliency or occlusion heatmaps over HTTP.

The body is what ``/predict`` takes (image bytes, multipart files or JSON arrays), read
and decoded under the same limits (``max_body_bytes``, ``max_image_bytes``, at most
``max_batch_size`` images); errors are the same JSON codes, and the server's
``observed`` wrapper counts each request in the same metrics.  Query parameters:
``method`` (gradcam | saliency | occlusion), ``layer``, ``target`` (a class index or
label), ``timeout_ms``.  ``Accept: image/png`` answers one image's heatmap drawn over it;
otherwise JSON numbers (:meth:`dlinfer.explain.Explanation.to_dict`).

An explanation costs a forward and a backward pass (occlusion: dozens of forward
passes) outside the batchers, so explanations run one at a time on their own thread;
at most ``max_queue`` requests wait for it (429 ``queue_full`` past that), each at
most ``timeout_ms`` (504 ``timeout``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from ..checks import MAX_WAIT_MS
from ..errors import InputError, QueueFullError, RequestTimeoutError
from ..tasks.classifier import Classifier
from .responses import HTTPError, json_response

__all__ = ["explain_routes"]

Handler = Callable[[Request], Awaitable[Response]]
ROUTE = "/v1/models/{name}/explain"


class _Admission:
    """At most ``limit`` explain requests admitted (running or waiting) at a time."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.count >= self.limit:
                raise QueueFullError(f"{self.count} explain requests are already waiting "
                                     f"(max_queue {self.limit}); retry later")
            self.count += 1

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


def _method(request: Request) -> str:
    from ..explain.cam import METHODS

    method = request.query_params.get("method", "gradcam")
    if method not in METHODS:
        raise HTTPError(400, "bad_parameter", f"method must be one of {list(METHODS)}, got "
                        f"{method!r}")
    return method


def _target(request: Request) -> int | str | None:
    text = request.query_params.get("target")
    if text is None:
        return None
    return int(text) if text.isdigit() else text


def _wants_png(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == "image/png" for part in accept.split(","))


def _picture(images: list[Any], explanation: Any) -> bytes:
    """The heatmap over the decoded image, or alone for a float array (no pixels)."""
    from ..explain.render import colorize, overlay, png_bytes

    item = images[0]
    if isinstance(item, tuple):
        return png_bytes(overlay(item[0], explanation.heatmap, item[1]))
    arr = np.asarray(item)
    if arr.dtype == np.uint8 and arr.shape[:2] == explanation.heatmap.shape:
        return png_bytes(overlay(arr, explanation.heatmap))
    from PIL import Image

    return png_bytes(Image.fromarray(colorize(explanation.heatmap)))


def explain_routes(classifiers: Mapping[str, Any], batcher_for: Callable[[str], Any],
                   bodies: Any, pool: Executor, config: Any) -> list[tuple[str, Handler, str]]:
    """``(path, handler, method)`` for the server to register with its ``observed``."""
    from .server import query_param
    from .uploads import images_from

    admission = _Admission(config.max_queue)
    runner = ThreadPoolExecutor(1, thread_name_prefix="dlinfer-explain")

    async def explain(request: Request) -> Response:
        name = request.path_params["name"]
        batcher_for(name)  # 404 for an unknown model, as /predict
        clf = classifiers[name]
        if not isinstance(clf, Classifier):
            raise HTTPError(400, "bad_request", f"model {name!r} is not a classifier; "
                            "explanations are for image classifiers")
        method, layer, target = _method(request), request.query_params.get("layer"), \
            _target(request)
        timeout_ms = query_param(request, "timeout_ms", float, 0, MAX_WAIT_MS,
                                 default=config.timeout_ms)
        png = _wants_png(request)
        body = await bodies.read(request)
        images = await images_from(request, body, clf.preprocessing, pool,
                                   config.max_image_bytes)
        if len(images) > config.max_batch_size:
            raise InputError(f"{len(images)} images in one explain request; at most "
                             f"max_batch_size = {config.max_batch_size}")
        if png and len(images) != 1:
            raise HTTPError(400, "bad_request", f"a PNG answer draws one image, the request "
                            f"has {len(images)}; send one, or ask for JSON")
        admission.enter()
        # The slot is freed when the work ends (or is cancelled before it starts), not
        # when a client stops waiting: a timed-out explanation still holds the thread.
        work = runner.submit(clf.explain, images, method=method, layer=layer, target=target)
        work.add_done_callback(lambda _: admission.leave())
        timeout = None if timeout_ms is None else timeout_ms / 1000.0
        try:
            results = await asyncio.wait_for(asyncio.wrap_future(work), timeout)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"the explanation took longer than timeout_ms "
                                      f"{timeout_ms:g}") from None
        if png:
            return Response(_picture(images, results[0]), media_type="image/png")
        return json_response({"model": name, "method": method,
                              "explanations": [e.to_dict() for e in results]})

    return [(ROUTE, explain, "POST")]
