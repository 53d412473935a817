"""The KServe v2 / Open Inference Protocol on ``dlinfer serve``, beside its own routes::

    GET  /v2                                     server metadata
    GET  /v2/health/live, /v2/health/ready       liveness, readiness
    GET  /v2/models/{name}[/versions/1]          model metadata (tensors, datatypes, shapes)
    GET  /v2/models/{name}[/versions/1]/ready    model readiness
    POST /v2/models/{name}[/versions/1]/infer    tensors in, tensors out

so that ``tritonclient.http`` and KServe's clients call dlinfer as they would call Triton.
The input tensor, named as the model's input, carries images: ``UINT8`` pixels
``[N, H, W, C]`` (or ``[N, H, W]``) of any size, ``FP32`` pixels already scaled by the
spec's scale at the model's size, or ``BYTES`` ``[N]`` holding encoded image files.  The
output, named as the model's output, is ``FP32`` probabilities ``[N, labels]``; with the
classification extension (``parameters: {"classification": k}``) it is ``BYTES``
``[N, k]`` of ``"probability:index:label"``.  The binary tensor data extension is
understood both ways.  Every image goes through the model's Batcher, like
``/v1/models/{name}/predict``; errors are the protocol's ``{"error": message}`` with the
status ``dlinfer serve`` gives the same error.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from ..preprocessing.decode import decode_bytes
from ..runtime.model import Model
from ..tasks.classifier import Classifier
from .batcher import Batcher
from .responses import ErrorResponse, HTTPError, error_response
from .uploads import BodyReader
from .v2_request import json_numbers, parse_request
from .v2_tensors import infer_tensors, tensor_metadata

__all__ = ["V2_DATATYPES", "v2_routes"]

# The protocol's datatypes for the NumPy dtypes a response can carry.
V2_DATATYPES = {"UINT8": np.uint8, "FP32": np.float32, "BYTES": np.object_}
_HEADER_LENGTH = "inference-header-content-length"
_VERSION = "1"

Handler = Callable[[Request], Awaitable[Response]]


class V2ErrorResponse(ErrorResponse):
    """The protocol's ``{"error": message}``; ``.code`` still names dlinfer's error code."""

    def __init__(self, exc: BaseException) -> None:
        mapped = error_response(exc)  # the one mapping from errors to statuses and codes
        detail = json.loads(mapped.body)["detail"]
        JSONResponse.__init__(self, {"error": detail}, status_code=mapped.status_code)
        self.code = mapped.code


def _bad(detail: str) -> HTTPError:
    return HTTPError(400, "bad_request", detail)


def v2_routes(classifiers: Mapping[str, Classifier], batcher_for: Callable[[str], Batcher],
              bodies: BodyReader, pool: Executor) -> list[tuple[str, Handler, str]]:
    """``(path, handler, method)`` for each route; the server registers them with its own."""

    def protocol(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return V2ErrorResponse(exc)
        return endpoint

    def model(request: Request) -> tuple[str, Classifier, Batcher]:
        name = request.path_params["name"]
        batcher = batcher_for(name)  # 404 for an unknown model
        version = request.path_params.get("version", _VERSION)
        if version != _VERSION:
            raise HTTPError(404, "unknown_model",
                            f"model {name!r} has only version {_VERSION}, not {version!r}")
        return name, classifiers[name], batcher

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "dlinfer", "version": __version__, "extensions": [
            "classification", "binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        # The batchers start with the app's lifespan: before that nothing can be served.
        if not all(_has_batcher(batcher_for, n) for n in classifiers):
            raise HTTPError(503, "shutting_down", "the models are not loaded yet")
        return JSONResponse({"ready": True})

    async def model_metadata(request: Request) -> Response:
        name, clf, _ = model(request)
        if isinstance(clf, Model):  # a file that is not a classifier: tensors in and out
            return JSONResponse(tensor_metadata(name, clf))
        return JSONResponse(_metadata(name, clf))

    async def model_ready(request: Request) -> Response:
        name, _, _ = model(request)
        return JSONResponse({"name": name, "ready": True})

    async def infer(request: Request) -> Response:
        name, clf, batcher = model(request)
        body = await bodies.read(request)
        # Off the event loop, as /predict's JSON: 10 MB of "[]" takes json.loads seconds.
        header, binary = await asyncio.get_running_loop().run_in_executor(
            pool, parse_request, request.headers.get(_HEADER_LENGTH), body)
        if isinstance(clf, Model):
            return await infer_tensors(name, clf, batcher, header, binary)
        images = await _images(header, binary, clf, pool)
        wanted = _requested_outputs(header, clf)
        labels = len(clf.labels)
        preds = await batcher.predict_many(images, top_k=labels)
        proba = np.zeros((len(preds), labels), np.float32)
        for row, pred in enumerate(preds):
            for c in pred.top:
                proba[row, c.index] = c.probability
        outputs = []
        for out_name, binary_out, classes in wanted:
            if classes:
                # The classification extension: "probability:index:label", best first.
                k = min(classes, labels)
                tensor = np.array([[f"{c.probability:f}:{c.index}:{c.label}" for c in p.top[:k]]
                                   for p in preds], dtype=np.object_)
            else:
                tensor = proba
            outputs.append((out_name, tensor, binary_out))
        reply: dict[str, Any] = {"model_name": name, "model_version": _VERSION}
        if "id" in header:
            reply["id"] = header["id"]
        return _encode_response(reply, outputs)

    routes: list[tuple[str, Handler, str]] = [
        ("/v2", server_metadata, "GET"),
        ("/v2/health/live", live, "GET"),
        ("/v2/health/ready", ready, "GET"),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [(prefix, model_metadata, "GET"), (prefix + "/ready", model_ready, "GET"),
                   (prefix + "/infer", infer, "POST")]
    return [(path, protocol(handler), method) for path, handler, method in routes]


def _has_batcher(batcher_for: Callable[[str], Batcher], name: str) -> bool:
    try:
        batcher_for(name)
    except HTTPError:
        return False
    return True


def _metadata(name: str, clf: Classifier) -> dict[str, Any]:
    spec = clf.preprocessing
    height, width = spec.size if spec is not None and spec.size else (-1, -1)
    channels = spec.channels if spec is not None else -1
    return {
        "name": name,
        "versions": [_VERSION],
        "platform": "dlinfer",
        "inputs": [{"name": clf.image_input or clf.model.inputs[0].name, "datatype": "UINT8",
                    "shape": [-1, height, width, channels]}],
        "outputs": [{"name": clf.output.name, "datatype": "FP32",
                     "shape": [-1, len(clf.labels)]}],
        "parameters": {"labels": list(clf.labels), "also_accepts": ["FP32", "BYTES"]},
    }


async def _images(header: dict[str, Any], binary: bytes, clf: Classifier,
                  pool: Executor) -> list[Any]:
    """One image per row of the request's one input tensor."""
    inputs = header.get("inputs")
    expected = clf.image_input or clf.model.inputs[0].name
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"the request must have exactly one input, {expected!r}")
    tensor = inputs[0]
    if tensor.get("name") != expected:
        raise _bad(f"unexpected input {tensor.get('name')!r}; the model's input is {expected!r}")
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in V2_DATATYPES:
        raise _bad(f"input {expected!r}: datatype {datatype!r} is not one of "
                   f"{sorted(V2_DATATYPES)}")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise _bad(f"input {expected!r}: shape must be a non-empty list of sizes >= 0, "
                   f"got {shape!r}")
    rank_ok = len(shape) in (1, 2) if datatype == "BYTES" else len(shape) in (3, 4)
    if not rank_ok or (datatype == "BYTES" and len(shape) == 2 and shape[1] != 1):
        want = "[N] or [N, 1]" if datatype == "BYTES" else "[N, H, W] or [N, H, W, C]"
        raise _bad(f"input {expected!r}: a {datatype} tensor of images has shape {want}, "
                   f"got {shape}")
    if shape[0] == 0:
        raise _bad(f"input {expected!r}: the batch is empty")
    array = _tensor(tensor, datatype, shape, binary)
    if datatype != "BYTES":
        return list(array)
    spec = clf.preprocessing
    loop = asyncio.get_running_loop()
    decoded = await asyncio.gather(*(
        loop.run_in_executor(pool, decode_bytes, bytes(data), f"{expected}[{i}]",
                             spec.draft_target, spec.max_image_bytes)
        for i, data in enumerate(array.reshape(-1))))
    return [pixels for pixels, _ in decoded]


