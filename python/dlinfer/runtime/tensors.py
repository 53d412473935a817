"""What a model's input or output is (:class:`TensorInfo`), and the one rule for whether a
tensor may be fed to an input: NumPy arrays, OrtValues and DLPack tensors alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import (
    EmptyBatchError,
    InputDtypeError,
    InputRankError,
    InputShapeError,
    ModelLoadError,
)

__all__ = ["ORT_DTYPES", "TensorInfo", "check_tensor", "fmt_shape"]

# onnxruntime's type strings -> NumPy dtypes, for the types the zoo uses.
ORT_DTYPES = {
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
        dtype = ORT_DTYPES.get(node.type)
        if dtype is None:
            raise ModelLoadError(f"tensor {node.name!r} has unsupported type {node.type}")
        return cls(node.name, shape, dtype)

    def __str__(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


def check_tensor(info: TensorInfo, dtype: np.dtype | None, shape: tuple[int, ...],
                 type_name: str | None = None) -> None:
    """Raise unless a tensor of ``dtype`` and ``shape`` can be fed to input ``info``.

    ``dtype`` None (with ``type_name``, onnxruntime's type string): a type NumPy lacks.
    """
    if dtype != info.dtype:
        got = dtype.name if dtype is not None else type_name
        # Integer <-> float casts change meaning (pixels vs. normalized values,
        # token ids vs. embeddings), so they are refused rather than guessed.
        raise InputDtypeError(
            f"input {info.name!r} needs dtype {info.dtype.name}, got {got}"
            + (
                "; for raw image pixels use dlinfer.Classifier, which normalizes them"
                if dtype == np.uint8 and info.dtype.kind == "f"
                else ""
            )
        )
    if len(shape) != len(info.shape):
        raise InputRankError(
            f"input {info.name!r} needs rank {len(info.shape)} {fmt_shape(info.shape)}, "
            f"got shape {shape}"
        )
    for axis, (want, got) in enumerate(zip(info.shape, shape)):
        if want is not None and want != got:
            raise InputShapeError(
                f"input {info.name!r} needs size {want} on axis {axis} "
                f"{fmt_shape(info.shape)}, got shape {shape}"
            )
    if shape and shape[0] == 0:
        raise EmptyBatchError(f"input {info.name!r} is an empty batch (shape {shape})")


def fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
