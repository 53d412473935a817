"""Import TensorFlow and Keras quietly, once, and only when an export or training needs them."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["import_tensorflow"]


def import_tensorflow() -> tuple[Any, Any]:
    """``(keras, tensorflow)``, with a clear error if they are not installed."""
    # TensorFlow logs GPU probing and oneDNN notices at INFO level on every import;
    # they drown the training output and say nothing actionable on a CPU machine.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "exporting or training Keras models needs TensorFlow: "
            "pip install 'dlinfer[export]' (or '.[train]' in the repository)"
        ) from exc
    return keras, tf
