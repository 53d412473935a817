"""dlinfer: run Keras workshop models exported to ONNX, without TensorFlow.

Quick start::

    import dlinfer
    clf = dlinfer.Classifier("artifacts/mnist_cnn.onnx")
    for p in clf.predict(["digit0.png", "digit1.png"], top_k=3):
        print(p.label, p.probability)
"""

from __future__ import annotations

from . import kernels, reference  # issue 5: NumPy + the native module only
from ._native_loader import native as _native  # noqa: F401 - fail early, with build instructions
from .batcher import Batcher, BatcherStats
from .bench import BenchResults, benchmark
from .classifier import Candidate, Classifier, Prediction
from .doctor import diagnose
from .errors import (
    BatcherClosedError,
    ChannelError,
    DecompressionBombError,
    DlinferError,
    EmptyBatchError,
    ImageDecodeError,
    InferenceError,
    InputDtypeError,
    InputError,
    InputRankError,
    InputShapeError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderUnavailableError,
    QueueFullError,
    RequestTimeoutError,
    SpecError,
)
from .generator import Generator, image_grid
from .model import Model, TensorInfo
from .preprocess import Geometry, PreprocessSpec, preprocess
from .spec import METADATA_KEY, InputSpec, ModelSpec, OutputSpec
from .verify import verify  # issue 5: imports TensorFlow lazily, only for a Keras model

__version__ = "0.1.0"

__all__ = [
    "METADATA_KEY",
    "BenchResults",
    "benchmark",
    "diagnose",
    "Batcher",
    "BatcherClosedError",
    "BatcherStats",
    "Candidate",
    "ChannelError",
    "Classifier",
    "DecompressionBombError",
    "DlinferError",
    "EmptyBatchError",
    "Geometry",
    "Generator",
    "ImageDecodeError",
    "InferenceError",
    "InputDtypeError",
    "InputError",
    "InputRankError",
    "InputShapeError",
    "InputSpec",
    "Model",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelSpec",
    "OutputSpec",
    "Prediction",
    "PreprocessSpec",
    "ProviderUnavailableError",
    "QueueFullError",
    "RequestTimeoutError",
    "SpecError",
    "TensorInfo",
    "__version__",
    "kernels",
    "reference",
    "verify",
    "preprocess",
    "image_grid",
]
