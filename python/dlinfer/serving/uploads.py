"""Request bodies in, images out: size limit, time limit, and decoding off the event loop.

A body is read under ``max_body_bytes`` and a deadline (``body_timeout_s``), so a client
that stalls or trickles its upload is cut with a 408; once shutdown begins, bodies still
arriving get a short grace and then a 503, so SIGTERM is never held up by a client.
Decoding (images through the shared decoder and its ``max_image_bytes`` budget, JSON
pixels too) runs in a bounded thread pool: the loop stays free for other requests, and
at most ``decode_threads`` images are held decoded at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..errors import ImageDecodeError
from ..preprocessing.decode import decode_bytes
from ..preprocessing.transform import PreprocessSpec
from .responses import HTTPError

__all__ = ["BodyReader", "images_from"]

# How much of a body over the size limit is read and dropped before answering 413.
_DRAIN_BYTES = 1024 * 1024
# Once shutdown begins, how long a body still arriving may take to finish.
SHUTDOWN_GRACE_S = 1.0


class BodyReader:
    """Reads request bodies under a size limit and a deadline; cuts them all at shutdown."""

    def __init__(self, max_bytes: int, timeout_s: float) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.shutting_down = False
        self._reading: dict[asyncio.Task, _Deadline] = {}

    def begin_shutdown(self) -> None:
        """Give every body still arriving a short grace (call on the event loop)."""
        self.shutting_down = True
        for deadline in list(self._reading.values()):
            deadline.shorten(SHUTDOWN_GRACE_S)

    async def read(self, request: Request) -> bytes:
        task = asyncio.current_task()
        assert task is not None
        deadline = _Deadline(task, SHUTDOWN_GRACE_S if self.shutting_down else self.timeout_s)
        self._reading[task] = deadline
        try:
            return await _read_limited(request, self.max_bytes)
        except asyncio.CancelledError:
            if deadline.fired is None:
                raise  # cancelled by someone else (uvicorn's own shutdown timeout)
            if hasattr(task, "uncancel"):
                task.uncancel()  # our cancel was handled: the task goes on to answer
            if deadline.fired == "shutdown" or self.shutting_down:
                raise HTTPError(503, "shutting_down", "the server is stopping and the request "
                                "body did not arrive in time") from None
            raise HTTPError(408, "body_timeout", f"the request body did not arrive within "
                            f"{self.timeout_s:g} s (--body-timeout-s)") from None
        finally:
            deadline.cancel()
            self._reading.pop(task, None)


class _Deadline:
    """Cancels a task when its time is up; ``fired`` says why."""

    def __init__(self, task: asyncio.Task, seconds: float) -> None:
        self.task = task
        self.fired: str | None = None
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(seconds, self._fire, "timeout")

    def _fire(self, why: str) -> None:
        self.fired = why
        self.task.cancel()

    def shorten(self, seconds: float) -> None:
        if self._handle.when() > self._loop.time() + seconds:
            self._handle.cancel()
            self._handle = self._loop.call_later(seconds, self._fire, "shutdown")

    def cancel(self) -> None:
        self._handle.cancel()


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = declared is not None and declared.isdigit() and int(declared) > limit
    if too_big and int(declared) > limit + _DRAIN_BYTES:
        raise HTTPError(413, "payload_too_large",
                        f"body of {declared} bytes is over the limit of {limit} bytes "
                        "(--max-body-bytes)")
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
        raise HTTPError(413, "payload_too_large",
                        f"body of {declared or 'at least ' + str(size)} bytes is over the "
                        f"limit of {limit} bytes (--max-body-bytes)")
    return b"".join(chunks)


async def images_from(request: Request, body: bytes, spec: PreprocessSpec | None,
                      pool: Executor, max_image_bytes: int | None = None) -> list[Any]:
    """The images of a request body: JSON pixels, multipart files or one raw image file,
    decoded in ``pool`` under ``max_image_bytes`` (None: the model's budget)."""
    loop = asyncio.get_running_loop()

    def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return loop.run_in_executor(pool, fn, *args)

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return await off_loop(_json_images, body)
    if spec is None:
        raise HTTPError(422, "bad_input",
                        "this model takes token ids, not images; send them as JSON")
    # The model's size lets Pillow draft-decode a large JPEG, as for files.
    target, budget = spec.draft_target, max_image_bytes or spec.max_image_bytes
    if ctype == "multipart/form-data":
        files = await _multipart_files(request, body)
        if not files:
            raise HTTPError(400, "not_an_image", "multipart body has no file parts")
        decoded = await asyncio.gather(
            *(off_loop(decode_bytes, data, name, target, budget) for name, data in files))
        return [pixels for pixels, _ in decoded]
    if not body:
        raise ImageDecodeError("empty body; send image bytes, multipart files or JSON")
    return [(await off_loop(decode_bytes, body, "body", target, budget))[0]]


async def _multipart_files(request: Request, body: bytes) -> list[tuple[str, bytes]]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    try:
        return [(v.filename or k, await v.read()) for k, v in form.multi_items()
                if isinstance(v, UploadFile)]
    finally:
        await form.close()


def _json_images(body: bytes) -> list[np.ndarray]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, not UTF-8, nested too deep
        reason = ("nested too deeply" if isinstance(exc, RecursionError)
                  else "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc))
        raise HTTPError(400, "bad_json", f"body is not valid JSON: {reason}") from None
    if isinstance(payload, dict) and "image" in payload:
        raw = [payload["image"]]
    elif isinstance(payload, dict) and isinstance(payload.get("images"), list):
        raw = payload["images"]
    else:
        raise HTTPError(400, "bad_json",
                        'JSON body must be {"image": pixels} or {"images": [pixels, ...]}')
    images = []
    for i, item in enumerate(raw):
        try:
            arr = np.asarray(item)
        except (ValueError, RecursionError) as exc:  # ragged or absurdly deep nested lists
            raise HTTPError(422, "bad_input",
                            f"image {i}: not a rectangular array ({exc})") from None
        if arr.dtype.kind in "iu":
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise HTTPError(422, "bad_input",
                                f"image {i}: integer pixels must be in [0, 255]")
            arr = arr.astype(np.uint8)
        elif arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                raise HTTPError(422, "bad_input", f"image {i}: pixels must be finite")
            arr = arr.astype(np.float32)
        else:
            raise HTTPError(422, "bad_input",
                            f"image {i}: pixels must be numbers, got {arr.dtype}")
        images.append(arr)
    if not images:
        raise HTTPError(422, "bad_input", "no images in the request")
    return images
