"""Import TensorFlow and Keras quietly, once, and only when an export or training needs them."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from .._optional import import_optional

__all__ = ["import_tensorflow", "quiet"]


def import_tensorflow() -> tuple[Any, Any]:
    """``(keras, tensorflow)``, with a clear error if they are not installed."""
    # TensorFlow logs GPU probing and oneDNN notices at INFO level on every import;
    # they drown the training output and say nothing actionable on a CPU machine.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    feature = "exporting, training or verifying Keras models"
    tf = import_optional("tensorflow", "export", feature)
    return import_optional("keras", "export", feature), tf


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """A library's Python logger held at ERROR while dlinfer works with it.

    tf2onnx logs the failures it recovers from with tracebacks (a transpose
    optimization it skips on MobileNetV3), and TensorFlow warns about retracing each
    time Keras runs a grouped convolution on a CPU (a new XLA function per call).
    dlinfer's own checks decide what is wrong; that noise says nothing to the user.
    """
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
