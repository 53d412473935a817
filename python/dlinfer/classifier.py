"""`Classifier`: images in, labelled predictions out, driven by the model's spec."""

from __future__ import annotations

import os
from collections.abc import Sequence
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
        return self.run_batch(self.preprocess(images))

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch :meth:`preprocess` already built."""
        out = np.asarray(self.model.run(batch), dtype=np.float32)
        if self.spec.task == "binary_classification":
            # A single sigmoid unit is P(labels[1]); expand to both classes.
            p = out.reshape(len(out), -1)[:, :1]
            return np.concatenate([1.0 - p, p], axis=1)
        return out.reshape(len(out), -1)

    def predict(self, images: Any, top_k: int = 1) -> list[Prediction]:
        """One :class:`Prediction` per image, in input order."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        return self.postprocess(self.predict_proba(images), top_k)

    def postprocess(self, proba: np.ndarray, top_k: int | Sequence[int] = 1) -> list[Prediction]:
        """Predictions from (N, labels) probabilities; ``top_k`` for all rows or one per row."""
        ks = [int(top_k)] * len(proba) if np.ndim(top_k) == 0 else [int(k) for k in top_k]
        if len(ks) != len(proba) or any(k < 1 for k in ks):
            raise ValueError(f"top_k must be >= 1 for each of the {len(proba)} rows, got {top_k}")
        kmax = min(max(ks, default=1), proba.shape[1])
        if self.spec.task == "binary_classification":
            first = (proba[:, 1] >= self.spec.threshold).astype(np.int64)
            orders = np.stack([first, 1 - first], axis=1)[:, :kmax].tolist()
        else:
            # Stable sort: ties resolve to the lower class index, like argmax.
            orders = np.argsort(-proba, axis=1, kind="stable")[:, :kmax].tolist()
        rows = proba.tolist()
        results = []
        for row, order, k in zip(rows, orders, ks, strict=True):
            top = tuple(Candidate(self.labels[i], i, row[i]) for i in order[:k])
            results.append(Prediction(top[0].label, top[0].index, top[0].probability, top))
        return results

    __call__ = predict

    def __repr__(self) -> str:
        return f"Classifier({self.model.path!r}, labels={len(self.labels)}, device={self.model.device!r})"
