"""Exceptions raised by dlinfer.

Every error dlinfer raises on purpose derives from :class:`DlinferError`, so an
application can catch them all in one place.  Input errors also derive from the
matching built-in (``ValueError`` or ``TypeError``), so code written against
NumPy conventions keeps working::

    DlinferError
    ├── ModelLoadError              model file missing, truncated or not ONNX
    │   └── ModelNotFoundError      (also FileNotFoundError)
    ├── SpecError                   dlinfer metadata missing or malformed
    ├── ExportError                 (also ValueError) a Keras model cannot be exported faithfully
    ├── UnsupportedGradientError    (also NotImplementedError) an op on the path has no gradient
    ├── OptimizeError               (also ValueError) `dlinfer optimize` refused
    ├── MissingExtraError           (also ImportError) a feature's optional package is missing
    ├── ProviderUnavailableError    requested device cannot actually run
    ├── InferenceError              onnxruntime failed while running
    ├── ImageDecodeError            image file corrupt, truncated or not an image
    │   └── DecompressionBombError  decoding would exceed the memory budget
    ├── QueueFullError              Batcher queue full: request rejected at once
    ├── RequestTimeoutError         (also TimeoutError) waited past timeout_ms; never computed
    ├── BatcherClosedError          (also RuntimeError) submitted to a closed Batcher
    └── InputError                  (also ValueError) bad input array or argument
        ├── InputTypeError          (also TypeError) an argument or image of the wrong type
        ├── ProviderOptionsError    a cuda=/tensorrt= option unknown or its value bad
        ├── InputDtypeError         (also TypeError) wrong dtype or value range
        ├── InputRankError          wrong number of dimensions
        ├── InputShapeError         wrong size for a fixed dimension
        │   └── ChannelError        wrong number of colour channels
        └── EmptyBatchError         a batch with no items
"""

from __future__ import annotations

__all__ = [
    "BatcherClosedError",
    "ChannelError",
    "DecompressionBombError",
    "DlinferError",
    "EmptyBatchError",
    "ExportError",
    "ImageDecodeError",
    "InferenceError",
    "InputDtypeError",
    "InputError",
    "InputRankError",
    "InputShapeError",
    "InputTypeError",
    "MissingExtraError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OptimizeError",
    "ProviderOptionsError",
    "ProviderUnavailableError",
    "QueueFullError",
    "RequestTimeoutError",
    "SpecError",
    "UnsupportedGradientError",
]


class DlinferError(Exception):
    """Base class of every error dlinfer raises on purpose."""


class ModelLoadError(DlinferError):
    """The model file could not be loaded as ONNX."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path does not exist."""


class SpecError(DlinferError):
    """The model's dlinfer metadata is missing or malformed."""


class ExportError(DlinferError, ValueError):
    """A Keras model cannot be exported faithfully; the message names the layer."""


class UnsupportedGradientError(DlinferError, NotImplementedError):
    """dlinfer.explain cannot differentiate through an op (or a mode of one) on the path
    from the tensor differentiated to the output; ``op`` and ``node`` name it."""

    def __init__(self, message: str, *, op: str = "", node: str = "") -> None:
        super().__init__(message)
        self.op = op
        self.node = node


class MissingExtraError(DlinferError, ImportError):
    """A feature needs an optional package (one of dlinfer's extras) that is not installed."""


class ProviderUnavailableError(DlinferError, RuntimeError):
    """The requested execution device is not usable on this machine.

    ``reason`` holds what onnxruntime reported (a library that failed to load,
    the CUDA/cuDNN versions it needs, ...).
    """

    def __init__(self, message: str, *, device: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.device = device
        self.reason = reason


class InferenceError(DlinferError, RuntimeError):
    """onnxruntime failed while running the model."""


class ImageDecodeError(DlinferError, ValueError):
    """An image file is corrupt, truncated or not an image at all."""


class DecompressionBombError(ImageDecodeError):
    """Decoding an image would need more memory than the configured budget."""


class InputError(DlinferError, ValueError):
    """An input array cannot be fed to the model, or an argument is out of range."""


class InputTypeError(InputError, TypeError):
    """An argument, or an item where images are expected, has the wrong type (None, a
    number, a dict, bytes, a string where a number belongs); the message names it."""


class InputDtypeError(InputError, TypeError):
    """An input has the wrong dtype, or values outside the range its dtype implies."""


class InputRankError(InputError):
    """An input has the wrong number of dimensions."""


class InputShapeError(InputError):
    """An input has the wrong size along a fixed dimension."""


class ChannelError(InputShapeError):
    """An image has a channel count the model cannot take."""


class EmptyBatchError(InputError):
    """A batch holds no items."""


class QueueFullError(DlinferError):
    """A :class:`~dlinfer.Batcher` queue is full; the request was rejected without waiting."""


class RequestTimeoutError(DlinferError, TimeoutError):
    """A request waited in a :class:`~dlinfer.Batcher` queue past its timeout.

    It was dropped from the queue and never computed.
    """


class BatcherClosedError(DlinferError, RuntimeError):
    """A request was submitted to a :class:`~dlinfer.Batcher` after ``close()``."""


class OptimizeError(DlinferError, ValueError):
    """``dlinfer optimize`` refused: a model it cannot convert, bad calibration data, or an
    accuracy drop past ``max_drop`` (the message says by how much and which layer)."""


class ProviderOptionsError(InputError):
    """A ``cuda=``/``tensorrt=`` provider option (or its CLI flag) is unknown or has a bad
    value; the message names the option and what it takes."""
