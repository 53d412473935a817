"""How a trained generator is scored: the 1D GAN's points against the parabola, the
DCGAN's digits against its discriminator, both on fixed latents so that reports compare."""

from __future__ import annotations

from typing import Any

import dlinfer
import numpy as np

from . import parity

__all__ = ["EVAL_SAMPLES", "EVAL_SEED", "evaluate_dcgan", "evaluate_parabola", "latents",
           "normal"]

# Latent vectors for evaluating generators: fixed, so reports are comparable.
EVAL_SEED = 1234
EVAL_SAMPLES = 1000


def normal(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.standard_normal((n, size), dtype=np.float32)


def latents(n: int, size: int, seed: int) -> np.ndarray:
    return normal(np.random.default_rng(seed), n, size)


def evaluate_parabola(keras_model: Any, onnx_model: dlinfer.Model) -> dict[str, Any]:
    """Mean |y - x^2| of 1,000 generated points, for both Keras and ONNX."""
    z = latents(EVAL_SAMPLES, int(keras_model.inputs[0].shape[1]), EVAL_SEED)
    k, o = parity.run_both(keras_model, onnx_model, z)
    return {
        "keras_mean_abs_error": float(np.mean(np.abs(k[:, 1] - k[:, 0] ** 2))),
        "onnx_mean_abs_error": float(np.mean(np.abs(o[:, 1] - o[:, 0] ** 2))),
        "generated_x_range": [float(k[:, 0].min()), float(k[:, 0].max())],
    }


def evaluate_dcgan(keras_model: Any, onnx_model: dlinfer.Model, discriminator: Any,
                    real: np.ndarray) -> dict[str, Any]:
    """How often the discriminator tells 1,000 real test digits from 1,000 fakes.

    0.5 means the generator fools it completely; 1.0 that its fakes are obvious.
    """
    z = latents(len(real), int(keras_model.inputs[0].shape[1]), EVAL_SEED)
    k, o = parity.run_both(keras_model, onnx_model, z)
    d_real = parity._keras_predict(discriminator, real).reshape(-1) >= 0.5

    def accuracy(fakes: np.ndarray) -> float:
        d_fake = parity._keras_predict(discriminator, fakes).reshape(-1) >= 0.5
        return float((d_real.sum() + (~d_fake).sum()) / (len(d_real) + len(d_fake)))

    return {"keras_discriminator_accuracy": accuracy(k), "onnx_discriminator_accuracy": accuracy(o),
            "psnr_db": parity.psnr(k, o)}
