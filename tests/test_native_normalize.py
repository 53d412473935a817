"""normalize_u8_to_f32_nhwc against the float64 NumPy reference, and against the
fused preprocessing pass bit for bit.

The kernel evaluates the one normalization rule of the native code
(native/src/preprocess/affine.hpp), which the fused preprocess pass evaluates too:
fma(x, a, b) in float32, with a = float32(scale / std) and b = float32(-mean / std)
each rounded once from float64.  It is not the exactly rounded float64 answer, and
not always within one ulp of it: rounding a and b costs up to 2^-24 * (|x a| + |b|),
the fma and the reference's own rounding to float32 up to 2^-24 * |result| each, and
where x * scale is close to mean the result is small while those errors are not
(cancellation).  With |result| <= |x a| + |b| the error is at most
3 * 2^-24 * (|x a| + |b|) plus second-order terms; the tests allow 2^-22 * (|x a| + |b|)
per element (``_rule_atol``).  Against the scalar oracle (same rule, no table, one
thread) and the fused pass the comparison is exact.
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


def _rule_atol(x, scale, mean, std):
    """Per-element bound on |kernel - float64 reference|; see the module docstring."""
    c = x.shape[-1]
    std64 = np.broadcast_to(np.asarray(std, np.float32).astype(np.float64), (c,))
    mean64 = np.broadcast_to(np.asarray(mean, np.float32).astype(np.float64), (c,))
    a = np.float64(np.float32(scale)) / std64
    return 2.0**-22 * (np.abs(x.astype(np.float64) * a) + np.abs(mean64 / std64))


@pytest.mark.parametrize("threads", [1, 2, 4], ids=lambda t: f"threads={t}")
@pytest.mark.parametrize(("shape", "scale", "mean", "std"), CASES, ids=IDS)
def test_matches_reference_for_every_thread_count(shape, scale, mean, std, threads):
    seed = seed_of(shape, threads)
    x = _pixels(shape, seed)
    out = np.full(shape, np.nan, dtype=np.float32)
    result = _native.normalize_u8_to_f32_nhwc(x, out, scale, list(mean), list(std), threads)
    assert result is out or np.shares_memory(result, out)
    assert_close(out, normalize_u8_to_f32_nhwc(x, scale, mean, std),
                 atol=_rule_atol(x, scale, mean, std), context=f"seed={seed}")


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
    assert_close(out, normalize_u8_to_f32_nhwc(x, 1 / 255, IMAGENET_MEAN, IMAGENET_STD),
                 atol=_rule_atol(x, 1 / 255, IMAGENET_MEAN, IMAGENET_STD))


def test_non_contiguous_input_is_read_correctly():
    base = _pixels((4, 30, 40, 3), 3)
    view = base[::2, 1:, ::-2, :]  # strided, offset and reversed
    assert not view.flags.c_contiguous
    out = _native.normalize_u8_to_f32_nhwc(view, np.empty(view.shape, np.float32), 1 / 255,
                                           [0.5], [0.25], 2)
    assert_close(out, normalize_u8_to_f32_nhwc(view, 1 / 255, [0.5], [0.25]),
                 atol=_rule_atol(view, 1 / 255, [0.5], [0.25]))


VGG16 = dict(scale=1.0, mean=(123.68, 116.779, 103.939), std=(58.393, 57.12, 57.375))
FUSED_CASES = {
    # name: (channels, scale, mean, std)
    "vgg16-rgb": (3, VGG16["scale"], VGG16["mean"], VGG16["std"]),
    "mnist-gray": (1, 1 / 255, (0.1307,), (0.3081,)),
    "vgg16-gray": (1, VGG16["scale"], VGG16["mean"][:1], VGG16["std"][:1]),
}


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("shape", [(9, 13), (37, 150)], ids=["9x13", "37x150-streamed"])
@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_preprocess_at_identity_size_equals_normalize_bit_for_bit(case, shape, layout):
    # One rule, two entry points: a model fed by dlinfer.preprocess and one fed by
    # normalize_u8_to_f32_nhwc see the same float32 bits.  Bilinear at the image's
    # own size, no crop: every output pixel is a source pixel.  150 columns take the
    # streamed stores; 3 channels take the fused pass (on AVX2 CPUs), 1 the copy rows.
    channels, scale, mean, std = FUSED_CASES[case]
    x = _pixels((1, *shape, channels), 11)
    x[0, 0, : min(shape[1], 256)] = np.arange(min(shape[1], 256))[:, None]  # many bytes
    color = "GRAY" if channels == 1 else "RGB"
    want = _native.normalize_u8_to_f32_nhwc(x, np.empty(x.shape, np.float32), scale,
                                            list(mean), list(std), 1)
    if layout == "NCHW":
        want = np.ascontiguousarray(want.transpose(0, 3, 1, 2))
    for threads in (1, 2):
        out = np.full(want.shape, np.nan, np.float32)
        got = _native.preprocess_u8_batch(
            [x[0]], out, [color], "bilinear", "stretch", 1.0, 0.0, scale, list(mean),
            list(std), layout, color, threads)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                      err_msg=f"{case} {layout} threads={threads}")


def test_letterbox_border_is_normalized_like_a_pixel_of_that_value():
    x = np.full((1, 4, 8, 3), 114, np.uint8)
    want = _native.normalize_u8_to_f32_nhwc(x[:, :1, :1], np.empty((1, 1, 1, 3), np.float32),
                                            1.0, list(VGG16["mean"]), list(VGG16["std"]), 1)
    out = np.empty((1, 8, 8, 3), np.float32)
    _native.preprocess_u8_batch([x[0]], out, ["RGB"], "bilinear", "letterbox", 1.0, 114.0, 1.0,
                                list(VGG16["mean"]), list(VGG16["std"]), "NHWC", "RGB", 1)
    np.testing.assert_array_equal(out.view(np.uint32),
                                  np.broadcast_to(want, out.shape).view(np.uint32))


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
