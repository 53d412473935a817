from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mnist_trained(tmp_path_factory):
    """The MNIST CNN trained for 1 epoch on the offline digits, exported to ONNX.

    One epoch takes a few seconds and already classifies well above chance, which
    makes argmax agreement a meaningful check.  Imports TensorFlow.
    """
    from training.train import train

    out = tmp_path_factory.mktemp("mnist_cnn")
    return train("mnist_cnn", epochs=1, out=str(out), verbose=0, log=lambda *_: None)


@pytest.fixture(scope="session")
def mnist_onnx(mnist_trained) -> str:
    return mnist_trained.onnx_path


@pytest.fixture(scope="session")
def digit_pngs(mnist_trained, tmp_path_factory) -> tuple[list[str], np.ndarray]:
    """Ten held-out digits as PNG files, with their true labels."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for i in range(10):
        path = os.path.join(folder, f"digit_{i}.png")
        Image.fromarray(mnist_trained.split.x_test[i]).save(path)
        paths.append(path)
    return paths, mnist_trained.split.y_test[:10]
