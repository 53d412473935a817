"""dlinfer.Generator on generators built with onnx.helper (seeded random weights, no TF).

Each is a stack of dense layers with the spec an exported GAN generator carries, so
onnx_models.mlp_forward is its reference.  Keras parity of the real zoo generators
is checked in test_zoo_parity.
"""

from __future__ import annotations

from dataclasses import dataclass

import dlinfer
import numpy as np
import pytest
from onnx_models import Dense, build_mlp, generator_spec, mlp_forward, save
from reference import assert_close

ATOL = 1e-5


@dataclass(frozen=True)
class GeneratorModel:
    onnx_path: str
    layers: tuple[Dense, ...]
    x: np.ndarray  # latent vectors to run

    def reference(self, z: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return mlp_forward(z, self.layers).reshape(len(z), *shape).astype(np.float32)


def dense(rng, n_in: int, n_out: int, activation: str | None) -> Dense:
    w = rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)).astype(np.float32)
    return Dense(w, rng.normal(0, 0.1, n_out).astype(np.float32), activation)


@pytest.fixture(scope="module")
def dcgan(tmp_path_factory):
    """latent(100) -> Dense(784, sigmoid) -> (28, 28, 1) images in [0, 1]."""
    rng = np.random.default_rng(100)
    layers = (dense(rng, 100, 784, "sigmoid"),)
    proto = build_mlp("dcgan_dense", (None, 100), "images", layers, output_shape=(28, 28, 1),
                      input_name="latent")
    spec = generator_spec("dcgan_dense", 100, "images", "images")
    return GeneratorModel(save(proto, spec, tmp_path_factory.mktemp("dcgan")), layers,
                          rng.standard_normal((64, 100), dtype=np.float32))


@pytest.fixture(scope="module")
def gan_1d(tmp_path_factory):
    """latent(5) -> Dense(15, relu) -> Dense(2): (x, y) points, as the zoo's gan_1d."""
    rng = np.random.default_rng(5)
    layers = (dense(rng, 5, 15, "relu"), dense(rng, 15, 2, None))
    proto = build_mlp("gan_1d", (None, 5), "value", layers, input_name="latent")
    path = save(proto, generator_spec("gan_1d", 5, "value", "value"),
                tmp_path_factory.mktemp("gan_1d"))
    return GeneratorModel(path, layers, rng.standard_normal((64, 5), dtype=np.float32))


def test_generator_reads_latent_size_from_metadata(dcgan, gan_1d):
    assert dlinfer.Generator(dcgan.onnx_path).latent_size == 100
    g = dlinfer.Generator(gan_1d.onnx_path)
    assert g.latent_size == 5 and not g.produces_images


def test_seeded_sampling_is_repeatable_and_matches_the_reference(dcgan):
    g = dlinfer.Generator(dcgan.onnx_path)
    a, b = g.generate(6, seed=3), g.generate(6, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 28, 28, 1) and a.dtype == np.float32
    assert not np.array_equal(a, g.generate(6, seed=4))
    latent = g.latent(6, seed=3)
    np.testing.assert_array_equal(latent, np.random.default_rng(3).standard_normal(
        (6, 100), dtype=np.float32))  # the metadata's normal distribution, seeded
    assert_close(a, dcgan.reference(latent, (28, 28, 1)), atol=ATOL)
    assert 0.0 <= a.min() and a.max() <= 1.0  # sigmoid output


def test_generate_from_given_latents(gan_1d):
    g = dlinfer.Generator(gan_1d.onnx_path)
    z = gan_1d.x[:10]
    points = g.generate(latent=z)
    assert points.shape == (10, 2)
    assert_close(points, gan_1d.reference(z, (2,)), atol=ATOL)


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


def test_errors_are_clear(dcgan, gan_1d, mnist_onnx, tmp_path):
    g = dlinfer.Generator(dcgan.onnx_path)
    with pytest.raises(dlinfer.InputShapeError, match=r"\(N, 100\)"):
        g.generate(latent=np.zeros((2, 5), np.float32))
    with pytest.raises(dlinfer.InputError, match="either n"):
        g.generate(2, latent=np.zeros((2, 100), np.float32))
    with pytest.raises(dlinfer.InputError, match="n must be an integer >= 1, got 0"):
        g.generate(0)
    with pytest.raises(dlinfer.InputTypeError, match="n must be an integer, got '2'"):
        g.generate("2")
    with pytest.raises(dlinfer.SpecError, match="not images"):
        dlinfer.Generator(gan_1d.onnx_path).save_grid(tmp_path / "x.png")
    with pytest.raises(dlinfer.SpecError, match="not a generator"):
        dlinfer.Generator(mnist_onnx)
    with pytest.raises(dlinfer.SpecError, match="not a classifier"):
        dlinfer.Classifier(dcgan.onnx_path)
