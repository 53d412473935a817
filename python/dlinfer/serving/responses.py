"""What `dlinfer serve` answers: JSON results, and JSON errors from one mapping.

:func:`error_response` is the one place where an exception becomes an HTTP answer; every
route of the server goes through it (routes added by other adapters should too), so
each error has one status and one code however it is reached.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from ..errors import (
    BatcherClosedError,
    DecompressionBombError,
    ImageDecodeError,
    InferenceError,
    InputError,
    QueueFullError,
    RequestTimeoutError,
)

__all__ = ["ERROR_CODES", "ErrorResponse", "HTTPError", "error_response", "json_response"]

log = logging.getLogger("dlinfer.serving")

# The status nginx logs for a client that went away before the answer; never sent.
CLIENT_GONE = 499


class HTTPError(Exception):
    """An answer decided by the server itself (bad parameter, body too large, ...)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class ErrorResponse(JSONResponse):
    """``{"error": code, "detail": message}``; ``.code`` is what the metrics count."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__({"error": code, "detail": detail}, status_code=status)
        self.code = code


# dlinfer's exceptions -> HTTP, most specific first.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (QueueFullError, 429, "queue_full"),
    (RequestTimeoutError, 504, "timeout"),
    (DecompressionBombError, 413, "image_too_large"),
    (ImageDecodeError, 400, "not_an_image"),
    (InputError, 422, "bad_input"),
    (BatcherClosedError, 503, "shutting_down"),
    (InferenceError, 500, "inference_failed"),
]

# Every code the server answers with, and its status (docs/serving.md lists them; a test
# checks the list against the page).
ERROR_CODES: dict[str, int] = {
    "bad_json": 400, "bad_parameter": 400, "bad_request": 400, "not_an_image": 400,
    "not_found": 404, "unknown_model": 404, "method_not_allowed": 405, "body_timeout": 408,
    "image_too_large": 413, "payload_too_large": 413, "bad_input": 422, "queue_full": 429,
    "inference_failed": 500, "internal": 500, "non_finite_output": 500,
    "shutting_down": 503, "timeout": 504,
}


def error_response(exc: BaseException) -> ErrorResponse:
    """The JSON answer for ``exc``; server-side failures are logged here, once, with the
    traceback, and a client that went away is one log line."""
    if isinstance(exc, HTTPError):
        return ErrorResponse(exc.status, exc.code, exc.detail)
    if isinstance(exc, ClientDisconnect):
        log.warning("client disconnected before sending the whole request body")
        return ErrorResponse(CLIENT_GONE, "client_disconnected", "the client went away")
    if isinstance(exc, HTTPException):  # Starlette's routing and form parsing
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return ErrorResponse(exc.status_code, code, exc.detail or "")
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            if status >= 500 and status != 503:
                log.error("%s: %s", code, exc, exc_info=exc)
            return ErrorResponse(status, code, str(exc))
    log.error("internal error while answering a request", exc_info=exc)
    return ErrorResponse(500, "internal", f"internal server error ({type(exc).__name__}); "
                                          "the server log has the traceback")


def json_response(payload: Any) -> JSONResponse:
    """A 200 JSON answer; a NaN or infinity in it is an error, never invalid JSON."""
    try:
        return JSONResponse(payload)
    except ValueError:  # json.dumps(allow_nan=False): the model's output holds NaN or inf
        log.warning("non_finite_output: the model's output holds NaN or infinity")
        raise HTTPError(500, "non_finite_output",
                        "the model's output holds NaN or infinity, which JSON cannot carry; "
                        "the model or its input is broken") from None
