"""See what a model sees, from the ONNX file alone: gradients, Grad-CAM, saliency.

``gradient`` and ``value_and_gradient`` differentiate any output element with respect
to the input or any intermediate tensor (:mod:`.gradient`); the backward pass runs in
onnxruntime (:mod:`.backward`).  ``Classifier.explain`` returns :class:`Explanation`
(Grad-CAM, saliency, occlusion: :mod:`.cam`, :mod:`.occlusion`); activations and filters
are drawn by :mod:`.features` and :mod:`.render` (docs/explain.md).
"""

from __future__ import annotations

from .cam import METHODS, Explanation
from .gradient import gradient, value_and_gradient

__all__ = ["METHODS", "Explanation", "gradient", "value_and_gradient"]
