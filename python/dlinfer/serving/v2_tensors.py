"""``dlinfer serve`` for ONNX files that are not classifiers: tensors in, tensors out.

A file without a dlinfer spec (or whose spec is not a classification) is served as a
:class:`~dlinfer.Model` on the KServe v2 route ``POST /v2/models/{name}/infer``: the
request carries every input by name, in any datatype the model takes (``INT64`` with
shape ``[]`` for a 0-d sample rate, ``FP32`` ``[2, N, 128]`` for a recurrent state),
and the answer carries every output as :meth:`Model.run` returns it.

Requests reach the model through its :class:`~dlinfer.Batcher`, which groups them only
along known batch axes (:mod:`dlinfer.runtime.batch_axis`): a model whose inputs are all
batch-first sends each row of a request as a sample, so concurrent requests share runs;
any other model (a fixed batch, state, scalars, an axis 0 that may be time) runs each
request whole and alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from starlette.responses import Response

from ..runtime.batch_axis import batch_axes
from ..runtime.model import Model
from ..tasks.classifier import Classifier
from .batcher import Batcher
from .responses import HTTPError
from .v2_request import json_numbers, shape_count

__all__ = ["TENSOR_DATATYPES", "infer_tensors", "served_model", "tensor_metadata"]

# The protocol's datatypes for the NumPy dtypes a tensor model's inputs and outputs have.
TENSOR_DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "INT8": np.int8,
                    "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
                    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_NAMES = {np.dtype(v): k for k, v in TENSOR_DATATYPES.items()}
_CLASSIFIER_TASKS = ("classification", "binary_classification")


def served_model(model: Model) -> Classifier | Model:
    """A classifier's file is served as a :class:`~dlinfer.Classifier` (images in); any
    other file, with no spec or another task, as its :class:`~dlinfer.Model`."""
    if model.spec is not None and model.spec.task in _CLASSIFIER_TASKS:
        return Classifier(model)
    return model


def _bad(detail: str) -> HTTPError:
    return HTTPError(400, "bad_request", detail)


def _datatype(dtype: np.dtype) -> str:
    return _NAMES.get(np.dtype(dtype), "BYTES")


def tensor_metadata(name: str, model: Model) -> dict[str, Any]:
    """The v2 model metadata: every input and output, -1 for a dynamic size."""
    axes = batch_axes(model)

    def tensors(infos: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": _datatype(t.dtype),
                 "shape": [-1 if d is None else d for d in t.shape]} for t in infos]

    return {"name": name, "versions": ["1"], "platform": "dlinfer",
            "inputs": tensors(model.inputs), "outputs": tensors(model.outputs),
            "parameters": {"batch_axes": {b.input: b.axis for b in axes.values()}}}


def _feed(header: Mapping[str, Any], binary: bytes, model: Model) -> dict[str, np.ndarray]:
    """Each input's array from its JSON ``data`` or its slice of the binary data."""
    infos = {t.name: t for t in model.inputs}
    given = header.get("inputs") or []
    names = [t.get("name") for t in given]
    if sorted(names) != sorted(infos):
        raise _bad(f"the request must carry each of the inputs {list(infos)} once; got "
                   f"{names}")
    feed, at = {}, 0
    for tensor in given:
        name, datatype = tensor["name"], tensor.get("datatype")
        want = _datatype(infos[name].dtype)
        if datatype != want:
            raise _bad(f"input {name!r} takes {want}, got {datatype!r}")
        shape = tensor.get("shape")
        count = shape_count(shape, f"input {name!r}")
        dtype = np.dtype(TENSOR_DATATYPES[datatype]).newbyteorder("<")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if size != count * dtype.itemsize or at + size > len(binary):
                raise _bad(f"input {name!r}: shape {shape} of {datatype} needs "
                           f"{count * dtype.itemsize} bytes, got binary_data_size {size} "
                           f"with {len(binary) - at} bytes left")
            values = np.frombuffer(binary, dtype, count, at).astype(dtype.newbyteorder("="))
            at += size
        elif "data" in tensor:
            values = json_numbers(tensor["data"], f"input {name!r}")
            if values.size != count:
                raise _bad(f"input {name!r}: shape {shape} holds {count} values, got "
                           f"{values.size}")
            values = values.astype(dtype.newbyteorder("="))
        else:
            raise _bad(f"input {name!r} has neither data nor binary_data_size")
        feed[name] = values.reshape(shape)
    if at != len(binary):
        raise _bad(f"{len(binary) - at} bytes of binary data follow the inputs unread")
    return feed


async def _run(model: Model, batcher: Batcher, feed: dict[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
    if batcher.max_batch_size > 1:  # batch-first: one sample per row, grouped by the Batcher
        rows = {len(v) for v in feed.values() if v.ndim}
        if len(rows) != 1:
            raise _bad(f"the inputs' batch sizes differ: "
                       f"{ {k: v.shape[:1] for k, v in feed.items()} }")
        n = rows.pop()
        if n == 0:
            raise _bad("the request's batch is empty")
        results = await batcher.predict_many([{k: v[i] for k, v in feed.items()}
                                              for i in range(n)])
        names = [o.name for o in model.outputs]
        parts = [r if isinstance(r, dict) else {names[0]: r} for r in results]
        return {o: np.stack([p[o] for p in parts]) for o in names}
    out = await batcher.predict(feed)  # whole, alone: never grouped
    return out if isinstance(out, dict) else {model.outputs[0].name: out}


async def infer_tensors(name: str, model: Model, batcher: Batcher, header: Mapping[str, Any],
                        binary: bytes) -> Response:
    """Answer a v2 inference request for a tensor model (see the module doc)."""
    feed = _feed(header, binary, model)
    outputs = await _run(model, batcher, feed)
    params = header.get("parameters") or {}
    default_binary = bool(params.get("binary_data_output", False))
    wanted = header.get("outputs")
    if wanted is None:
        wanted = [{"name": n} for n in outputs]
    reply: dict[str, Any] = {"model_name": name, "model_version": "1", "outputs": []}
    if "id" in header:
        reply["id"] = header["id"]
    chunks = []
    for out in wanted:
        if out["name"] not in outputs:
            raise _bad(f"unexpected output {out['name']!r}; the outputs are {list(outputs)}")
        tensor = np.asarray(outputs[out["name"]])
        entry: dict[str, Any] = {"name": out["name"], "datatype": _datatype(tensor.dtype),
                                 "shape": list(tensor.shape)}
        if (out.get("parameters") or {}).get("binary_data", default_binary):
            raw = np.ascontiguousarray(tensor, tensor.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
                raise HTTPError(500, "non_finite_output",
                                f"output {out['name']!r} holds NaN or infinity, which JSON "
                                "cannot carry; ask for it as binary data")
            entry["data"] = tensor.reshape(-1).tolist()
        reply["outputs"].append(entry)
    head = json.dumps(reply).encode()
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})
