""":class:`~dlinfer.Model` on OpenVINO: the same checks, errors and answers as on
onnxruntime; only opening and the run itself differ (:mod:`.loader`, :mod:`.runner`).

``Model(path, backend="openvino")`` returns an :class:`OpenVINOModel`, so
``isinstance(m, dlinfer.Model)`` holds and every ``run`` path (the fast single-input
check, dicts, positional multi-input calls, ``out=``) is :class:`Model`'s own.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np

from ....errors import InferenceError, InputError, SpecError
from ...device_io import is_device_value, refuse_out
from ...model import Model
from ...onnx_header import read_header
from ...providers import parse_device
from . import loader
from .runner import OpenVINORunner, StartedRun

__all__ = ["OpenVINOModel"]

logger = logging.getLogger("dlinfer")

# Model's onnxruntime-only keyword arguments, refused by name rather than ignored.
_ORT_ONLY = ("session_options", "provider_options", "cuda", "tensorrt")


class OpenVINOModel(Model):
    """A :class:`~dlinfer.Model` run by OpenVINO's CPU plugin (``backend="openvino"``).

    ``io_binding=True`` keeps its meaning for callers: ``run(x, out=...)`` writes the
    results into ``out`` and returns it.  Inputs are always shared with OpenVINO without
    a copy, so there is nothing else to bind.
    """

    backend = "openvino"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "cpu",
        threads: int | None = None,
        *,
        io_binding: bool = False,
        backend: str = "openvino",
        **ort_only: Any,
    ) -> None:
        given = [k for k, v in ort_only.items() if v is not None]
        unknown = [k for k in ort_only if k not in _ORT_ONLY]
        if unknown:
            raise TypeError(f"Model() got unexpected keyword arguments {unknown}")
        if given:
            raise InputError(f"{', '.join(given)} configure onnxruntime; "
                             "backend='openvino' does not take them")
        request = parse_device(device)
        self._open_path(path, threads)
        if request.kind not in ("cpu", "auto"):
            loader.compile_model(self.path, self.threads, device=request.label)  # raises
        self.device = "cpu"
        self.device_reason = ("OpenVINO's CPU plugin" if request.kind == "cpu" else
                              "device='auto' chose cpu: backend='openvino' runs on CPU")
        try:
            header = read_header(self.path)
        except UnicodeDecodeError as exc:
            raise SpecError(f"{self.path}: the model's metadata is not valid UTF-8 ({exc.reason} "
                            f"at byte {exc.start} of a value)") from None
        self.metadata: dict[str, str] = header.metadata
        self.precision = loader.file_precision(self.metadata)
        compiler = loader.Compiler(self.path, self.threads, self.precision)
        self._compiled = compiler.dynamic
        self.providers = [f"OpenVINO({self.precision})"]  # its CPU plugin, in this precision
        self.inputs, _ = loader.tensor_infos(self._compiled.inputs, header.inputs, header.types)
        self.outputs, ports = loader.tensor_infos(self._compiled.outputs, header.outputs,
                                                  header.types)
        self._runner = OpenVINORunner(compiler, self.path, [i.name for i in self.inputs],
                                      [o.name for o in self.outputs], ports,
                                      [o.dtype for o in self.outputs])
        self._finish_open(io_binding)
        if request.kind == "auto":  # announced once open, as onnxruntime's Model does
            logger.info("%s: %s", self.path, self.device_reason)

    @property
    def session(self) -> Any:
        """The underlying ``openvino.CompiledModel``, for what dlinfer does not wrap."""
        return self._compiled

    def _prepare_hot_path(self, io_binding: bool) -> None:
        self._c_run = self._runner.run
        self._c_run_bound = None
        self._fast = self._fast_check()
        self.io_binding = bool(io_binding)
        # run() sends calls to _run_bound* when this is set, as with onnxruntime's binding.
        self._local = threading.local() if io_binding else None
        self._rebind = False

    def start_run(self, x: Any) -> StartedRun:
        """Start ``run(x)`` and return at once; ``.result()`` waits and returns what
        ``run`` would.  The Batcher keeps :attr:`in_flight` batches started this way, so
        OpenVINO runs one while Python prepares the next (docs/serving.md).  ``x`` is
        checked as ``run`` checks it, and must not change until the result is taken."""
        feed = self._feed(x)
        try:
            return self._runner.start(feed)
        except Exception as exc:  # OpenVINO raises untyped RuntimeErrors
            raise InferenceError(f"openvino failed on {self.path}: {exc}") from exc

    @property
    def in_flight(self) -> int:
        """How many started runs keep OpenVINO busy (:meth:`start_run`)."""
        return self._runner.in_flight

    def _run_bound_one(self, name: str, x: np.ndarray, shape: tuple[int, ...], out: Any) -> Any:
        return self._run_bound({name: x}, out)

    def _run_bound(self, feed: dict[str, np.ndarray], out: Any) -> Any:
        first = next(iter(feed.values()))
        batch = first.shape[0] if first.ndim else 1
        arrays = self._bound_outputs(batch, out) if out is not None else [None] * len(self.outputs)
        try:
            results = self._runner.run_into(feed, arrays)
        except Exception as exc:  # OpenVINO raises untyped RuntimeErrors
            raise InferenceError(f"openvino failed on {self.path}: {exc}") from exc
        if out is not None:
            return out
        return results[0] if len(results) == 1 else dict(zip(self._output_names, results))

    def _run_device_values(self, x: Any, more: tuple[Any, ...], out: Any,
                           keep_on_device: bool) -> Any:
        """OrtValues and DLPack tensors in host memory run as NumPy views; device memory
        and ``keep_on_device`` are onnxruntime's (CUDA) and refused by name."""
        refuse_out(out)  # as on onnxruntime, first
        if keep_on_device:
            raise InputError("keep_on_device=True returns onnxruntime OrtValues on a GPU "
                             "device; backend='openvino' runs on CPU and returns arrays")

        def host(value: Any) -> Any:
            if not is_device_value(value):
                return value
            try:
                return value.numpy() if hasattr(value, "numpy") and not hasattr(
                    value, "__dlpack__") else np.from_dlpack(value)
            except (BufferError, RuntimeError, TypeError) as exc:
                raise InputError(f"backend='openvino' takes host memory; got a "
                                 f"{type(value).__name__} it cannot read as NumPy ({exc})"
                                 ) from exc

        if isinstance(x, dict):
            x = {k: host(v) for k, v in x.items()}
        elif isinstance(x, (list, tuple)):
            x = type(x)(host(v) for v in x)
        else:
            x = host(x)
        return self.run(x, *(host(m) for m in more), out=out)

    def __repr__(self) -> str:
        return super().__repr__().replace("Model(", "Model(backend='openvino', ", 1)

