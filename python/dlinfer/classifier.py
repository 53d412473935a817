"""`Classifier`: images in, labelled predictions out, driven by the model's spec."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SpecError
from .images import as_batch
from .model import Model

__all__ = ["Candidate", "Classifier", "Prediction"]


@dataclass(frozen=True)
class Candidate:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The top-1 answer for one image, with the top-k candidates in ``top``."""

    label: str
    index: int
    probability: float
    top: tuple[Candidate, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "top": [c.__dict__ for c in self.top],
        }


class Classifier:
    """An image classifier exported by dlinfer's training tools.

    ``images`` may be file paths, PIL images, uint8 pixel arrays, or float arrays
    already scaled like ``pixels * spec.scale``; one image or a batch.  The model's
    metadata decides the size, colour mode and normalization, so callers never
    normalize by hand.

    Args:
        model: a path to the ``.onnx`` file, or a :class:`Model`.
        device, threads, **model_options: passed to :class:`Model` when given a path.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Model,
        device: str = "cpu",
        threads: int | None = None,
        **model_options: Any,
    ) -> None:
        self.model = (
            model if isinstance(model, Model) else Model(model, device, threads, **model_options)
        )
        spec = self.model.spec
        if spec is None:
            raise SpecError(
                f"{self.model.path} has no dlinfer metadata; export it with "
                "`python -m training export`, or use dlinfer.Model directly"
            )
        if spec.task not in ("classification", "binary_classification"):
            raise SpecError(f"{self.model.path} is a {spec.task} model, not a classifier")
        if spec.input.kind != "image":
            raise SpecError(f"{self.model.path} does not take images (input kind {spec.input.kind})")
        self.spec = spec
        self.labels = list(spec.labels)
        self.threads = threads

    def preprocess(self, images: Any) -> np.ndarray:
        """The float32 batch the model will see for ``images``."""
        return as_batch(images, self.spec.input, self.threads)

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities, shape (N, number of labels)."""
        out = np.asarray(self.model.run(self.preprocess(images)), dtype=np.float32)
        if self.spec.task == "binary_classification":
            # A single sigmoid unit is P(labels[1]); expand to both classes.
            p = out.reshape(len(out), -1)[:, :1]
            return np.concatenate([1.0 - p, p], axis=1)
        return out.reshape(len(out), -1)

    def predict(self, images: Any, top_k: int = 1) -> list[Prediction]:
        """One :class:`Prediction` per image, in input order."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        proba = self.predict_proba(images)
        k = min(top_k, proba.shape[1])
        results = []
        for row in proba:
            if self.spec.task == "binary_classification":
                first = int(row[1] >= self.spec.threshold)
                order = [first, 1 - first][:k]
            else:
                # Stable sort: ties resolve to the lower class index, like argmax.
                order = np.argsort(-row, kind="stable")[:k].tolist()
            top = tuple(Candidate(self.labels[i], int(i), float(row[i])) for i in order)
            results.append(Prediction(top[0].label, top[0].index, top[0].probability, top))
        return results

    __call__ = predict

    def __repr__(self) -> str:
        return f"Classifier({self.model.path!r}, labels={len(self.labels)}, device={self.model.device!r})"
