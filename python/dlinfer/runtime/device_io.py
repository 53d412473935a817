"""``Model.run`` with device arrays: OrtValues and DLPack tensors in, OrtValues out.

Which paths copy (docs/runtime.md has the table):

- an ``OrtValue`` on the model's device, or a DLPack tensor there (CuPy, torch on the
  GPU; NumPy on CPU), is bound where it lies: no copy;
- an ``OrtValue`` or DLPack tensor on another device, and a NumPy array for a GPU
  model, are copied to the model's device when bound (onnxruntime's
  ``CopyOneInputAcrossDevices``);
- outputs are allocated by onnxruntime on the model's device; ``keep_on_device=True``
  returns them as ``OrtValue``s there (no copy), otherwise each is copied to a NumPy
  array (``OrtValue.numpy()``).

Every call makes its own IOBinding and synchronizes its inputs before the run and its
outputs after it, so nothing is reused across calls or threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from ..errors import InferenceError, InputError
from .tensors import ORT_DTYPES, check_tensor

if TYPE_CHECKING:
    from .model import Model

__all__ = ["holds_device_values", "is_device_value", "refuse_out", "run", "device_location"]


def is_device_value(value: Any) -> bool:
    """An OrtValue, or a DLPack tensor that is not a NumPy array."""
    return isinstance(value, ort.OrtValue) or (
        hasattr(value, "__dlpack__") and not isinstance(value, np.ndarray))


def holds_device_values(x: Any, more: tuple[Any, ...]) -> bool:
    """Whether a ``run`` call's arguments hold any device value (see :func:`is_device_value`)."""
    if is_device_value(x) or any(is_device_value(m) for m in more):
        return True
    if isinstance(x, Mapping):
        return any(is_device_value(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return any(is_device_value(v) for v in x)
    return False


def device_location(device: str) -> tuple[str, int]:
    """onnxruntime's (device type, id) for a Model.device label; TensorRT runs in CUDA memory."""
    kind, _, index = device.partition(":")
    return ("cpu", 0) if kind == "cpu" else ("cuda", int(index or 0))


def _by_name(model: Model, x: Any, more: tuple[Any, ...]) -> dict[str, Any]:
    names = model._input_names
    if isinstance(x, Mapping):
        if more or set(x) != set(names):
            raise InputError(f"inputs must be exactly {names}; got {sorted(x)}")
        return dict(x)
    values = (tuple(x) if not more and isinstance(x, (list, tuple)) and len(names) > 1
              else (x, *more))
    if len(values) != len(names):
        raise InputError(f"{model.path} has {len(names)} input(s) {names}; got "
                         f"{len(values)} (out= takes host arrays with io_binding=True only)")
    return dict(zip(names, values))


def _as_ortvalue(name: str, value: Any) -> ort.OrtValue:
    if isinstance(value, ort.OrtValue):
        return value
    try:
        return ort.OrtValue.from_dlpack(value)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types here
        raise InputError(f"input {name!r}: onnxruntime cannot take this "
                         f"{type(value).__name__} through DLPack: {exc}") from exc


def refuse_out(out: Any) -> None:
    """``out=`` with device values or ``keep_on_device=True``: refused on every backend
    (OpenVINO reads host DLPack tensors as arrays, but code must not depend on that)."""
    if out is not None:
        raise InputError("out= takes host arrays (io_binding=True); with OrtValue or DLPack "
                         "inputs, or keep_on_device=True, the results are returned")


def run(model: Model, x: Any, more: tuple[Any, ...], out: Any, keep_on_device: bool) -> Any:
    """``model.run`` for device values or ``keep_on_device=True`` (see the module doc)."""
    refuse_out(out)
    values = _by_name(model, x, more)
    binding = model.session.io_binding()
    shapes = {}
    for info in model.inputs:
        value = values[info.name]
        if is_device_value(value):
            value = _as_ortvalue(info.name, value)
            shape = tuple(value.shape())
            check_tensor(info, ORT_DTYPES.get(value.data_type()), shape, value.data_type())
            binding.bind_ortvalue_input(info.name, value)
        else:
            value = model._check(info, value)
            shape = value.shape
            binding.bind_cpu_input(info.name, value)
        shapes[info.name] = SimpleNamespace(shape=shape)
    if len(shapes) > 1:
        model._check_batches(shapes)
    device_type, device_id = device_location(model.device)
    for name in model._output_names:
        binding.bind_output(name, device_type, device_id)
    try:
        binding.synchronize_inputs()
        model.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
    except Exception as exc:  # onnxruntime raises untyped exceptions
        raise InferenceError(f"onnxruntime failed on {model.path}: {exc}") from exc
    outputs = binding.get_outputs()
    results = outputs if keep_on_device else [o.numpy() for o in outputs]
    if len(results) == 1:
        return results[0]
    return dict(zip(model._output_names, results))
