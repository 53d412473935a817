"""A KServe v2 / Open Inference Protocol inference request, checked field by field before
any of it is used.

A request is a JSON header, optionally followed by binary tensor data
(``Inference-Header-Content-Length`` says where the header ends).  :func:`parse_request`
splits and parses it (JSON within a depth limit, :mod:`dlinfer.json_limits`) and checks
the type of every field the protocol defines, so that a malformed request is a 400 with
the protocol's ``{"error": message}`` rather than an ``AttributeError`` deep in the
route:

- the request: ``id`` a string, ``parameters`` an object, ``inputs`` a list of objects,
  ``outputs`` (optional) a list of objects;
- each input: ``name`` and ``datatype`` strings, ``shape`` a list of integers >= 0 whose
  product fits int64 (computed exactly, so ``[2**32, 2**32, 1, 1]`` cannot wrap to 0),
  ``parameters`` an object with ``binary_data_size`` an integer >= 0, ``data`` a list;
- each output: ``name`` a string, ``parameters`` an object with ``binary_data`` a
  boolean and ``classification`` an integer >= 0;
- ``parameters.binary_data_output`` of the request a boolean.

Which names, datatypes and ranks a model takes is the route's business
(:mod:`.kserve`); this module knows only the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..json_limits import loads_limited
from .responses import HTTPError

__all__ = ["MAX_INT64", "V2RequestError", "check_request", "json_numbers", "parse_request",
           "shape_count"]

MAX_INT64 = 2**63 - 1
# The protocol's shapes are int64; a length header longer than this is not a length.
_MAX_LENGTH_DIGITS = 19


class V2RequestError(HTTPError):
    """A request that breaks the protocol: 400 ``bad_request``."""

    def __init__(self, detail: str) -> None:
        super().__init__(400, "bad_request", detail)


def parse_request(header_length: str | None, body: bytes) -> tuple[dict[str, Any], bytes]:
    """The checked JSON header of a request and the binary tensor data after it;
    ``header_length`` is the ``Inference-Header-Content-Length`` header, if sent."""
    if header_length is None:
        head, binary = body, b""
    else:
        # str.isdigit() also takes "²" and "٣", which int() refuses or reads differently.
        digits = header_length.strip()
        if (not digits or len(digits) > _MAX_LENGTH_DIGITS
                or not all("0" <= c <= "9" for c in digits) or int(digits) > len(body)):
            raise V2RequestError(f"Inference-Header-Content-Length {header_length!r} is not a "
                                 f"length within the body of {len(body)} bytes")
        head, binary = body[: int(digits)], body[int(digits):]
    # The body's own limit (--max-body-bytes) bounds the size; the depth is bounded here.
    header = loads_limited(head, what="the inference request", error=V2RequestError,
                           max_bytes=max(len(head), 1))
    if not isinstance(header, dict):
        raise V2RequestError("the inference request must be a JSON object")
    check_request(header)
    return header, binary


def check_request(header: Mapping[str, Any]) -> None:
    """Refuse (:class:`V2RequestError`) any field of the protocol with the wrong type."""
    _field(header, "id", str, "the request", "a string")
    params = _parameters(header, "the request")
    _field(params, "binary_data_output", bool, "the request's parameters", "true or false")
    inputs = header.get("inputs")
    if not _list_of_objects(inputs):
        raise V2RequestError(f"inputs must be a list of objects, got {_show(inputs)}")
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        for key in ("name", "datatype"):
            if not isinstance(tensor.get(key), str):
                raise V2RequestError(f"{where}: {key} must be a string, got "
                                     f"{_show(tensor.get(key))}")
        where = f"input {tensor['name']!r}"
        shape_count(tensor.get("shape"), where)
        tensor_params = _parameters(tensor, where)
        size = tensor_params.get("binary_data_size")
        if size is not None and not _count(size):
            raise V2RequestError(f"{where}: binary_data_size must be an integer >= 0, "
                                 f"got {_show(size)}")
        _field(tensor, "data", list, where, "a list")
    outputs = header.get("outputs")
    if outputs is None:
        return
    if not _list_of_objects(outputs):
        raise V2RequestError(f"outputs must be a list of objects, got {_show(outputs)}")
    for i, out in enumerate(outputs):
        if not isinstance(out.get("name"), str):
            raise V2RequestError(f"outputs[{i}]: name must be a string, got "
                                 f"{_show(out.get('name'))}")
        where = f"output {out['name']!r}"
        out_params = _parameters(out, where)
        _field(out_params, "binary_data", bool, where, "true or false")
        classes = out_params.get("classification")
        if classes is not None and not _count(classes):
            raise V2RequestError(f"{where}: classification must be a count >= 0, "
                                 f"got {_show(classes)}")


def shape_count(shape: Any, where: str) -> int:
    """The number of elements of ``shape``: a list of integers >= 0 whose product (and
    that of its non-zero sizes, which NumPy also needs) fits int64."""
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise V2RequestError(f"{where}: shape must be a list of integers >= 0, "
                             f"got {_show(shape)}")
    if math.prod(max(d, 1) for d in shape) > MAX_INT64:
        raise V2RequestError(f"{where}: shape {shape} holds more than 2**63 - 1 elements")
    return math.prod(shape)


def json_numbers(data: Any, where: str) -> np.ndarray:
    """A tensor's JSON ``data`` (a nested list of numbers, as the protocol writes it),
    flattened; strings, booleans, nulls and ragged lists are refused."""
    try:
        values = np.asarray(data)
    except (TypeError, ValueError):  # ragged
        raise V2RequestError(f"{where}: data must be a (nested) list of numbers") from None
    if values.size and values.dtype.kind not in "iuf":
        raise V2RequestError(f"{where}: data must be a (nested) list of numbers")
    return values.reshape(-1)


def _field(obj: Mapping[str, Any], key: str, kind: type, where: str, what: str) -> None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, kind)
                              or (kind is not bool and isinstance(value, bool))):
        raise V2RequestError(f"{where}: {key} must be {what}, got {_show(value)}")


def _parameters(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise V2RequestError(f"{where}: parameters must be an object, got {_show(params)}")
    return params


def _list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _count(value: Any) -> bool:
    """An integer >= 0 within int64 (JSON true is not a count)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and 0 <= value <= MAX_INT64)


def _show(value: Any) -> str:
    """``value`` for an error message, cut short (a hostile one may be megabytes)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
