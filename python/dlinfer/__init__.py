"""dlinfer: run Keras models exported to ONNX, without TensorFlow.

The package is laid out as the data flow::

    preprocessing/   images -> the model's batch (decode, batch rule, PreprocessSpec)
    runtime/         Model: onnxruntime sessions, providers, IO binding
    tasks/           Classifier, Generator, predictions
    serving/         Batcher, `dlinfer serve`
    export/          Keras -> ONNX (imports TensorFlow when called)
    verification/    the closeness rule, the reference executor, `dlinfer verify`
    tools/           the CLI, bench, doctor, plot

Quick start::

    import dlinfer
    clf = dlinfer.Classifier("artifacts/mnist_cnn.onnx")
    for p in clf.predict(["digit0.png", "digit1.png"], top_k=3):
        print(p.label, p.probability)

Serving, tools, export and verification load on first use, so ``import dlinfer``
brings in neither asyncio, Starlette, matplotlib nor TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._native_loader import native as _native  # noqa: F401 - fail early, with build instructions
from .errors import *  # noqa: F403 - every dlinfer exception, listed once in errors.py
from .errors import __all__ as _error_names
from .preprocessing.transform import Geometry, PreprocessSpec, preprocess
from .runtime.model import Model, TensorInfo
from .spec import METADATA_KEY, InputSpec, ModelSpec, OutputSpec
from .tasks.classifier import Classifier
from .tasks.generator import Generator, image_grid
from .tasks.predictions import Candidate, Prediction

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.1.0"

# Public names whose modules load on first use: name -> (module, attribute or None
# for the module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "Batcher": ("serving.batcher", "Batcher"),
    "BatcherStats": ("serving.batcher", "BatcherStats"),
    "BenchResults": ("tools.bench", "BenchResults"),
    "benchmark": ("tools.bench", "benchmark"),
    "diagnose": ("tools.doctor", "diagnose"),
    "verify": ("verification.verify", "verify"),
    "kernels": ("verification.kernels", None),
    "reference": ("verification.reference", None),
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .serving.batcher import Batcher, BatcherStats
    from .tools.bench import BenchResults, benchmark
    from .tools.doctor import diagnose
    from .verification import kernels, reference
    from .verification.verify import verify


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'dlinfer' has no attribute {name!r}") from None
    value = importlib.import_module(f"{__name__}.{module}")
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    *_error_names,
    "METADATA_KEY",
    "BenchResults",
    "benchmark",
    "diagnose",
    "Batcher",
    "BatcherStats",
    "Candidate",
    "Classifier",
    "Geometry",
    "Generator",
    "InputSpec",
    "Model",
    "ModelSpec",
    "OutputSpec",
    "Prediction",
    "PreprocessSpec",
    "TensorInfo",
    "__version__",
    "kernels",
    "reference",
    "verify",
    "preprocess",
    "image_grid",
]
