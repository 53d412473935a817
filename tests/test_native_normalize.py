"""normalize_u8_to_f32_nhwc against the float64 NumPy reference.

The kernel looks up a table computed in float64 and rounded once, so it must
match the reference exactly (tolerance 0): any difference is a bug, not noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from dlinfer import _native
from reference import assert_close, normalize_u8_to_f32_nhwc, seed_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CASES = [
    # (shape, scale, mean, std): large enough that 4 threads get 4 chunks (64k pixels each)
    ((300, 28, 28, 1), 1 / 255, (0.0,), (1.0,)),
    ((300, 28, 28, 1), 1 / 255, (0.1307,), (0.3081,)),
    ((5, 160, 131, 3), 1 / 255, IMAGENET_MEAN, IMAGENET_STD),
    ((3, 200, 151, 4), 2.0, (1.0, 2.0, 3.0, 4.0), (0.5, 1.5, 2.5, 3.5)),
    ((1, 1, 1, 1), 1.0, (0.0,), (1.0,)),
    ((1, 1, 7, 3), -1 / 127.5, (-1.0,), (1.0,)),
]
IDS = ["mnist", "mnist-norm", "imagenet-rgb-odd-width", "rgba", "1px", "1x7-negative-scale"]


def _pixels(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("threads", [1, 2, 4], ids=lambda t: f"threads={t}")
@pytest.mark.parametrize(("shape", "scale", "mean", "std"), CASES, ids=IDS)
def test_matches_reference_for_every_thread_count(shape, scale, mean, std, threads):
    seed = seed_of(shape, threads)
    x = _pixels(shape, seed)
    out = np.full(shape, np.nan, dtype=np.float32)
    result = _native.normalize_u8_to_f32_nhwc(x, out, scale, list(mean), list(std), threads)
    assert result is out or np.shares_memory(result, out)
    assert_close(out, normalize_u8_to_f32_nhwc(x, scale, mean, std), context=f"seed={seed}")


@pytest.mark.parametrize(("shape", "scale", "mean", "std"), CASES, ids=IDS)
def test_fast_kernel_equals_scalar_oracle(shape, scale, mean, std):
    x = _pixels(shape, 7)
    fast = _native.normalize_u8_to_f32_nhwc(x, np.empty(shape, np.float32), scale, list(mean),
                                            list(std), 0)
    slow = _native.normalize_u8_to_f32_nhwc_scalar(x, np.empty(shape, np.float32), scale,
                                                   list(mean), list(std))
    assert_close(fast, slow)


def test_every_byte_value_in_every_channel():
    x = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=-1).reshape(1, 16, 16, 3)
    out = _native.normalize_u8_to_f32_nhwc(x, np.empty(x.shape, np.float32), 1 / 255,
                                           list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert_close(out, normalize_u8_to_f32_nhwc(x, 1 / 255, IMAGENET_MEAN, IMAGENET_STD))


def test_non_contiguous_input_is_read_correctly():
    base = _pixels((4, 30, 40, 3), 3)
    view = base[::2, 1:, ::-2, :]  # strided, offset and reversed
    assert not view.flags.c_contiguous
    out = _native.normalize_u8_to_f32_nhwc(view, np.empty(view.shape, np.float32), 1 / 255,
                                           [0.5], [0.25], 2)
    assert_close(out, normalize_u8_to_f32_nhwc(view, 1 / 255, [0.5], [0.25]))


@pytest.mark.parametrize(
    ("images", "out", "mean", "std", "message"),
    [
        (np.zeros((1, 2, 2, 1), np.float32), np.zeros((1, 2, 2, 1), np.float32), [0.0], [1.0],
         "images must have dtype uint8, got float32"),
        (np.zeros((1, 2, 2, 1), np.int64), np.zeros((1, 2, 2, 1), np.float32), [0.0], [1.0],
         "images must have dtype uint8, got int64"),
        (np.zeros((2, 2, 1), np.uint8), np.zeros((2, 2, 1), np.float32), [0.0], [1.0],
         "images must have rank 4"),
        (np.zeros((1, 2, 2, 1), np.uint8), np.zeros((1, 2, 3, 1), np.float32), [0.0], [1.0],
         "out must have the images' shape (1, 2, 2, 1)"),
        (np.zeros((1, 2, 2, 1), np.uint8), np.zeros((1, 2, 2, 1), np.float64), [0.0], [1.0],
         "out must have dtype float32"),
        (np.zeros((1, 2, 2, 1), np.uint8), np.zeros((1, 2, 4, 1), np.float32)[:, :, ::2],
         [0.0], [1.0], "out must be C-contiguous"),
        (np.zeros((1, 2, 2, 5), np.uint8), np.zeros((1, 2, 2, 5), np.float32), [0.0], [1.0],
         "1 to 4 channels, got 5"),
        (np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 2, 2, 3), np.float32), [0.0, 1.0],
         [1.0], "mean has 2 values but the images have 3 channels"),
        (np.zeros((1, 2, 2, 1), np.uint8), np.zeros((1, 2, 2, 1), np.float32), [0.0], [0.0],
         "std[0] must be finite and non-zero"),
        ([[1]], np.zeros((1, 2, 2, 1), np.float32), [0.0], [1.0], "images must be a numpy array"),
    ],
    ids=["float-in", "int64-in", "rank3", "out-shape", "out-float64", "out-strided",
         "5-channels", "mean-length", "std-zero", "list-in"],
)
def test_bad_arguments_raise_value_error(images, out, mean, std, message):
    with pytest.raises(ValueError, match=_escape(message)):
        _native.normalize_u8_to_f32_nhwc(images, out, 1 / 255, mean, std, 1)


def test_read_only_output_is_refused():
    out = np.zeros((1, 2, 2, 1), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        _native.normalize_u8_to_f32_nhwc(np.zeros((1, 2, 2, 1), np.uint8), out, 1.0, [0.0],
                                         [1.0], 1)


def _escape(text: str) -> str:
    import re

    return re.escape(text)
