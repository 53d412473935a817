"""The Keras baselines that ``dlinfer bench --compare-keras`` and the benchmark scripts time
dlinfer against: ``predict_on_batch`` and a ``tf.function`` around the model.

TensorFlow is imported only when a baseline is made, so ``dlinfer bench`` without
``--compare-keras`` never loads it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .bench import Stages, Step

__all__ = ["KerasBaseline"]


class KerasBaseline:
    """predict_on_batch and tf.function steps; TensorFlow is imported only here."""

    def __init__(self, keras_file: str, sample: np.ndarray) -> None:
        from ..export._tf import import_tensorflow

        keras, tf = import_tensorflow()

        self.tf = tf
        self.model = keras.models.load_model(keras_file, compile=False)
        spec = tf.TensorSpec((None, *sample.shape[1:]), tf.as_dtype(sample.dtype))
        model = self.model
        self.fn = tf.function(lambda t: model(t, training=False), input_signature=[spec])
        self.device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"

    def steps(self, x: np.ndarray) -> dict[str, Step]:
        pc = time.perf_counter_ns
        model, fn, tf = self.model, self.fn, self.tf

        def predict() -> Stages:
            t0 = pc()
            model.predict_on_batch(x)
            return (None, None, pc() - t0, None)

        def function() -> Stages:
            t0 = pc()
            result = fn(x)
            # dlinfer hands back NumPy arrays, so the baseline does too.
            tf.nest.map_structure(lambda t: t.numpy(), result)
            return (None, None, pc() - t0, None)

        return {"keras.predict_on_batch": predict, "keras.tf_function": function}
