"""Every offline data source loads without network; every online one fails clearly."""

from __future__ import annotations

import os

import numpy as np
import pytest
from optional import HAVE_TENSORFLOW, tensorflow
from reference import assert_close
from zoo_models import no_network  # noqa: F401 - a fixture

if HAVE_TENSORFLOW:
    from training import data
    from training._tf import keras

pytestmark = tensorflow

HAVE_DEBIAN_FASHION = HAVE_TENSORFLOW and all(
    os.path.isfile(os.path.join(data.DEBIAN_FASHION_DIR, f)) for f in data.FASHION_FILES
)
needs_fashion = pytest.mark.skipif(
    not HAVE_DEBIAN_FASHION,
    reason="Debian's dataset-fashion-mnist is not installed (make fashion-mnist)",
)


@pytest.fixture
def keras_home(monkeypatch, tmp_path):
    """A fresh, empty Keras cache, so nothing cached earlier can hide a missing file."""
    from keras.src.backend import config

    home = tmp_path / "keras-home"
    monkeypatch.setattr(config, "keras_home", lambda: str(home))
    return home


def _offline_loader(*args, **kwargs):
    raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")


@needs_fashion
@pytest.mark.usefixtures("no_network")
def test_fashion_offline_links_debian_files_into_the_keras_cache(keras_home):
    split = data.load_fashion()
    assert split.x_train.shape == (60000, 28, 28) and split.x_test.shape == (10000, 28, 28)
    assert split.x_train.dtype == np.uint8
    assert sorted(set(split.y_test.tolist())) == list(range(10))
    assert "Debian" in split.source
    linked = keras_home / "datasets" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    assert linked.is_symlink()
    assert os.path.realpath(linked).startswith(data.DEBIAN_FASHION_DIR)
    assert len(data.FASHION_LABELS) == 10


@needs_fashion
@pytest.mark.usefixtures("no_network")
def test_fashion_offline_with_a_read_only_keras_cache_reads_debian_files(monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(data, "link_debian_fashion", read_only)
    split = data.load_fashion()
    assert split.x_train.shape == (60000, 28, 28) and split.y_test.shape == (10000,)
    assert "Debian" in split.source


def test_fashion_without_debian_files_or_network_says_what_to_install(
        monkeypatch, tmp_path, keras_home):
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", str(tmp_path / "missing"))
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", _offline_loader)
    with pytest.raises(data.DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion()
    with pytest.raises(data.DataUnavailableError, match="internet access"):
        data.load_fashion("keras")


@needs_fashion
@pytest.mark.usefixtures("no_network")
def test_make_images_writes_a_real_folder_that_the_keras_loader_reads(tmp_path):
    from PIL import Image

    root = data.make_images(str(tmp_path / "imgs"), ("sneaker", "ankle_boot", "bag"),
                            per_class=6, size=40)
    assert sorted(os.listdir(root)) == ["ankle_boot", "bag", "sneaker"]
    files = sorted(os.listdir(os.path.join(root, "sneaker")))
    assert len(files) == 6 and all(f.endswith(".jpg") for f in files)
    with Image.open(os.path.join(root, "sneaker", files[0])) as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (40, 40)
    train, test, classes = data.load_image_folder(root, (40, 40), batch_size=4)
    assert classes == ("ankle_boot", "bag", "sneaker")
    n = sum(len(y) for _, y in train) + sum(len(y) for _, y in test)
    assert n == 18


def test_make_images_rejects_unknown_classes(tmp_path):
    with pytest.raises(ValueError, match="classes must be two or more"):
        data.make_images(str(tmp_path), ("sneaker", "unicorn"))


def test_missing_image_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(data.DataUnavailableError, match="make-images"):
        data.load_image_folder(str(tmp_path / "nope"), (32, 32))


@pytest.mark.parametrize("name,length", [("sunspots", 309), ("co2", 526)])
@pytest.mark.usefixtures("no_network")
def test_series_load_offline_and_window_chronologically(name, length):
    values = data.load_series(name)
    assert values.dtype == np.float32 and len(values) == length and np.isfinite(values).all()
    split = data.series_split(name, 4)
    x = np.concatenate([split.x_train, split.x_test])
    y = np.concatenate([split.y_train, split.y_test])
    np.testing.assert_array_equal(x[10], values[10:14])
    assert y[10] == values[14]
    # chronological: the test windows are the latest ones
    assert len(split.x_test) == round(len(x) * 0.2)
    np.testing.assert_array_equal(split.y_test, values[-len(split.y_test):])


def test_series_errors_are_clear():
    with pytest.raises(ValueError, match="unknown series"):
        data.load_series("tides")
    with pytest.raises(ValueError, match="n_steps"):
        data.series_windows(np.arange(5, dtype=np.float32), 5)


@pytest.mark.usefixtures("no_network")
def test_synthetic_tokens_are_fixed_padded_and_balanced():
    a, b = data.synthetic_tokens(n=400, maxlen=50), data.synthetic_tokens(n=400, maxlen=50)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.dtype == np.int32 and a.x_train.shape == (320, 50)
    assert a.x_train.max() < data.IMDB_WORDS and a.x_train.min() >= 0
    assert (a.x_train[:, 0] == 0).any(), "short reviews are pre-padded with 0"
    assert 0.35 < a.y_train.mean() < 0.65
    # the label is carried by the word sets, so the task is learnable
    positive = ((a.x_train >= 4) & (a.x_train < 14)).any(axis=1)
    np.testing.assert_array_equal(positive, a.y_train.astype(bool))


def test_imdb_without_network_fails_clearly(monkeypatch):
    monkeypatch.setattr(keras.datasets.imdb, "load_data", _offline_loader)
    with pytest.raises(data.DataUnavailableError, match="--data synthetic"):
        data.load_imdb("imdb")


def test_parabola_points():
    p = data.parabola_points(100, np.random.default_rng(0))
    assert p.shape == (100, 2) and np.abs(p[:, 0]).max() <= 0.5
    assert_close(p[:, 1], p[:, 0] ** 2, rtol=1e-7)


def test_vgg16_imagenet_weights_offline_fail_clearly(monkeypatch):
    from training import zoo

    monkeypatch.setattr(zoo.keras.utils, "get_file", _offline_loader)
    with pytest.raises(zoo.WeightsUnavailableError, match="--weights none"):
        zoo.vgg16_base(32, "imagenet")


def test_vgg16_weights_file_missing_fails_clearly(tmp_path):
    from training import zoo

    with pytest.raises(zoo.WeightsUnavailableError, match="cannot load VGG16"):
        zoo.vgg16_base(32, str(tmp_path / "missing.weights.h5"))


def test_vgg16_weights_file_loads_and_is_flipped_to_rgb(tmp_path):
    """--weights PATH: BGR-trained weights come back with block1's input channels reversed."""
    from training import zoo

    keras.utils.set_random_seed(0)
    source = zoo.vgg16_base(32, None)
    path = str(tmp_path / "vgg.weights.h5")
    source.save_weights(path)
    loaded = zoo.vgg16_base(32, path)
    original = source.get_layer("block1_conv1").get_weights()[0]
    flipped = loaded.get_layer("block1_conv1").get_weights()[0]
    np.testing.assert_array_equal(flipped, original[:, :, ::-1, :])
    np.testing.assert_array_equal(loaded.get_layer("block5_conv3").get_weights()[0],
                                  source.get_layer("block5_conv3").get_weights()[0])
