"""The training CLI and data sources, offline."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_list_shows_mnist_cnn_with_its_parameter_count():
    proc = subprocess.run([sys.executable, "-m", "training", "list"], capture_output=True,
                          text=True, timeout=300, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("mnist_cnn"))
    assert "93,322" in line


def test_zoo_models_have_the_workshop_parameter_counts():
    from training import zoo

    for entry in zoo.ZOO.values():
        assert entry.build().count_params() == entry.params, entry.name


def test_mnist5k_split_is_fixed_and_disjoint():
    from training.data import load_mnist

    a, b = load_mnist("mnist5k"), load_mnist("mnist5k")
    assert a.x_train.shape == (4000, 28, 28) and a.x_test.shape == (1000, 28, 28)
    assert a.x_train.dtype == a.x_test.dtype == "uint8"
    assert (a.y_test == b.y_test).all() and (a.x_test == b.x_test).all()
    assert sorted(set(a.y_test.tolist())) == list(range(10))
    train_rows = {r.tobytes() for r in a.x_train}
    assert not any(r.tobytes() in train_rows for r in a.x_test)


def test_full_mnist_without_network_fails_clearly(monkeypatch):
    from training import data
    from training._tf import keras

    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(data.DataUnavailableError, match="internet access or a cached copy"):
        data.load_mnist("full")
