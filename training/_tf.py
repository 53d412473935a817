"""Import TensorFlow and Keras quietly, once, with a clear error if they are missing."""

from __future__ import annotations

import os

# TensorFlow logs GPU probing and oneDNN notices at INFO level on every import;
# they drown the training output and say nothing actionable on a CPU machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import keras
    import tensorflow as tf
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "training needs TensorFlow and Keras: pip install '.[train]' (or run `make demo`)"
    ) from exc

__all__ = ["keras", "tf"]
