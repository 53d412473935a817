"""dlinfer.Generator on the exported GAN generators (seeded random weights)."""

from __future__ import annotations

import dlinfer
import numpy as np
import pytest
from zoo_models import exported

pytest.importorskip("tensorflow")

ATOL = 1e-5


@pytest.fixture(scope="module")
def dcgan():
    return exported("dcgan_mnist")


@pytest.fixture(scope="module")
def gan_1d():
    return exported("gan_1d")


def test_generator_reads_latent_size_from_metadata(dcgan, gan_1d):
    assert dlinfer.Generator(dcgan.onnx_path).latent_size == 100
    g = dlinfer.Generator(gan_1d.onnx_path)
    assert g.latent_size == 5 and not g.produces_images


def test_seeded_sampling_is_repeatable_and_matches_keras(dcgan):
    g = dlinfer.Generator(dcgan.onnx_path)
    a, b = g.generate(6, seed=3), g.generate(6, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 28, 28, 1) and a.dtype == np.float32
    assert not np.array_equal(a, g.generate(6, seed=4))
    keras_images = np.asarray(dcgan.keras_model.predict_on_batch(g.latent(6, seed=3)))
    assert np.abs(a - keras_images).max() <= ATOL
    assert 0.0 <= a.min() and a.max() <= 1.0  # sigmoid output


def test_generate_from_given_latents(gan_1d):
    g = dlinfer.Generator(gan_1d.onnx_path)
    z = gan_1d.x[:10]
    points = g.generate(latent=z)
    assert points.shape == (10, 2)
    assert np.abs(points - gan_1d.keras_model.predict_on_batch(z)).max() <= ATOL


def test_save_grid_writes_a_png_of_the_samples(dcgan, tmp_path):
    from PIL import Image

    g = dlinfer.Generator(dcgan.onnx_path)
    path = tmp_path / "grid.png"
    grid = g.save_grid(path, n=10, seed=0, cols=5)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (5 * 30 - 2, 2 * 30 - 2)
        np.testing.assert_array_equal(np.asarray(img), grid)
    first = np.rint(g.generate(1, seed=0)[0, :, :, 0] * 255)
    # the first sample sits in the top-left cell (seed 0 draws the same first vector)
    np.testing.assert_array_equal(grid[:28, :28], first.astype(np.uint8))


def test_image_grid_layout():
    images = np.stack([np.full((2, 3), v, np.float32) for v in (0.0, 0.5, 1.0)])
    grid = dlinfer.image_grid(images, cols=2, pad=1)
    assert grid.shape == (5, 7) and grid.dtype == np.uint8
    assert grid[0, 0] == 0 and grid[0, 4] == 128 and grid[3, 0] == 255 and grid[3, 4] == 0


def test_errors_are_clear(dcgan, gan_1d, tmp_path):
    g = dlinfer.Generator(dcgan.onnx_path)
    with pytest.raises(dlinfer.InputShapeError, match=r"\(N, 100\)"):
        g.generate(latent=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="either n"):
        g.generate(2, latent=np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="n must be >= 1"):
        g.generate(0)
    with pytest.raises(dlinfer.SpecError, match="not images"):
        dlinfer.Generator(gan_1d.onnx_path).save_grid(tmp_path / "x.png")
    with pytest.raises(dlinfer.SpecError, match="not a generator"):
        dlinfer.Generator(exported("mnist_cnn").onnx_path)
    with pytest.raises(dlinfer.SpecError, match="not a classifier"):
        dlinfer.Classifier(dcgan.onnx_path)
