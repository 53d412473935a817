"""Import TensorFlow and Keras quietly, once, and only when an export or training needs them."""

from __future__ import annotations

import os
from typing import Any

from .._optional import import_optional

__all__ = ["import_tensorflow"]


def import_tensorflow() -> tuple[Any, Any]:
    """``(keras, tensorflow)``, with a clear error if they are not installed."""
    # TensorFlow logs GPU probing and oneDNN notices at INFO level on every import;
    # they drown the training output and say nothing actionable on a CPU machine.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    feature = "exporting, training or verifying Keras models"
    tf = import_optional("tensorflow", "export", feature)
    return import_optional("keras", "export", feature), tf
