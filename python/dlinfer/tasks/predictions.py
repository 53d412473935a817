"""What a classifier answers: :class:`Prediction` rows with their top-k candidates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_int
from ..errors import InputError

__all__ = ["Candidate", "Prediction", "top_k_predictions"]


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


def top_k_predictions(
    proba: np.ndarray,
    labels: Sequence[str],
    top_k: int | Sequence[int] = 1,
    threshold: float | None = None,
) -> list[Prediction]:
    """Predictions from (N, labels) probabilities; ``top_k`` for all rows or one per row.

    With ``threshold`` the model is a binary classifier: column 1 is P(labels[1])
    and it wins at or above the threshold.  Ties go to the lower class index.
    """
    if np.ndim(top_k) == 0:
        ks = [check_int(top_k, "top_k", min=1)] * len(proba)
    else:  # per row, as a Batcher passes them: checked in full only when one is odd
        ks = list(top_k)
        if not all(type(k) is int and k >= 1 for k in ks):
            ks = [check_int(k, "top_k", min=1) for k in ks]
    if len(ks) != len(proba):
        raise InputError(f"top_k must give one value for each of the {len(proba)} rows, "
                         f"got {len(ks)}")
    kmax = min(max(ks, default=1), proba.shape[1])
    if threshold is not None:
        first = (proba[:, 1] >= threshold).astype(np.int64)
        orders = np.stack([first, 1 - first], axis=1)[:, :kmax].tolist()
    elif kmax == 1 and not np.isnan(proba).any():
        # argmax takes the lower class index on ties, like the stable sort below,
        # at a fifth of its cost (NaN rows take the sort, which puts NaN last).
        orders = proba.argmax(axis=1)[:, None].tolist()
    else:
        # Stable sort: ties resolve to the lower class index, like argmax.
        orders = np.argsort(-proba, axis=1, kind="stable")[:, :kmax].tolist()
    rows = proba.tolist()
    results = []
    # The hot path of a Batcher: one loop, no generator per row, and the frozen
    # dataclasses filled in directly, as their __init__ would, at a third of its
    # cost (it sets each field through object.__setattr__).
    new = object.__new__
    for row, order, k in zip(rows, orders, ks, strict=True):
        i = order[0]
        label, p = labels[i], row[i]
        first = new(Candidate)
        fields = first.__dict__
        fields["label"], fields["index"], fields["probability"] = label, i, p
        top = (first,) if k == 1 else (first, *(Candidate(labels[j], j, row[j])
                                                for j in order[1:k]))
        pred = new(Prediction)
        fields = pred.__dict__
        fields["label"], fields["index"], fields["probability"], fields["top"] = (
            label, i, p, top)
        results.append(pred)
    return results
