"""The Keras side of the Grad-CAM parity tests: tf.GradientTape on a layer's output.

The layer's ``call`` is wrapped for one forward pass so that the tape watches and keeps
its output wherever the layer sits (inside a nested model such as VGG16's base too);
the head's activation is switched to linear for that pass, so the score is the class
logit, as dlinfer differentiates it.  A single sigmoid unit z scores labels[1] as z and
labels[0] as -z.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def layers_in_order(model: Any) -> list[Any]:
    """Every layer, nested models' layers in place, in the order the model lists them."""
    out = []
    for layer in model.layers:
        out.extend(layers_in_order(layer) if hasattr(layer, "layers") else [layer])
    return out


def find_layer(model: Any, name: str) -> Any:
    for layer in layers_in_order(model):
        if layer.name == name:
            return layer
    raise KeyError(name)


def last_conv2d(model: Any) -> str:
    return [lay for lay in layers_in_order(model) if type(lay).__name__ == "Conv2D"][-1].name


def _head(model: Any) -> Any:
    return [lay for lay in layers_in_order(model) if hasattr(lay, "activation")][-1]


def keras_gradcam(model: Any, x: np.ndarray, layer_name: str, targets: list[int],
                  binary: bool = False) -> np.ndarray:
    """(N, h, w) ReLU(sum_k alpha_k A^k) with alpha from tf.GradientTape, float64 sums."""
    import keras
    import tensorflow as tf

    layer = find_layer(model, layer_name)
    head = _head(model)
    kept: dict[str, Any] = {}
    call = layer.call

    def recorded(*a: Any, **kw: Any) -> Any:
        out = call(*a, **kw)
        tape.watch(out)
        kept["A"] = out
        return out

    activation = head.activation
    object.__setattr__(layer, "call", recorded)
    head.activation = keras.activations.linear
    try:
        with tf.GradientTape() as tape:
            logits = model(tf.constant(x), training=False)
            if binary:
                z = logits[:, 0]
                score = tf.where(tf.constant(np.array(targets) == 1), z, -z)
            else:
                score = tf.gather(logits, targets, axis=1, batch_dims=1)
        grads = tape.gradient(score, kept["A"]).numpy().astype(np.float64)
    finally:
        object.__delattr__(layer, "call")
        head.activation = activation
    acts = kept["A"].numpy().astype(np.float64)  # (N, h, w, C)
    alpha = grads.mean(axis=(1, 2))
    return np.maximum(np.einsum("nc,nhwc->nhw", alpha, acts), 0.0)
