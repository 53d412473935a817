"""What a model is for: :class:`Classifier`, :class:`Generator`, and their predictions."""

from __future__ import annotations

from .classifier import Classifier
from .generator import Generator, image_grid
from .predictions import Candidate, Prediction, top_k_predictions

__all__ = ["Candidate", "Classifier", "Generator", "Prediction", "image_grid",
           "top_k_predictions"]