def _tensor(tensor: dict[str, Any], datatype: str, shape: list[int], binary: bytes) -> np.ndarray:
    """The input's values as an array of ``shape``, from JSON ``data`` or the binary part."""
    name, count = tensor["name"], math.prod(shape)
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise _bad(f"input {name!r}: binary_data_size {size!r} is past the "
                       f"{len(binary)} bytes of binary data")
        if size != len(binary):
            raise _bad(f"input {name!r}: binary_data_size {size} but {len(binary)} bytes "
                       "of binary data follow the header")
        if datatype == "BYTES":
            values = _unpack_bytes(binary, name)
        else:
            dtype = np.dtype(V2_DATATYPES[datatype]).newbyteorder("<")
            if size != count * dtype.itemsize:
                raise _bad(f"input {name!r}: shape {shape} of {datatype} needs "
                           f"{count * dtype.itemsize} bytes, got {size}")
            values = np.frombuffer(binary, dtype).astype(dtype.newbyteorder("="))
    else:
        if "data" not in tensor:
            raise _bad(f"input {name!r} has neither data nor binary_data_size")
        values = _json_values(tensor["data"], datatype, name)
    if values.size != count:
        raise _bad(f"input {name!r}: shape {shape} holds {count} values, got {values.size}")
    return values.reshape(shape)


