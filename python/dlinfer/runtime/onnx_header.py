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

from ..errors import ModelLoadError

__all__ = ["OnnxHeader", "read_header"]

# Field numbers (onnx.proto3): ModelProto.graph = 7, .metadata_props = 14;
# GraphProto.input = 11, .output = 12, .initializer = 5; ValueInfoProto.name = 1;
# StringStringEntryProto.key = 1, .value = 2.
_GRAPH, _METADATA = 7, 14
_INPUT, _OUTPUT, _INITIALIZER = 11, 12, 5


@dataclass
class OnnxHeader:
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)  # declared order, initializers excluded
    outputs: list[str] = field(default_factory=list)


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


def _strings(buf, start: int, end: int) -> dict[int, str]:
    return {n: bytes(buf[s:e]).decode("utf-8") for n, s, e in _fields(buf, start, end)
            if n in (1, 2)}


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
                        entry = _strings(buf, start, end)
                        header.metadata[entry.get(1, "")] = entry.get(2, "")
                    elif number == _GRAPH:
                        for n, s, e in _fields(buf, start, end):
                            if n in (_INPUT, _OUTPUT):
                                name = _strings(buf, s, e).get(1, "")
                                (inputs if n == _INPUT else header.outputs).append(name)
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
