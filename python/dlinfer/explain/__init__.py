"""See what a model sees, from the ONNX file alone: gradients, Grad-CAM, saliency.

``gradient`` and ``value_and_gradient`` differentiate any output element with respect
to the input or any intermediate tensor (:mod:`.gradient`); the backward pass runs in
onnxruntime (:mod:`.backward`).
"""

from __future__ import annotations

from .gradient import gradient, value_and_gradient

__all__ = ["gradient", "value_and_gradient"]
