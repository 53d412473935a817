"""`Model`: one ONNX file, one onnxruntime session, on a device chosen honestly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from . import providers as _providers
from .errors import (
    EmptyBatchError,
    InferenceError,
    InputDtypeError,
    InputError,
    InputRankError,
    InputShapeError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderUnavailableError,
)
from .spec import METADATA_KEY, ModelSpec

__all__ = ["Model", "TensorInfo"]

# onnxruntime's type strings -> NumPy dtypes, for the types the zoo uses.
_ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (None for dynamic dimensions) and dtype of a model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    @classmethod
    def from_ort(cls, node: Any) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in node.shape)
        dtype = _ORT_DTYPES.get(node.type)
        if dtype is None:
            raise ModelLoadError(f"tensor {node.name!r} has unsupported type {node.type}")
        return cls(node.name, shape, dtype)

    def __str__(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


def _default_threads() -> int:
    return os.cpu_count() or 1


class Model:
    """An ONNX model ready to run.

    Args:
        path: the ``.onnx`` file.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"tensorrt"`` or ``"auto"``.  An
            explicit GPU device is strict: if onnxruntime would not really run on it,
            :class:`~dlinfer.ProviderUnavailableError` says why.  ``"auto"`` takes CUDA
            only when it truly runs, and falls back to CPU otherwise.
        threads: intra-op threads for onnxruntime and dlinfer's kernels
            (``None`` or 0: every core).
        session_options: an ``onnxruntime.SessionOptions`` to use as is.
        provider_options: options for the chosen provider (e.g. ``{"gpu_mem_limit": ...}``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "cpu",
        threads: int | None = None,
        *,
        session_options: ort.SessionOptions | None = None,
        provider_options: dict[str, Any] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        request = _providers.parse_device(device)
        if threads is not None and threads < 0:
            raise ValueError(f"threads must be None or >= 0, got {threads}")
        self.threads = threads or _default_threads()
        if not os.path.exists(self.path):
            raise ModelNotFoundError(f"model file not found: {self.path}")
        if os.path.isdir(self.path):
            raise ModelLoadError(f"model path is a directory, not an ONNX file: {self.path}")

        if session_options is None:
            session_options = ort.SessionOptions()
            session_options.intra_op_num_threads = self.threads
            # Keep onnxruntime's own warnings (e.g. a CUDA fallback) out of the user's
            # terminal: dlinfer turns the ones that matter into exceptions.
            session_options.log_severity_level = 3

        if request.kind != "cpu":
            _providers.preload_cuda_libraries()
        self._session = self._create_session(request, session_options, provider_options)
        self.providers: list[str] = list(self._session.get_providers())
        if request.kind == "auto":
            self.device = "cuda" if self.providers[0] == _providers.CUDA else "cpu"
            self.device_reason = (
                "CUDAExecutionProvider is active"
                if self.device == "cuda"
                else _providers.cuda_unavailable_reason()
            )
        else:
            _providers.check_active(request, self.providers)
            self.device = request.label
            self.device_reason = f"{self.providers[0]} is active"

        self.inputs = [TensorInfo.from_ort(i) for i in self._session.get_inputs()]
        self.outputs = [TensorInfo.from_ort(o) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        spec_json = self.metadata.get(METADATA_KEY)
        self.spec: ModelSpec | None = ModelSpec.from_json(spec_json) if spec_json else None

    def _create_session(
        self,
        request: _providers.DeviceRequest,
        options: ort.SessionOptions,
        provider_options: dict[str, Any] | None,
    ) -> ort.InferenceSession:
        providers = request.providers(provider_options)
        if request.kind == "auto" and _providers.provider_load_error() is not None:
            # CUDA cannot even load: go straight to CPU rather than have onnxruntime
            # try, fail and log errors for a fallback the user asked for.
            providers = [_providers.CPU]
        try:
            return ort.InferenceSession(self.path, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            message = str(exc)
            if request.kind != "cpu" and "provider" in message.lower():
                raise ProviderUnavailableError(
                    f"device={request.label!r}: {message}", device=request.label, reason=message
                ) from exc
            size = os.path.getsize(self.path)
            raise ModelLoadError(
                f"cannot load {self.path} ({size} bytes) as an ONNX model: "
                f"{message.strip().splitlines()[-1] if message.strip() else type(exc).__name__}"
            ) from exc

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying onnxruntime session, for what dlinfer does not wrap."""
        return self._session

    @property
    def input(self) -> TensorInfo:
        """The only input; raises if the model has several."""
        if len(self.inputs) != 1:
            raise InputError(f"{self.path} has {len(self.inputs)} inputs; pass a dict to run()")
        return self.inputs[0]

    def _check(self, info: TensorInfo, x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype != info.dtype:
            # Integer <-> float casts change meaning (pixels vs. normalized values,
            # token ids vs. embeddings), so they are refused rather than guessed.
            raise InputDtypeError(
                f"input {info.name!r} needs dtype {info.dtype.name}, got {x.dtype.name}"
                + (
                    "; for raw image pixels use dlinfer.Classifier, which normalizes them"
                    if x.dtype == np.uint8 and info.dtype.kind == "f"
                    else ""
                )
            )
        if x.ndim != len(info.shape):
            raise InputRankError(
                f"input {info.name!r} needs rank {len(info.shape)} {_fmt_shape(info.shape)}, "
                f"got shape {x.shape}"
            )
        for axis, (want, got) in enumerate(zip(info.shape, x.shape)):
            if want is not None and want != got:
                raise InputShapeError(
                    f"input {info.name!r} needs size {want} on axis {axis} "
                    f"{_fmt_shape(info.shape)}, got shape {x.shape}"
                )
        if x.ndim and x.shape[0] == 0:
            raise EmptyBatchError(f"input {info.name!r} is an empty batch (shape {x.shape})")
        return np.ascontiguousarray(x)

    def run(self, x: Any) -> Any:
        """Run the model.

        ``x`` is an array for a single-input model or a ``{name: array}`` dict.  Returns an
        array for a single-output model, else a ``{name: array}`` dict.  Dtypes must match
        the model's inputs exactly: dlinfer never casts behind your back.
        """
        if isinstance(x, Mapping):
            names = {i.name for i in self.inputs}
            unknown = set(x) - names
            missing = names - set(x)
            if unknown or missing:
                raise InputError(
                    f"inputs must be exactly {sorted(names)}; "
                    f"unknown: {sorted(unknown)}, missing: {sorted(missing)}"
                )
            feed = {i.name: self._check(i, x[i.name]) for i in self.inputs}
        else:
            info = self.input
            feed = {info.name: self._check(info, x)}
        try:
            results = self._session.run(self._output_names, feed)
        except Exception as exc:  # onnxruntime raises untyped exceptions
            raise InferenceError(f"onnxruntime failed on {self.path}: {exc}") from exc
        if len(results) == 1:
            return results[0]
        return dict(zip(self._output_names, results))

    __call__ = run

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"Model({self.path!r}, device={self.device!r}, inputs=[{ins}], outputs=[{outs}])"


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
