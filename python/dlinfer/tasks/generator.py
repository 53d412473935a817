"""`Generator`: a GAN generator exported by dlinfer's training tools.

Latent vectors in, samples out: images (``dcgan_mnist``) or points (``gan_1d``).
The latent size and distribution come from the model's metadata, so sampling is
one call, and a seed makes it repeatable.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..checks import check_allocation, check_int
from ..errors import InputError, InputShapeError, SpecError
from ..runtime.model import Model
from ._open import open_for_task

__all__ = ["Generator", "image_grid"]


def image_grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile a batch of images (N, H, W[, C]) with values in [0, 1] into one uint8 image.

    Returns (rows*(H+pad)-pad, cols*(W+pad)-pad[, C]) pixels; gaps are black.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or len(images) == 0:
        raise InputShapeError(
            f"image_grid needs a non-empty batch (N, H, W) or (N, H, W, C), got {images.shape}"
        )
    pad = check_int(pad, "pad", min=0, max=1024)
    n, h, w = images.shape[:3]
    cols = math.ceil(math.sqrt(n)) if cols is None else check_int(cols, "cols", min=1)
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + pad) - pad, cols * (w + pad) - pad, *images.shape[3:]), np.uint8)
    pixels = np.clip(np.rint(images.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = pixels[i]
    return grid


class Generator:
    """Sample from a generator model (spec task ``generation``).

    Args:
        model: a path to the ``.onnx`` file, or a :class:`Model`.
        device, threads, **model_options: passed to :class:`Model` when given a path.

    Example::

        gen = dlinfer.Generator("artifacts/dcgan_mnist.onnx")
        digits = gen.generate(16, seed=0)          # (16, 28, 28, 1) floats in [0, 1]
        gen.save_grid("digits.png", n=64, seed=0)  # an 8x8 PNG grid
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Model,
        device: str = "cpu",
        threads: int | None = None,
        **model_options: Any,
    ) -> None:
        self.model, spec = open_for_task(
            model, device, threads, model_options, tasks=("generation",), role="generator",
            export_hint="dlinfer export --task generation",
        )
        if len(self.model.inputs) != 1:
            raise SpecError(f"{self.model.path} takes the inputs "
                            f"{[i.name for i in self.model.inputs]}; a Generator feeds one "
                            "latent input, so use dlinfer.Model for it")
        size = spec.extra.get("latent_size", self.model.input.shape[-1])
        if not isinstance(size, int) or size < 1:
            raise SpecError(f"{self.model.path}: latent size {size!r} is not a positive integer")
        distribution = spec.extra.get("latent_distribution", "normal")
        if distribution not in ("normal", "uniform"):
            raise SpecError(f"{self.model.path}: unknown latent distribution {distribution!r}")
        self.spec = spec
        self.latent_size: int = size
        self.latent_distribution: str = distribution

    @property
    def produces_images(self) -> bool:
        """True when samples are images (N, H, W, C) rather than vectors."""
        tensor = next((o for o in self.model.outputs if o.name == self.spec.output.name),
                      self.model.outputs[0])
        return self.spec.output.kind == "images" or len(tensor.shape) == 4

    def latent(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` latent vectors (float32) from the model's latent distribution."""
        n = check_int(n, "n", min=1)
        rng = np.random.default_rng(seed)
        shape = check_allocation((n, self.latent_size), 8, "latent vectors")  # float64 draws
        if self.latent_distribution == "uniform":
            return rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        return rng.standard_normal(shape, dtype=np.float32)

    def generate(self, n: int | None = None, *, latent: np.ndarray | None = None,
                 seed: int | None = None) -> np.ndarray:
        """Samples for ``latent`` vectors, or for ``n`` fresh ones drawn with ``seed``.

        Images come back as (N, H, W, C) float32 in the generator's output range
        (``[0, 1]`` for the sigmoid DCGAN); points as (N, D).
        """
        if (latent is None) == (n is None):
            raise InputError("give either n (with an optional seed) or latent vectors")
        if latent is None:
            latent = self.latent(n, seed)
        latent = np.asarray(latent)
        if latent.ndim != 2 or latent.shape[1] != self.latent_size:
            raise InputShapeError(
                f"latent vectors must have shape (N, {self.latent_size}), got {latent.shape}"
            )
        out = self.model.run(latent)
        # Several outputs: the samples are the spec's primary output.
        return out[self.spec.output.name] if isinstance(out, dict) else out

    __call__ = generate

    def save_grid(self, path: str | os.PathLike[str], n: int = 64, *, seed: int | None = 0,
                  cols: int | None = None, latent: np.ndarray | None = None) -> np.ndarray:
        """Generate ``n`` images (or use ``latent``) and save them as one PNG grid.

        Returns the grid's uint8 pixels.
        """
        from PIL import Image

        if not self.produces_images:
            raise SpecError(
                f"{self.model.path} generates {self.spec.output.kind} vectors, not images; "
                "use generate() and plot the points"
            )
        images = self.generate(latent=latent) if latent is not None else self.generate(n, seed=seed)
        grid = image_grid(images, cols)
        Image.fromarray(grid).save(os.fspath(path))
        return grid

    def __repr__(self) -> str:
        return (f"Generator({self.model.path!r}, latent_size={self.latent_size}, "
                f"device={self.model.device!r})")
