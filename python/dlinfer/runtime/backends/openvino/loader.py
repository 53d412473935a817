"""How an ONNX file is opened on OpenVINO: read by OpenVINO's ONNX frontend, compiled for
the CPU plugin with dlinfer's thread count and the precision the file was gated for."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ....errors import InputError, ModelLoadError
from ....json_limits import loads_limited
from ...session import SESSION_METADATA_KEY
from ...tensors import TensorInfo
from .. import import_openvino
from . import bf16x3, workarounds

__all__ = ["DEFAULT_PRECISION", "PRECISIONS", "Compiler", "compile_model", "file_precision",
           "port_named", "read_onnx", "tensor_infos"]

# OpenVINO's CPU plugin runs float32 graphs in bfloat16 by default on CPUs with AMX or
# AVX-512 BF16: faster, but answers that differ from onnxruntime's beyond float32
# rounding.  dlinfer runs f32 unless the file records that bf16 passed its accuracy
# gate (`dlinfer optimize --mode bf16` writes that, docs/optimize.md).
DEFAULT_PRECISION = "f32"
PRECISIONS = ("f32", "bf16", "f16")


def file_precision(metadata: Mapping[str, str]) -> str:
    """The inference precision a file was gated for (``dlinfer.session`` metadata)."""
    raw = metadata.get(SESSION_METADATA_KEY)
    if not raw:
        return DEFAULT_PRECISION
    try:
        value = loads_limited(raw, what=SESSION_METADATA_KEY, error=ValueError).get(
            "openvino", {}).get("inference_precision", DEFAULT_PRECISION)
    except (ValueError, AttributeError):
        return DEFAULT_PRECISION
    return value if value in PRECISIONS else DEFAULT_PRECISION


class Compiler:
    """Compiles one ONNX file for the CPU plugin: as read (``dynamic``, every shape the
    file allows) and reshaped to one set of input shapes (``static``).  ``path`` may also
    be a serialized ONNX graph (bytes) that dlinfer built."""

    def __init__(self, path: str | bytes, threads: int, precision: str = DEFAULT_PRECISION,
                 device: str = "cpu") -> None:
        self.path = _named(path)
        # precision: what the dynamic model runs in (bf16x3 may have fallen back to f32)
        self.core, self.config, self.model, self.dynamic, self.precision = _open(
            path, threads, precision, device)

    def static(self, shapes: Mapping[str, tuple[int, ...]]) -> Any:
        """The model compiled for exactly these input shapes (raises what OpenVINO raises)."""
        reshaped = self.model.clone()
        reshaped.reshape({name: list(shape) for name, shape in shapes.items()})
        return _compile(self.core, reshaped, self.config)[0]


def compile_model(path: str, threads: int, precision: str = DEFAULT_PRECISION,
                  device: str = "cpu") -> Any:
    """An ``openvino.CompiledModel`` of the ONNX file at ``path`` on the CPU plugin."""
    return _open(path, threads, precision, device)[3]


def _open(path: str, threads: int, precision: str, device: str) -> tuple[Any, ...]:
    if device != "cpu":
        raise InputError(f"backend='openvino' runs on device='cpu' only (OpenVINO's GPU plugin "
                         f"is for Intel GPUs), got device={device!r}; use backend='onnxruntime' "
                         "for CUDA and TensorRT")
    ov = import_openvino()
    core = ov.Core()
    # No CPU pinning: a pinned model's threads wait for their own cores, which a second
    # model in the process (serve with several, auto timing both) or another process
    # holds.  On the shared 2-core VM, mnist_cnn bf16 at batch 32 ran 0.52 ms unpinned
    # and 3.07 ms pinned (six interleaved rounds beside two other compiled models).
    config = {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": precision,
              "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    try:
        model = read_onnx(ov, core, path)
        return core, config, model, *_compile(core, model, config)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
        message = str(exc).strip()
        size = len(path) if isinstance(path, bytes) else os.path.getsize(path)
        raise ModelLoadError(
            f"OpenVINO cannot load {_named(path)} ({size} bytes): "
            f"{message.splitlines()[-1] if message else type(exc).__name__}") from exc


def _named(path: str | bytes) -> str:
    """How errors name a file, or a graph dlinfer built and passed as bytes."""
    return path if isinstance(path, str) else "a built graph"


def _compile(core: Any, model: Any, config: dict[str, Any]) -> tuple[Any, str]:
    """``(compiled, the precision it runs in)``."""
    precision = config["INFERENCE_PRECISION_HINT"]
    if precision == bf16x3.PRECISION:
        return bf16x3.compile(import_openvino(), core, model, config)
    return core.compile_model(model, "CPU", config), precision


def read_onnx(ov: Any, core: Any, path: str | bytes) -> Any:
    """The ``openvino.Model`` of an ONNX file, with a QDQ int8 file's pairs folded first.

    OpenVINO's ONNX frontend reads each QuantizeLinear/DequantizeLinear pair as FakeQuantize
    -> Convert -> Convert -> Subtract -> Multiply.  The CPU plugin's strides optimization
    then cuts that chain before stride-2 1x1 convolutions (ResNet's downsampling blocks),
    and 6 of ResNet50's 53 convolutions ran in floating point, their weights dequantized at
    every call.  ``ov.convert_model`` runs OpenVINO's MOC transformations, which fold the
    chain into one FakeQuantize as NNCF's own IR has it: on NNCF's int8 ResNet50 at batch
    32, 2 threads, 91/s read as is and 184/s converted (NNCF on OpenVINO's IR: 141/s, one
    interleaved run on the shared VM).  Float files are read as is: the conversion costs
    0.6 s on ResNet50 and gains nothing there."""
    built = isinstance(path, bytes)  # a graph dlinfer built, in memory
    model = core.read_model(path, b"") if built else core.read_model(path)
    if any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()):
        model = ov.convert_model(io.BytesIO(path) if built else path)
    workarounds.apply(model)
    return model


def _dtype(element_type: Any, name: str) -> np.dtype:
    try:
        return np.dtype(element_type.to_dtype())
    except Exception as exc:  # noqa: BLE001 - a type NumPy lacks (e.g. bf16, string)
        raise ModelLoadError(f"tensor {name!r} has unsupported type {element_type}") from exc


def port_named(ports: Any, name: str) -> Any:
    """The port among ``ports`` that carries tensor ``name``, or None."""
    return next((p for p in ports if name in p.get_names()), None)


def tensor_infos(ports: Any, names: list[str], declared: Mapping[str, Any]
                 ) -> tuple[list[TensorInfo], list[Any]]:
    """The :class:`TensorInfo` of each of ``names`` (the ONNX declared order) and its port.

    Dtype and shape are the file's declarations (``declared``, from its header), as
    onnxruntime reports them; OpenVINO's inferred ones fill in only what the file leaves
    out.  OpenVINO may infer more (a rank the file does not declare), and the contract
    must not depend on the backend."""
    by_name = {}
    for port in ports:
        for n in port.get_names():
            by_name.setdefault(n, port)
    infos, found = [], []
    for name in names:
        port = by_name.get(name)
        if port is None:
            raise ModelLoadError(f"OpenVINO does not expose tensor {name!r} of the ONNX graph")
        dtype, shape = declared.get(name, (None, None))
        inferred = tuple(d.get_length() if d.is_static else None
                         for d in port.get_partial_shape())
        if shape is None:
            shape = inferred
        elif len(shape) == len(inferred):  # a symbolic dimension OpenVINO resolved
            shape = tuple(d if d is not None else i for d, i in zip(shape, inferred))
        infos.append(TensorInfo(name, shape, dtype or _dtype(port.get_element_type(), name)))
        found.append(port)
    return infos, found
