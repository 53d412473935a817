"""dlinfer.preprocess: the fused native pass against the float64 NumPy reference,
against OpenCV and Keras on real photos (bad input, decoding and the spec in
test_preprocess_inputs.py; random calls in test_preprocess_fuzz.py).

Tolerance: 1e-4 absolute after normalization (the kernel computes in float32, the
reference in float64), widened only where normalization magnifies pixel error.
"""

from __future__ import annotations

import os

import dlinfer
import numpy as np
import pytest
import reference as ref
from dlinfer import _native

IMAGENET = ref.IMAGENET
ATOL = ref.PREPROCESS_ATOL

# -- helpers -------------------------------------------------------------------------------


def _image(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


_expected = ref.preprocess_batch


def _call(images, size, *, in_colors, threads=1, dtype="float32", fit="stretch", crop_ratio=1.0,
          **kw):
    """dlinfer.preprocess with the reference's argument names."""
    crop = {"stretch": None, "letterbox": "letterbox", "crop": crop_ratio}[fit]
    assert len(set(in_colors)) == 1, "one input_color per call"
    return dlinfer.preprocess(images, size=size, crop=crop, input_color=in_colors[0],
                              threads=threads, dtype=dtype, **kw)


# Sizes: (list of input (H, W), output (H, W)): down, up, odd, 1xN, Nx1, mixed sizes.
SIZES = {
    "down": ([(61, 83), (40, 40)], (17, 23)),
    "up": ([(5, 7), (9, 4)], (19, 26)),
    "odd-mixed": ([(33, 17), (8, 51)], (13, 29)),
    "1xN-in": ([(1, 37)], (7, 9)),
    "Nx1-out": ([(23, 31)], (11, 1)),
    "1x1-out": ([(12, 9)], (1, 1)),
    "same": ([(16, 20)], (16, 20)),
}
FITS = {"stretch": {"fit": "stretch"}, "center-crop": {"fit": "crop", "crop_ratio": 1.0},
        "crop-0.875": {"fit": "crop", "crop_ratio": 0.875}, "letterbox": {"fit": "letterbox"}}
FIT_CROP = {"stretch": None, "center-crop": "center", "crop-0.875": 0.875,
            "letterbox": "letterbox"}
# (input colour, output colour, layout): every input order and output colour, both layouts.
COLOR_CASES = [("RGB", "RGB", "NCHW"), ("BGR", "RGB", "NHWC"), ("RGBA", "BGR", "NCHW"),
               ("BGRA", "GRAY", "NHWC"), ("GRAY", "RGB", "NHWC"), ("GRAY", "GRAY", "NCHW"),
               ("RGB", "GRAY", "NCHW")]


@pytest.mark.parametrize("fit", list(FITS), ids=list(FITS))
@pytest.mark.parametrize("sizes", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("resize", ["nearest", "bilinear", "area"])
def test_matches_float64_reference(resize, sizes, fit):
    shapes, size = SIZES[sizes]
    for k, (in_color, color, layout) in enumerate(COLOR_CASES):
        seed = ref.seed_of(resize, sizes, fit, k)
        c = ref.CHANNELS[in_color]
        images = [_image((h, w, c), seed + i) for i, (h, w) in enumerate(shapes)]
        norm = IMAGENET if color != "GRAY" else {"mean": (0.5,), "std": (0.25,)}
        kw = dict(resize=resize, layout=layout, color=color, pad=114.0, **FITS[fit], **norm)
        got = _call(images, size, in_colors=[in_color] * len(images), **kw)
        want = _expected(images, size, in_colors=[in_color] * len(images), **kw)
        ref.assert_close(got, want, atol=ATOL,
                         context=f"seed={seed} {in_color}->{color} {layout}")


@pytest.mark.parametrize("fit", list(FITS), ids=list(FITS))
@pytest.mark.parametrize("resize", ["nearest", "bilinear", "area"])
def test_bit_identical_for_threads_1_2_4_and_close_to_scalar_oracle(resize, fit):
    # 9 images of different sizes into 40x48: enough row blocks that 4 threads split
    # images in the middle.
    images = [_image((30 + 7 * i, 90 - 5 * i, 3), i) for i in range(9)]
    kw = dict(size=(40, 48), resize=resize, crop=FIT_CROP[fit], layout="NCHW", pad=7.0,
              **IMAGENET)
    outs = [dlinfer.preprocess(images, threads=t, **kw) for t in (1, 2, 4, 0)]
    for t, o in zip((2, 4, 0), outs[1:]):
        np.testing.assert_array_equal(o, outs[0], err_msg=f"threads={t} differs from threads=1")
    spec = dlinfer.PreprocessSpec(**kw)
    fit_name, ratio = spec._fit()
    oracle = _native.preprocess_u8_batch_scalar(
        images, np.empty_like(outs[0]), ["RGB"] * 9, resize, fit_name, ratio, 7.0, 1 / 255,
        list(IMAGENET["mean"]), list(IMAGENET["std"]), "NCHW", "RGB")
    ref.assert_close(outs[0], oracle, atol=ATOL, context="fast vs scalar oracle")


# The gathered bilinear pass (AVX-512 VBMI CPUs) reads each group of 8 output
# columns from one 128-byte window per source row.  Cases around its limits:
# rows just over and under 128 bytes, windows slid back from the row's end,
# column counts that are not a multiple of 8 or 16, a downscale too steep for
# one window (6.7x, which takes the blend-first pass), crops and letterboxes
# (output columns that start past 0), 4-channel sources, reordered colour,
# NHWC (interleaved in registers), float16 (converted in registers) and a
# strided source.
GATHERED_CASES = {
    # name: (input (H, W), output (H, W), input colour, output colour, crop, layout, dtype)
    "imagenet-down": ((120, 160), (56, 56), "RGB", "RGB", None, "NCHW", "float32"),
    "row-129-bytes": ((30, 43), (20, 21), "RGB", "RGB", None, "NCHW", "float32"),
    "row-126-bytes": ((30, 42), (20, 21), "RGB", "RGB", None, "NCHW", "float32"),
    "row-128-bytes": ((30, 32), (20, 21), "BGRA", "RGB", None, "NCHW", "float32"),
    "tail-of-5": ((48, 200), (37, 77), "BGR", "RGB", None, "NCHW", "float32"),
    "upscale": ((17, 50), (40, 133), "RGBA", "BGR", None, "NCHW", "float32"),
    "too-steep": ((60, 800), (30, 120), "RGB", "RGB", None, "NCHW", "float32"),
    "crop": ((90, 130), (48, 48), "RGB", "BGR", 0.875, "NCHW", "float32"),
    "letterbox": ((90, 200), (64, 64), "BGRA", "RGB", "letterbox", "NCHW", "float32"),
    "nhwc": ((75, 100), (33, 45), "RGB", "RGB", None, "NHWC", "float32"),
    "float16": ((75, 100), (33, 45), "BGR", "RGB", 0.875, "NCHW", "float16"),
    "nhwc-float16": ((75, 100), (33, 45), "RGBA", "BGR", "letterbox", "NHWC", "float16"),
    "strided": ((64, 96), (30, 40), "RGB", "RGB", None, "NCHW", "float32"),
}


def _fill(spec, image, threads, path):
    """One image through the native pass, with the bilinear pass `path`."""
    fit, ratio = spec._fit()
    out = np.empty(spec.batch_shape(1), np.dtype(spec.dtype))
    return _native.preprocess_u8_batch(
        [image], out, [spec.input_color], spec.resize, fit, ratio, spec.pad, spec.scale,
        list(spec.mean), list(spec.std), spec.layout, spec.color, threads, path=path)


@pytest.mark.parametrize("case", list(GATHERED_CASES))
def test_gathered_bilinear_matches_reference_and_blend_first_pass(case):
    (h, w), size, in_color, color, crop, layout, dtype = GATHERED_CASES[case]
    c = ref.CHANNELS[in_color]
    image = _image((h, w, c), 77)
    if case == "strided":
        image = _image((h, 2 * w, c + 1), 77)[:, ::2, :c]
    kw = dict(size=size, resize="bilinear", crop=crop, input_color=in_color, color=color,
              layout=layout, dtype=dtype, pad=3.0, **IMAGENET)
    fit = {None: "stretch", "letterbox": "letterbox"}.get(crop, "crop")
    want = ref.preprocess(image, size, in_color=in_color, color=color, fit=fit,
                          crop_ratio=crop if fit == "crop" else 1.0, pad=3.0, layout=layout,
                          **IMAGENET)[None]
    spec = dlinfer.PreprocessSpec(**kw)
    on = _native.gathered_bilinear()
    gathered = [_fill(spec, image, t, "gathered" if on else "auto") for t in (1, 2, 4)]
    blend_first = _fill(spec, image, 0, "blend_first")
    # The default path ("auto", what dlinfer.preprocess passes) is the gathered one.
    np.testing.assert_array_equal(dlinfer.preprocess([image], **kw), gathered[0])
    for t, got in zip((2, 4), gathered[1:]):
        np.testing.assert_array_equal(got, gathered[0], err_msg=f"threads={t}")
    if dtype == "float16":
        # Both passes round their float32 values once; compare those instead.  Against
        # the reference: float16 spacing is 2e-3 for |x| in [2, 4), so a value may be
        # one spacing off after the reference is rounded too.
        ref.assert_close(gathered[0], want.astype(np.float16), atol=4e-3, context="gathered")
        f32 = dlinfer.preprocess([image], **dict(kw, dtype="float32"))
        np.testing.assert_array_equal(gathered[0], f32.astype(np.float16))
        return
    ref.assert_close(gathered[0], want, atol=ATOL, context=f"gathered={on}", layout=layout)
    ref.assert_close(blend_first, want, atol=ATOL, context="blend-first", layout=layout)


def test_gathered_bilinear_is_used_where_the_cpu_has_vbmi():
    # The cases above compare the gathered pass with the blend-first one only if
    # it ran: on a CPU with AVX-512 VBMI it must be on by default.
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("reads the CPU flags from /proc/cpuinfo")
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split())
    has_vbmi = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vbmi"} <= flags
    assert _native.gathered_bilinear() is has_vbmi


def test_bilinear_path_is_checked():
    image = _image((30, 43, 3), 1)
    spec = dlinfer.PreprocessSpec(size=(20, 21), input_color="RGB")
    with pytest.raises(ValueError, match="path must be one of auto, gathered, blend_first"):
        _fill(spec, image, 1, "fastest")
    if not _native.gathered_bilinear():
        with pytest.raises(ValueError, match="gathered bilinear pass needs AVX-512 VBMI"):
            _fill(spec, image, 1, "gathered")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_float16_is_the_float32_result_rounded(layout):
    images = [_image((50, 70, 3), 1), _image((20, 10, 3), 2)]
    kw = dict(size=(24, 32), layout=layout, **IMAGENET)
    f32 = dlinfer.preprocess(images, **kw)
    f16 = dlinfer.preprocess(images, dtype="float16", **kw)
    assert f16.dtype == np.float16
    np.testing.assert_array_equal(f16, f32.astype(np.float16))
    # The half converter on its edge cases: pixel 1 * scale v gives exactly v.
    # Subnormals, ties, the largest half, overflow to infinity, negatives.
    probe = [0.0, -0.0, 1e-8, 2.98e-8, 5.96e-8, 1e-5, 6.1e-5, 0.1, 1 / 3, 2049.0, 65504.0,
             65519.0, 65520.0, 1e6, -1e6, -0.1]
    # The kernel is called directly: preprocess() refuses a scale that would overflow
    # float16 for pixel 255 (normalization_problem), and these probe pixel 1.
    img = np.ones((1, 1, 1), np.uint8)

    def kernel(v: float, dtype: type) -> np.ndarray:
        out = np.empty((1, 1, 1, 1), dtype)
        return _native.preprocess_u8_batch([img], out, ["GRAY"], "bilinear", "stretch", 1.0,
                                           0.0, v, [0.0], [1.0], "NHWC", "GRAY", 1)

    for v in probe:
        got, want = kernel(v, np.float16), kernel(v, np.float32)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(got, want.astype(np.float16), err_msg=f"value {v}")


def test_non_contiguous_views_read_in_place():
    base = _image((80, 90, 4), 5)
    views = {
        "strided": base[::2, 1::3, :3],
        "flipped": base[::-1, ::-1, :3],
        "channel-reversed": base[5:60, 10:70, 2::-1],  # BGR view of RGB
        "transposed": base[:, :, :3].transpose(1, 0, 2),
        "gray-column": base[:, 7:8, 1:2],
    }
    for name, view in views.items():
        assert not view.flags.c_contiguous, name
        for resize in ("nearest", "bilinear", "area"):
            kw = dict(size=(21, 17), resize=resize, crop=0.875, **(IMAGENET if view.shape[2] == 3
                                                                     else {}))
            kw["color"] = "RGB" if view.shape[2] == 3 else "GRAY"
            got = dlinfer.preprocess([view], threads=2, **kw)
            want = dlinfer.preprocess([np.ascontiguousarray(view)], threads=1, **kw)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {resize}")


def test_batch_array_list_and_out_buffer():
    batch = _image((4, 30, 40, 3), 9)
    out = np.full((6, 3, 16, 16), np.nan, np.float32)
    result = dlinfer.preprocess(batch, size=16, layout="NCHW", out=out[1:5], **IMAGENET)
    assert np.shares_memory(result, out) and np.isnan(out[0]).all() and np.isnan(out[5]).all()
    np.testing.assert_array_equal(out[1:5], dlinfer.preprocess(list(batch), size=16,
                                                               layout="NCHW", **IMAGENET))
    # size=None keeps the images' own size
    same = dlinfer.preprocess(batch, mean=0.5, std=0.5)
    ref.assert_close(same, np.stack([ref.preprocess(b, (30, 40), in_color="RGB", color="RGB",
                                                    mean=(0.5,), std=(0.5,)) for b in batch]),
                     atol=ATOL)


def test_batch_array_views_match_the_list_path():
    # One uint8 batch array goes to the kernel whole (no Python object per image);
    # any strides must give exactly what the same images give one by one.
    base = _image((6, 40, 50, 4), 11)
    views = {
        "every-other-image": base[::2, :, :, :3],
        "images-reversed": base[::-1, :, :, :3],
        "flipped-bgr": base[:, ::-1, ::2, 2::-1],
        "gray-3d": base[:, 5:35, :, 1],
        "gray-4d-column": base[:, :, 3:4, 0:1],
    }
    for name, view in views.items():
        for resize in ("nearest", "bilinear", "area"):
            kw = dict(size=(17, 23), resize=resize, layout="NCHW", crop=0.875)
            if view.ndim == 4 and view.shape[-1] == 3:
                kw.update(IMAGENET, input_color="BGR")
            images = list(view[..., None] if view.ndim == 3 else view)
            for threads in (1, 2):
                np.testing.assert_array_equal(
                    dlinfer.preprocess(view, threads=threads, **kw),
                    dlinfer.preprocess(images, threads=1, **kw), err_msg=f"{name} {resize}")
    out, geos = dlinfer.preprocess(base[:, :, :, :3], size=16, crop="letterbox",
                                   return_geometry=True)
    assert out.shape == (6, 16, 16, 3) and len(geos) == 6 and geos[0].resized == (13, 16)


def test_native_stack_checks_its_arguments():
    args = ("bilinear", "stretch", 1.0, 0.0, 1.0, [0.0], [1.0], "NHWC", "GRAY")
    out = np.empty((2, 4, 4, 1), np.float32)
    for images, order, message in [
        (np.zeros((2, 4, 4, 1), np.float32), "GRAY", "dtype uint8"),
        (np.zeros((2, 4, 4), np.uint8), "GRAY", "rank 4"),
        (np.zeros((2, 4, 4, 3), np.uint8), "GRAY", "3 channels but their colour is GRAY"),
        (np.zeros((3, 4, 4, 1), np.uint8), "GRAY", "N = 3 images"),
        (np.zeros((2, 4, 4, 1), np.uint8), "CMYK", "input colour must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            _native.preprocess_u8_stack(images, out if len(images) == 2 else
                                        np.empty((2, 4, 4, 1), np.float32), order, *args)


def test_letterbox_reports_scale_and_offset():
    img = _image((100, 50, 3), 3)
    out, (geo,) = dlinfer.preprocess(img, size=(64, 64), crop="letterbox", pad=114,
                                     scale=1.0, return_geometry=True)
    assert geo.resized == (64, 32) and geo.offset == (0, 16)
    assert geo.scale == (0.64, 0.64)
    assert (out[0, :, :16] == 114).all() and (out[0, :, 48:] == 114).all()
    _, (crop,) = dlinfer.preprocess(img, size=(32, 32), crop=0.875, return_geometry=True)
    assert crop == dlinfer.Geometry((73, 37), (-20, -2), (0.73, 0.74))
    for h, w, fit, r in [(480, 640, "crop", 0.875), (7, 300, "letterbox", 1.0),
                         (300, 7, "crop", 1.0), (1, 1, "letterbox", 1.0)]:
        assert _native.preprocess_geometry(h, w, 224, 224, fit, r) == \
            ref.geometry(h, w, 224, 224, fit, r)
    # torchvision's Resize(256) + CenterCrop(224) on a 480x640 image
    assert ref.geometry(480, 640, 224, 224, "crop", 0.875) == (256, 341, -16, -58)


# -- against OpenCV and Keras on real photos -----------------------------------------------

# Measured max |dlinfer - library| in pixel units (scale=1, mean=0, std=1) over the 5
# photos below and output sizes 224x224, 97x131, 300x700 (and enlargements for area):
# OpenCV returns uint8, so 0.5 is pure rounding; its INTER_LINEAR also uses 11-bit
# fixed-point weights, worth another ~0.28; INTER_AREA is 0.5 (rounding only) when
# shrinking and 0.771 when enlarging (its enlarging path has fixed-point weights too).
OPENCV_MAX_DIFF = {"nearest": 0.0, "bilinear": 0.778, "area": 0.771}
# OpenCV's INTER_NEAREST computes floor(dst * (1 / (out / in))) in floating point and
# lands one pixel short where dst * in / out is an exact integer (e.g. 300 -> 224); the
# differing pixels are whole source pixels apart, so those cases are compared by the
# fraction of pixels that differ instead.
OPENCV_NEAREST_MAX_FRACTION = 0.02
# Keras Resizing(antialias=False) computes in float32 like us, but in another order.
KERAS_MAX_DIFF = 0.008


OUT_SIZES = [(224, 224), (97, 131), (300, 700)]


@pytest.mark.parametrize("resize", ["nearest", "bilinear", "area"])
def test_matches_opencv_on_photos(photos, resize):
    cv2 = pytest.importorskip("cv2")
    flag = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR,
            "area": cv2.INTER_AREA}[resize]
    worst = 0.0
    for name, img in photos.items():
        h, w = img.shape[:2]
        sizes = OUT_SIZES + [(2 * h + 1, int(1.5 * w))]
        for oh, ow in sizes:
            if resize == "area" and (oh > h) != (ow > w):
                # OpenCV switches both axes to its enlarging formula when either axis
                # grows; dlinfer keeps the box average per axis.  Not comparable.
                continue
            theirs = cv2.resize(img, (ow, oh), interpolation=flag).astype(np.float64)
            ours = dlinfer.preprocess(img, size=(oh, ow), resize=resize, scale=1.0)[0]
            diff = np.abs(ours - theirs)
            if resize == "nearest" and diff.max() > 0:
                frac = (diff > 0).mean()
                assert frac <= OPENCV_NEAREST_MAX_FRACTION, f"{name} {oh}x{ow}: {frac:.4f}"
                continue
            worst = max(worst, float(diff.max()))
            assert diff.max() <= OPENCV_MAX_DIFF[resize] + 1e-3, f"{name} {oh}x{ow}"
    print(f"max |dlinfer - OpenCV {resize}| = {worst:.4f}")


def test_matches_keras_resizing_on_photos(photos):
    keras = pytest.importorskip("keras")
    worst = 0.0
    for oh, ow in OUT_SIZES:
        layer = keras.layers.Resizing(oh, ow, interpolation="bilinear", antialias=False)
        for name, img in photos.items():
            theirs = np.asarray(layer(img.astype(np.float32)))
            ours = dlinfer.preprocess(img, size=(oh, ow), scale=1.0)[0]
            diff = float(np.abs(ours - theirs).max())
            worst = max(worst, diff)
            assert diff <= KERAS_MAX_DIFF, f"{name} {oh}x{ow}: {diff}"
    print(f"max |dlinfer - Keras Resizing| = {worst:.5f}")
