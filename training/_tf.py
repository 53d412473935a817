"""TensorFlow and Keras for the training scripts, imported through dlinfer's one import rule."""

from __future__ import annotations

from dlinfer.export._tf import import_tensorflow

keras, tf = import_tensorflow()

__all__ = ["keras", "tf"]
