"""dlinfer.preprocess on random calls (hypothesis): every call is right or raises a dlinfer error.

Shapes, strides, dtypes, ranks and parameters are drawn at random, valid and not;
a valid call must match the float64 reference in tests/reference.py, an invalid one
must raise :class:`dlinfer.DlinferError`.  The whole file needs hypothesis (the
``test`` extra): without it its two tests are skipped, and nothing else is.
"""

from __future__ import annotations

import dlinfer
import numpy as np
import pytest
import reference as ref

hypothesis = pytest.importorskip("hypothesis", reason="needs hypothesis (pip install '.[test]')")
st = hypothesis.strategies

ATOL = ref.PREPROCESS_ATOL
FAST_EXAMPLES = 1_000
FULL_EXAMPLES = 10_000


@st.composite
def random_calls(draw):
    images, valid = [], True
    for _ in range(draw(st.integers(1, 3))):
        # Rows of 43+ colour pixels (129+ bytes) reach the gathered bilinear pass.
        h, w = draw(st.integers(0, 14)), draw(st.integers(0, 14) | st.integers(43, 64))
        c = draw(st.sampled_from([1, 3, 4, 3, 1, 2, 5]))
        dtype = draw(st.sampled_from([np.uint8] * 8 + [np.float32, np.int16, np.bool_]))
        sy, sx = draw(st.sampled_from([1, 2, -1])), draw(st.sampled_from([1, 3, -2]))
        base = np.random.default_rng(draw(st.integers(0, 2**16))).integers(
            0, 256, size=(max(h * abs(sy), 1), max(w * abs(sx), 1), c)).astype(dtype)
        arr = base[: h * abs(sy)][::sy][:, : w * abs(sx)][:, ::sx]
        rank = draw(st.sampled_from([3] * 6 + [2, 1, 4]))
        arr = {3: arr, 2: arr[..., 0], 1: arr.ravel(), 4: arr[None]}[rank]
        images.append(arr)
        valid &= dtype == np.uint8 and rank in (2, 3) and h > 0 and w > 0
        valid &= (1 if rank == 2 else c) in (1, 3, 4)
    kw = {
        "size": draw(st.tuples(st.integers(1, 12), st.integers(1, 12) | st.integers(20, 40))
                     | st.sampled_from([None, 0, (3, -1)])),
        "resize": draw(st.sampled_from(["nearest", "bilinear", "area", "bicubic"])),
        "crop": draw(st.sampled_from([None, "center", "letterbox", 0.5, 0.875, 1.0, 0.0, 1.5])),
        "color": draw(st.sampled_from(["GRAY", "RGB", "BGR", "XYZ"])),
        "layout": draw(st.sampled_from(["NHWC", "NCHW", "CHW"])),
        "dtype": draw(st.sampled_from(["float32", "float16", "int8"])),
        "scale": draw(st.sampled_from([1 / 255, 1.0, -2 / 255, float("nan")])),
        "mean": draw(st.sampled_from([(0.0,), (0.5,), (0.485, 0.456, 0.406), (1.0, 2.0)])),
        "std": draw(st.sampled_from([(1.0,), (0.25,), (0.229, 0.224, 0.225), (0.0,), (-0.5,)])),
        "pad": draw(st.sampled_from([0.0, 114.0])),
        "input_color": draw(st.sampled_from([None, None, "GRAY", "RGB", "BGR", "RGBA", "BGRA"])),
        "threads": draw(st.sampled_from([None, 0, 1, 2, 3, -1])),
    }
    return images, kw, valid


def _params_valid(images, kw):
    c_out = 1 if kw["color"] == "GRAY" else 3
    sizes = {np.asarray(i).shape[:2] for i in images}
    ok = (kw["size"] is not None or len(sizes) == 1)
    ok &= kw["size"] is None or (isinstance(kw["size"], tuple) and min(kw["size"]) >= 1)
    ok &= kw["resize"] != "bicubic" and kw["crop"] not in (0.0, 1.5)
    ok &= kw["color"] != "XYZ" and kw["layout"] != "CHW" and kw["dtype"] != "int8"
    ok &= np.isfinite(kw["scale"]) and all(s != 0 for s in kw["std"])
    ok &= len(kw["mean"]) in (1, c_out) and len(kw["std"]) in (1, c_out)
    ok &= kw["threads"] is None or kw["threads"] >= 0
    if kw["input_color"] is not None:
        want = ref.CHANNELS[kw["input_color"]]
        ok &= all((i.shape[2] if i.ndim == 3 else 1) == want for i in images)
    return ok


def _check_random_call(images, kw, valid):
    try:
        out = dlinfer.preprocess(images, **kw)
    except dlinfer.DlinferError:
        assert not (valid and _params_valid(images, kw)), "refused a valid call"
        return
    assert valid and _params_valid(images, kw), "accepted an invalid call"
    crop = kw["crop"]
    fit = {None: "stretch", "letterbox": "letterbox"}.get(crop, "crop")
    ratio = 1.0 if crop in (None, "letterbox", "center") else crop
    size = kw["size"] or images[0].shape[:2]
    for i, img in enumerate(images):
        img3 = img if img.ndim == 3 else img[:, :, None]
        in_color = kw["input_color"] or {1: "GRAY", 3: "RGB", 4: "RGBA"}[img3.shape[2]]
        want = ref.preprocess(img3, size, in_color=in_color, color=kw["color"],
                              resize=kw["resize"], fit=fit, crop_ratio=ratio, pad=kw["pad"],
                              scale=kw["scale"], mean=kw["mean"], std=kw["std"],
                              layout=kw["layout"])
        # float32 arithmetic on pixel values up to 255, magnified by scale / std
        gain = abs(kw["scale"]) / min(abs(s) for s in kw["std"])
        if kw["dtype"] == "float16":
            # float16 keeps 11 significant bits: 1e-3 relative covers its rounding.
            atol, rtol, got = 1e-4 + 1e-4 * gain, 1e-3, out[i].astype(np.float32)
        else:
            atol, rtol, got = ATOL + 3e-5 * gain, 0.0, out[i]
        assert out.dtype == np.dtype(kw["dtype"])
        ref.assert_close(got.astype(np.float64), want.astype(np.float64), atol=atol, rtol=rtol,
                         context=f"image {i} {kw}")


@hypothesis.settings(max_examples=FAST_EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(random_calls())
def test_random_calls_are_right_or_raise_dlinfer_errors(call):
    _check_random_call(*call)


@pytest.mark.slow
@hypothesis.settings(max_examples=FULL_EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(random_calls())
def test_random_calls_full_10000(call):
    _check_random_call(*call)


