"""``dlinfer doctor``'s probe: a real convolution on each provider, checked and located.

A provider counts as usable only after a session was created on it, ran a 3x3
convolution and a Relu, computed the right answer, still listed the provider first
in ``session.get_providers()``, and ran the convolution on that provider rather than
falling back to CPU (``session.get_provider_graph_assignment_info()``).  A one-node
Relu proved little: a machine could pass it and fail at its first cuDNN convolution.

The probe models are encoded here as raw protobuf bytes rather than built with the
``onnx`` package or shipped as data files: ``onnx`` is not a runtime dependency of
dlinfer, and a few hundred bytes written by this code cannot drift from the file they
describe.  ``tests/test_doctor.py`` checks the bytes with ``onnx.checker``.  The conv
probe's inputs and weights are multiples of 1/2 and 1/4 below 1 in magnitude, so every
product and sum is exact in float32 and TF32 alike: any difference is a wrong answer.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnxruntime as ort

from ..runtime import assignment as _assignment
from ..runtime import providers as _providers
from ..runtime.session import session_options
from ..verification.compare import compare

__all__ = ["conv_probe_model_bytes", "conv_probe_reference", "probe_model_bytes",
           "probe_provider"]

# -- protobuf, by hand -------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field: varint (wire type 0) or length-delimited (wire type 2)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor_value_info(name: str, dims: tuple[int, ...]) -> bytes:
    # ValueInfoProto{name=1, type=2: TypeProto{tensor_type=1: {elem_type=1 (FLOAT),
    # shape=2: TensorShapeProto{dim=1: Dimension{dim_value=1}}}}}
    shape = b"".join(_field(1, _field(1, d)) for d in dims)
    tensor_type = _field(1, 1) + _field(2, shape)
    return _field(1, name) + _field(2, _field(1, tensor_type))


def _initializer(name: str, array: np.ndarray) -> bytes:
    # TensorProto{dims=1, data_type=2 (1: FLOAT), name=8, raw_data=9 (little-endian)}
    dims = b"".join(_field(1, d) for d in array.shape)
    raw = np.ascontiguousarray(array, "<f4").tobytes()
    return dims + _field(2, 1) + _field(8, name) + _field(9, raw)


def _ints_attribute(name: str, values: tuple[int, ...]) -> bytes:
    # AttributeProto{name=1, ints=8 (repeated), type=20 (7: INTS)}
    return _field(1, name) + b"".join(_field(8, v) for v in values) + _field(20, 7)


def _model(nodes: list[bytes], inputs: list[bytes], outputs: list[bytes],
           initializers: list[bytes] = ()) -> bytes:
    graph = (b"".join(_field(1, n) for n in nodes) + _field(2, "dlinfer_probe")
             + b"".join(_field(5, t) for t in initializers)
             + b"".join(_field(11, i) for i in inputs) + b"".join(_field(12, o) for o in outputs))
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 7) + _field(2, "dlinfer.doctor") + _field(7, graph) + _field(8, opset)


# -- the probe models ----------------------------------------------------------------------


def probe_model_bytes(size: int = 4) -> bytes:
    """A valid ONNX model, ``y = Relu(x)`` on ``float32[size]``, opset 13, IR 7."""
    node = _field(1, "x") + _field(2, "y") + _field(3, "relu") + _field(4, "Relu")
    return _model([node], [_tensor_value_info("x", (size,))],
                  [_tensor_value_info("y", (size,))])


_CONV_X = (1, 3, 8, 8)
_CONV_W = (4, 3, 3, 3)


def _conv_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input, weights and bias of the conv probe: small dyadic values, exact in TF32."""
    x = ((np.arange(np.prod(_CONV_X)) * 7 % 5 - 2) / 2).astype(np.float32).reshape(_CONV_X)
    w = ((np.arange(np.prod(_CONV_W)) * 5 % 9 - 4) / 4).astype(np.float32).reshape(_CONV_W)
    b = np.array([0.5, -0.5, 0.0, 1.0], np.float32)
    return x, w, b


def conv_probe_model_bytes() -> bytes:
    """``y = Relu(Conv(x, w, b))``: x float32[1,3,8,8], a 3x3 kernel to 4 channels, pad 1."""
    _, w, b = _conv_data()
    conv = (_field(1, "x") + _field(1, "w") + _field(1, "b") + _field(2, "c")
            + _field(3, "conv") + _field(4, "Conv")
            + _field(5, _ints_attribute("kernel_shape", (3, 3)))
            + _field(5, _ints_attribute("pads", (1, 1, 1, 1))))
    relu = _field(1, "c") + _field(2, "y") + _field(3, "relu") + _field(4, "Relu")
    return _model([conv, relu], [_tensor_value_info("x", _CONV_X)],
                  [_tensor_value_info("y", (1, 4, 8, 8))],
                  [_initializer("w", w), _initializer("b", b)])


def conv_probe_reference() -> tuple[np.ndarray, np.ndarray]:
    """The conv probe's input and its exact output, computed in float64 by NumPy."""
    x, w, b = _conv_data()
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((1, 4, 8, 8)) + b[None, :, None, None]
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", padded[:, :, i:i + 8, j:j + 8], w[:, :, i, j])
    return x, np.maximum(y, 0)


def probe_provider(provider: str, device_id: int = 0) -> dict[str, Any]:
    """Run the conv probe on ``provider``; report whether it really ran there, and right.

    Returns ``{"provider", "usable", "active", "reason", "seconds", "assignment"}``:
    ``active`` is ``session.get_providers()``, ``assignment`` which provider ran each
    node (:func:`dlinfer.runtime.assignment.summarize`), ``reason`` None when usable.
    """
    started = time.perf_counter()
    result: dict[str, Any] = {"provider": provider, "usable": False, "active": [],
                              "reason": None, "assignment": None}
    options = session_options(1)
    options.log_severity_level = 4  # the fallback warning is what we are measuring
    wanted: list[Any] = [provider]
    if provider != _providers.CPU:
        wanted = [(provider, {"device_id": device_id}), _providers.CPU]
        load_error = _providers.provider_load_error(provider)
        if load_error:
            # Do not ask onnxruntime to try: it would log errors and fall back anyway.
            result["reason"] = load_error
            result["seconds"] = round(time.perf_counter() - started, 4)
            return result
    try:
        session = ort.InferenceSession(conv_probe_model_bytes(), options, providers=wanted)
        result["active"] = list(session.get_providers())
        placed = _assignment.summarize(_assignment.node_assignment(session), provider)
        result["assignment"] = placed
        if result["active"][0] != provider:
            result["reason"] = _providers.cuda_unavailable_reason(provider)
        else:
            x, want = conv_probe_reference()
            (y,) = session.run(None, {"x": x})
            check = compare("conv probe", y, want, atol=1e-6, rtol=0.0)
            on_cpu = [f["name"] for f in placed["cpu_fallbacks"]]
            if not check.ok:
                result["reason"] = (f"the probe convolution ran but computed a wrong answer "
                                    f"(max abs error {check.max_abs:.3g})")
            elif "conv" in on_cpu:
                result["reason"] = f"the probe convolution fell back to CPU (nodes {on_cpu})"
            else:
                result["usable"] = True
    except Exception as exc:  # noqa: BLE001 - any failure makes the provider unusable
        last = str(exc).strip().splitlines()[-1:] or [""]
        result["reason"] = f"{type(exc).__name__}: {last[0]}"
    result["seconds"] = round(time.perf_counter() - started, 4)
    return result