def _json_values(data: Any, datatype: str, name: str) -> np.ndarray:
    if datatype == "BYTES":
        # JSON can carry only text: BYTES of image files need the binary extension.
        raise _bad(f"input {name!r}: BYTES images must be sent as binary data "
                   "(binary_data_size), not JSON")
    values = json_numbers(data, f"input {name!r}").astype(np.float64)
    if datatype == "UINT8":
        if values.size and not (np.all(values == np.round(values))
                                and values.min() >= 0 and values.max() <= 255):
            raise _bad(f"input {name!r}: UINT8 data must be integers in [0, 255]")
        return values.astype(np.uint8)
    return values.astype(np.float32)


def _unpack_bytes(binary: bytes, name: str) -> np.ndarray:
    """BYTES elements as the protocol packs them: a 4-byte little-endian length, then data."""
    items, at = [], 0
    while at < len(binary):
        if at + 4 > len(binary):
            raise _bad(f"input {name!r}: BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", binary, at)
        if at + 4 + n > len(binary):
            raise _bad(f"input {name!r}: a BYTES element of {n} bytes runs past the data")
        items.append(binary[at + 4: at + 4 + n])
        at += 4 + n
    out = np.empty(len(items), np.object_)
    out[:] = items
    return out


def _requested_outputs(header: dict[str, Any], clf: Classifier) -> list[tuple[str, bool, int]]:
    """``(name, binary, classification count)`` per requested output."""
    name = clf.output.name
    params = header.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False))
    requested = header.get("outputs")
    if requested is None:
        return [(name, binary_default, 0)]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise _bad("outputs must be a list of objects")
    wanted = []
    for out in requested:
        if out.get("name") != name:
            raise _bad(f"unexpected output {out.get('name')!r}; the model's output is {name!r}")
        p = out.get("parameters") or {}
        classes = p.get("classification", 0)
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
            raise _bad(f"output {name!r}: classification must be a count >= 0, got {classes!r}")
        wanted.append((name, bool(p.get("binary_data", binary_default)), classes))
    return wanted


def _encode_response(reply: dict[str, Any],
                     outputs: list[tuple[str, np.ndarray, bool]]) -> Response:
    chunks: list[bytes] = []
    reply["outputs"] = []
    for name, tensor, binary in outputs:
        datatype = "BYTES" if tensor.dtype == np.object_ else "FP32"
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(tensor.shape)}
        if binary:
            if datatype == "BYTES":
                raw = b"".join(struct.pack("<I", len(s.encode())) + s.encode()
                               for s in tensor.reshape(-1))
            else:
                raw = np.ascontiguousarray(tensor, "<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor.reshape(-1).tolist()
        reply["outputs"].append(entry)
    head = json.dumps(reply, allow_nan=False).encode()
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})
