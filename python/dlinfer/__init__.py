"""dlinfer: run Keras workshop models exported to ONNX, without TensorFlow.

Quick start::

    import dlinfer
    clf = dlinfer.Classifier("artifacts/mnist_cnn.onnx")
    for p in clf.predict(["digit0.png", "digit1.png"], top_k=3):
        print(p.label, p.probability)
"""

from __future__ import annotations

from ._native_loader import native as _native  # fail early, with build instructions
from .classifier import Candidate, Classifier, Prediction
from .errors import (
    ChannelError,
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
    SpecError,
)
from .generator import Generator, image_grid
from .model import Model, TensorInfo
from .spec import METADATA_KEY, InputSpec, ModelSpec, OutputSpec

__version__ = "0.1.0"

__all__ = [
    "METADATA_KEY",
    "Candidate",
    "ChannelError",
    "Classifier",
    "DlinferError",
    "EmptyBatchError",
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
    "ProviderUnavailableError",
    "SpecError",
    "TensorInfo",
    "__version__",
    "image_grid",
]
