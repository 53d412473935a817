"""What a backend other than onnxruntime needs from an ONNX file without parsing its graph:
the metadata (``metadata_props``) and the declared names of the graph's inputs and outputs.

OpenVINO reads the graph itself but drops ``metadata_props``, where dlinfer keeps its spec
and how the file must be run; the ``onnx`` package is not a runtime dependency and would
parse every node and weight.  ModelProto is walked field by field instead, skipping
nodes and initializers by their length, so a 100 MB file costs a few page reads.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelLoadError

__all__ = ["OnnxHeader", "read_header"]

# Field numbers (onnx.proto3): ModelProto.graph = 7, .metadata_props = 14;
# GraphProto.input = 11, .output = 12, .initializer = 5; ValueInfoProto.name = 1;
# StringStringEntryProto.key = 1, .value = 2.
_GRAPH, _METADATA = 7, 14
_INPUT, _OUTPUT, _INITIALIZER = 11, 12, 5


# TensorProto.DataType -> NumPy, for the element types a graph's inputs and outputs use.
ELEMENT_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16,
                 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64,
                 12: np.uint32, 13: np.uint64}


@dataclass
class OnnxHeader:
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)  # declared order, initializers excluded
    outputs: list[str] = field(default_factory=list)
    # name -> (NumPy dtype or None, declared shape with None for a symbolic or missing
    # dimension; None where the graph declares no shape)
    types: dict[str, tuple[np.dtype | None, tuple[int | None, ...] | None]] = field(
        default_factory=dict)
    # name -> its dimensions as the graph names them: int, str (a dim_param symbol, as
    # onnxruntime's NodeArg.shape gives it) or None; None where no shape is declared
    dims: dict[str, tuple[int | str | None, ...] | None] = field(default_factory=dict)


def _varint(buf: memoryview | mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("malformed varint")


def _fields(buf, start: int, end: int):
    """(field number, start, end) of each length-delimited field in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise ValueError("field runs past the end")
            yield number, pos, pos + length
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("truncated message")


def _strings(buf, start: int, end: int, numbers: tuple[int, ...]) -> dict[int, str]:
    """The string fields ``numbers`` of the message in buf[start:end] (others skipped:
    ValueInfoProto's field 2 is a binary TypeProto)."""
    return {n: bytes(buf[s:e]).decode("utf-8") for n, s, e in _fields(buf, start, end)
            if n in numbers}


def _tensor_type(buf, start: int, end: int
                 ) -> tuple[np.dtype | None, tuple[int | str | None, ...] | None]:
    """ValueInfoProto.type (2) -> TypeProto.tensor_type (1) -> elem_type (1), shape (2) ->
    dim (1) -> dim_value (1) | dim_param (2)."""
    dtype, shape = None, None
    for n, s, e in _fields(buf, start, end):
        if n != 2:
            continue
        for tn, ts, te in _fields(buf, s, e):
            if tn != 1:
                continue
            pos = ts
            while pos < te:  # elem_type is a varint: walk the fields by hand
                key, pos = _varint(buf, pos, te)
                number, wire = key >> 3, key & 7
                if wire == 0:
                    value, pos = _varint(buf, pos, te)
                    if number == 1:
                        dtype = np.dtype(ELEMENT_TYPES[value]) if value in ELEMENT_TYPES \
                            else None
                elif wire == 2:
                    length, pos = _varint(buf, pos, te)
                    if number == 2:
                        dims: list[int | str | None] = []
                        for dn, ds, de in _fields(buf, pos, pos + length):
                            if dn == 1:
                                dims.append(_dim_value(buf, ds, de))
                        shape = tuple(dims)
                    pos += length
                else:
                    raise ValueError(f"unexpected wire type {wire} in a TypeProto")
    return dtype, shape


def _dim_value(buf, start: int, end: int) -> int | str | None:
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        if key == (1 << 3):  # dim_value, a varint
            value, _ = _varint(buf, pos, end)
            # an int64: a negative dim_value (-1, written by some exporters) arrives as
            # 2**64 - 1 on the wire, and onnxruntime reads it as a dynamic dimension
            return value if value < (1 << 63) else None
        if key & 7 == 2:
            length, pos = _varint(buf, pos, end)
            if key >> 3 == 2:  # dim_param: a symbol
                return bytes(buf[pos:pos + length]).decode("utf-8") or None
            pos += length
        elif key & 7 == 0:
            _, pos = _varint(buf, pos, end)
        else:
            break
    return None  # nothing: dynamic


def read_header(path: str | os.PathLike[str]) -> OnnxHeader:
    """The metadata and input/output names of the ONNX file at ``path``.

    Raises ModelLoadError for a file that is not a protobuf, UnicodeDecodeError for text
    that is not UTF-8.
    """
    header = OnnxHeader()
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ValueError("empty file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                initializers: set[str] = set()
                inputs: list[str] = []
                for number, start, end in _fields(buf, 0, len(buf)):
                    if number == _METADATA:
                        entry = _strings(buf, start, end, (1, 2))
                        header.metadata[entry.get(1, "")] = entry.get(2, "")
                    elif number == _GRAPH:
                        for n, s, e in _fields(buf, start, end):
                            if n in (_INPUT, _OUTPUT):
                                name = _strings(buf, s, e, (1,)).get(1, "")
                                (inputs if n == _INPUT else header.outputs).append(name)
                                dtype, dims = _tensor_type(buf, s, e)
                                header.dims[name] = dims
                                header.types[name] = (dtype, None if dims is None else tuple(
                                    d if isinstance(d, int) else None for d in dims))
                            elif n == _INITIALIZER:
                                # TensorProto.name = 8: old files list weights as inputs
                                for tn, ts, te in _fields(buf, s, e):
                                    if tn == 8:
                                        initializers.add(bytes(buf[ts:te]).decode("utf-8"))
                header.inputs = [i for i in inputs if i not in initializers]
    except UnicodeDecodeError:  # the caller names the file (a SpecError, as on onnxruntime)
        raise
    except (ValueError, IndexError) as exc:
        raise ModelLoadError(f"cannot load {os.fspath(path)} ({os.path.getsize(path)} bytes) as an "
                             f"ONNX model: {exc}") from exc
    return header
