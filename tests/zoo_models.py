"""Zoo models with seeded random weights, exported once per test session.

Building and converting the 12 models is most of what the zoo tests cost, so every
test file shares this cache instead of exporting again.  Inputs are real data
(MNIST digits, sunspots windows) or representative data (digits upscaled to RGB
for the 150x150 convnets, the generated token task, normal latent vectors).
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

# Small enough for the default run (VGG16 at 150x150 is a slow test); VGG16's
# convolutions are the same at any size, only the Flatten width changes.
VGG_TEST_SIZE = 32
BATCH = 64


@dataclass(frozen=True)
class Exported:
    name: str
    keras_model: Any
    onnx_path: str
    x: np.ndarray  # BATCH model inputs
    spec: dict[str, Any]  # the to_onnx keyword arguments used


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails, as on an offline machine."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@functools.cache
def _folder() -> str:
    return tempfile.mkdtemp(prefix="dlinfer-zoo-")


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,000 held-out offline MNIST digits, uint8 (N, 28, 28), and labels."""
    from training.data import load_mnist

    split = load_mnist("mnist5k")
    return split.x_test, split.y_test


def rgb_digits(size: int, n: int = BATCH) -> np.ndarray:
    """Real digits upscaled to size x size RGB, float32 pixels in [0, 255]."""
    from PIL import Image

    out = np.empty((n, size, size, 3), np.float32)
    for i, d in enumerate(digits()[0][:n]):
        out[i] = np.asarray(Image.fromarray(d).resize((size, size)).convert("RGB"), np.float32)
    return out


def _inputs(name: str, model: Any) -> np.ndarray:
    from training import data as datasets
    from training import zoo

    entry = zoo.ZOO[name]
    if entry.kind == "pixels":
        return (digits()[0][:BATCH, :, :, None] / np.float32(255)).astype(np.float32)
    if entry.kind == "folder":
        size = int(model.inputs[0].shape[1])
        mean = np.asarray(entry.spec.get("mean", (0.0,)), np.float32)
        return rgb_digits(size) - mean
    if entry.kind == "series":
        split = datasets.series_split("sunspots", 3)
        x = np.concatenate([split.x_train, split.x_test])[-BATCH:]
        return x.reshape((-1, *model.inputs[0].shape[1:]))
    if entry.kind == "tokens":
        return datasets.synthetic_tokens(n=BATCH * 2).x_train[:BATCH]
    latent = int(model.inputs[0].shape[1])
    return np.random.default_rng(7).standard_normal((BATCH, latent), dtype=np.float32)


def build(name: str, **kwargs: Any) -> Any:
    from training import zoo
    from training._tf import keras

    keras.utils.set_random_seed(0)
    if name == "vgg16_transfer":
        kwargs.setdefault("image_size", VGG_TEST_SIZE)
    return zoo.ZOO[name].build(**kwargs)


def spec_for(name: str) -> dict[str, Any]:
    """The export arguments train() would use with the default data."""
    from training import zoo

    entry = zoo.ZOO[name]
    spec = dict(entry.spec)
    if entry.kind == "folder":
        spec["labels"] = ("ankle_boot", "sneaker")
        if name == "small_convnet":
            spec.update(task="binary_classification", threshold=0.5)
        else:
            spec["task"] = "classification"
    return spec


@functools.cache
def exported(name: str) -> Exported:
    """Zoo model ``name`` with seeded random weights, exported to ONNX (cached)."""
    from dlinfer.export import to_onnx

    model = build(name)
    spec = spec_for(name)
    path = os.path.join(_folder(), f"{name}.onnx")
    to_onnx(model, path, name=name, **spec)
    return Exported(name, model, path, _inputs(name, model), spec)
