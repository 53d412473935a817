"""dlinfer.kernels against float64 NumPy references, their scalar oracles and
onnxruntime single-node models.

Tolerances: conv, dense and the transposed conv accumulate in float32, so
max(1e-4, 1e-4*|ref|) against float64 references (inputs in [-1, 1], at most a
few hundred terms per sum).  Max pooling selects, never computes: exact.
Average pooling and softmax divide once: 1e-6 relative.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import reference as ref
from dlinfer import _native, kernels
from onnx import TensorProto, helper, numpy_helper
from reference import assert_close

TOL = {"atol": 1e-4, "rtol": 1e-4}


def _available_isas() -> list[str]:
    out = []
    for isa in ("generic", "avx2", "avx512"):
        try:
            _native.set_kernel_isa(isa)
            out.append(isa)
        except ValueError:
            pass
    _native.set_kernel_isa("auto")
    return out


ISAS = _available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    _native.set_kernel_isa(request.param)
    yield request.param
    _native.set_kernel_isa("auto")


def _rand(rng, shape):
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


def _f32(a):
    return np.asarray(a).astype(np.float32)


# ---- conv2d sweep -----------------------------------------------------------

PADDINGS = ["valid", "same", (1, 2, 0, 1)]
CONV_CASES = []
for i, (stride, dilation, padding) in enumerate(itertools.product((1, 2, 3), (1, 2, 3), PADDINGS)):
    batch = (1, 3)[i % 2]
    # (cin, cout, groups): plain, odd, grouped, depthwise, depthwise x2, wide, grouped
    cin, cout, groups = [(1, 5, 1), (3, 17, 1), (6, 9, 3), (5, 5, 5), (3, 6, 3), (7, 33, 1),
                         (4, 8, 2)][i % 7]
    k = (3, 2, 3, 1)[i % 4]
    act = (None, "relu", "leaky_relu", "sigmoid", "tanh")[i % 5]
    CONV_CASES.append(
        (batch, 11 + i % 4, 9 + i % 3, cin, cout, k, stride, dilation, padding, groups, act)
    )


def _conv_id(c):
    b, h, w, cin, cout, k, s, d, p, g, act = c
    pad = p if isinstance(p, str) else "pads" + "".join(map(str, p))
    return f"n{b}-{h}x{w}x{cin}->{cout}-k{k}-s{s}-d{d}-{pad}-g{g}-{act}"


def _resolved_pads(padding, h, w, k, s, d):
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return kernels.same_pads(h, k, s, d) + kernels.same_pads(w, k, s, d)
    return padding


@pytest.mark.parametrize("case", CONV_CASES, ids=[_conv_id(c) for c in CONV_CASES])
def test_conv2d_matches_reference(case, isa):
    b, h, w, cin, cout, k, s, d, padding, groups, act = case
    seed = ref.seed_of(*case)
    rng = np.random.default_rng(seed)
    x, wk, bias = (
        _rand(rng, (b, h, w, cin)),
        _rand(rng, (k, k, cin // groups, cout)),
        _rand(rng, (cout,)),
    )
    pads = _resolved_pads(padding, h, w, k, s, d)
    expected = _f32(ref.conv2d_nhwc(x, wk, bias, (s, s), (d, d), pads, groups, act))
    got = kernels.conv2d(x, wk, bias, strides=s, padding=padding, dilations=d, groups=groups,
                         activation=act, threads=2)
    assert_close(got, expected, **TOL, context=f"seed={seed} isa={isa}", layout="NHWC")
    oracle = _native.conv2d_nhwc_f32_scalar(
        x, wk, bias, (s, s), (d, d), pads, groups=groups, activation=act or "none", alpha=0.01
    )
    assert_close(oracle, expected, **TOL, context=f"scalar oracle seed={seed}", layout="NHWC")


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_conv2d_identical_for_every_thread_count(threads):
    rng = np.random.default_rng(4)
    x, w = _rand(rng, (5, 13, 13, 32)), _rand(rng, (3, 3, 32, 40))
    one = kernels.conv2d(x, w, padding="same", threads=1)
    np.testing.assert_array_equal(kernels.conv2d(x, w, padding="same", threads=threads), one)
    dw = _rand(rng, (3, 3, 1, 64))  # depthwise, multiplier 2: its own code path
    one = kernels.conv2d(x, dw, groups=32, threads=1)
    np.testing.assert_array_equal(kernels.conv2d(x, dw, groups=32, threads=threads), one)


def test_conv2d_non_contiguous_and_nchw_layout():
    rng = np.random.default_rng(5)
    base = _rand(rng, (4, 3, 20, 18))  # NCHW
    x = base[::2, :, 1::2, ::-1]  # strided, offset, reversed
    assert not x.flags.c_contiguous
    w = _rand(rng, (6, 3, 3, 3))  # ONNX (cout, cin, kh, kw)
    got = kernels.conv2d(x, w, padding="same", layout="NCHW")
    expected = ref.conv2d_nhwc(
        x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), pads=(1, 1, 1, 1)
    ).transpose(0, 3, 1, 2)
    assert_close(got, _f32(expected), **TOL, layout="NCHW")


# ---- conv2d_transpose ---------------------------------------------------------

TCONV_CASES = [  # batch, h, w, cin, cout, k, stride, dilation, padding, output_padding, groups
    (1, 7, 7, 3, 5, 4, 2, 1, "same", 0, 1),  # the DCGAN's Conv2DTranspose(4, stride 2, same)
    (3, 5, 6, 4, 7, 3, 2, 1, "valid", 0, 1),
    (2, 4, 5, 6, 4, 3, 3, 1, (1, 0, 2, 1), 1, 2),
    (1, 6, 3, 5, 3, 2, 1, 2, "valid", 0, 1),
    (2, 3, 3, 2, 3, 3, 3, 2, (0, 2, 1, 1), 2, 1),
]


@pytest.mark.parametrize("case", TCONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv2d_transpose_matches_reference(case, isa):
    b, h, w, cin, cout, k, s, d, padding, op, groups = case
    rng = np.random.default_rng(ref.seed_of(*case))
    x = _rand(rng, (b, h, w, cin))
    wk = _rand(rng, (k, k, cout // groups, cin))  # Keras Conv2DTranspose layout
    bias = _rand(rng, (cout,))
    got = kernels.conv2d_transpose(x, wk, bias, strides=s, padding=padding, dilations=d,
                                   groups=groups, output_padding=op, activation="leaky_relu",
                                   alpha=0.2)
    if padding == "same":
        assert got.shape[1:3] == (h * s, w * s)
        total = (k - 1) * d + 1 - s
        pads, opad = (total // 2, total - total // 2) * 2, (0, 0)
        pads = (pads[0], pads[1], pads[0], pads[1])
    else:
        pads = (0, 0, 0, 0) if padding == "valid" else padding
        opad = (op, op)
    expected = ref.conv2d_transpose_nhwc(
        x, wk.transpose(0, 1, 3, 2), bias, (s, s), (d, d), pads, opad, groups, "leaky_relu", 0.2
    )
    assert_close(got, _f32(expected), **TOL, layout="NHWC")
    oracle = _native.conv2d_transpose_nhwc_f32_scalar(
        x,
        np.ascontiguousarray(wk.transpose(0, 1, 3, 2)),
        bias,
        (s, s),
        (d, d),
        pads,
        opad,
        groups,
        "leaky_relu",
        0.2,
    )
    assert_close(got, oracle, atol=1e-5, rtol=1e-5)


# ---- pooling --------------------------------------------------------------------

POOL_CASES = []
for i, (k, s, pads, ceil_mode) in enumerate(
    itertools.product((2, 3), (1, 2, 3), ((0, 0, 0, 0), (1, 0, 1, 1), (1, 1, 0, 1)), (False, True))
):
    POOL_CASES.append(
        ((1, 3)[i % 2], 9 + i % 3, 10 + i % 2, (1, 5, 33, 8)[i % 4], k, s, pads, ceil_mode)
    )


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_pooling_matches_reference(case, isa):
    b, h, w, c, k, s, pads, ceil_mode = case
    rng = np.random.default_rng(ref.seed_of(*case))
    x = _rand(rng, (b, h, w, c))
    got = kernels.max_pool2d(x, k, s, pads, ceil_mode, threads=2)
    expected = _f32(ref.pool2d_nhwc(x, (k, k), (s, s), pads, ceil_mode, "max"))
    assert_close(got, expected, layout="NHWC")  # exact: max pooling only selects
    assert_close(
        _native.max_pool2d_nhwc_f32_scalar(x, (k, k), (s, s), pads, ceil_mode),
        expected,
        layout="NHWC",
    )
    for cip in (False, True):
        got = kernels.avg_pool2d(x, k, s, pads, ceil_mode, count_include_pad=cip, threads=2)
        expected = _f32(ref.pool2d_nhwc(x, (k, k), (s, s), pads, ceil_mode, "avg", cip))
        assert_close(
            got, expected, atol=1e-6, rtol=1e-6, layout="NHWC", context=f"count_include_pad={cip}"
        )


def test_pool_same_padding_global_and_non_contiguous():
    rng = np.random.default_rng(6)
    x = _rand(rng, (3, 11, 9, 10))[:, ::-1, :, 1::2]
    assert not x.flags.c_contiguous
    got = kernels.max_pool2d(x, 2, padding="same")
    assert got.shape == (3, 6, 5, 5)
    assert_close(
        got, _f32(ref.pool2d_nhwc(x, (2, 2), (2, 2), (0, 1, 0, 1), mode="max")), layout="NHWC"
    )
    assert_close(kernels.global_avg_pool2d(x), x.mean(axis=(1, 2)), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(kernels.global_max_pool2d(x), x.max(axis=(1, 2)))
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    assert kernels.global_avg_pool2d(nchw, layout="NCHW", keepdims=True).shape == (3, 5, 1, 1)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pooling_identical_for_every_thread_count(threads):
    x = _rand(np.random.default_rng(7), (9, 26, 26, 35))
    for fn in (kernels.max_pool2d, kernels.avg_pool2d):
        np.testing.assert_array_equal(fn(x, 3, 2, threads=threads), fn(x, 3, 2, threads=1))


# ---- dense, softmax, batch_norm ------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "n_in", "n_out"), [(1, 784, 512), (7, 33, 10), (64, 3, 1), (5, 1, 17)]
)
@pytest.mark.parametrize("act", [None, "relu", "sigmoid"])
def test_dense_matches_reference(rows, n_in, n_out, act, isa):
    rng = np.random.default_rng(rows * 1000 + n_in)
    x, w, b = _rand(rng, (rows, n_in)), _rand(rng, (n_in, n_out)), _rand(rng, (n_out,))
    expected = _f32(ref.dense(x, w, b, act))
    assert_close(kernels.dense(x, w, b, act, threads=2), expected, **TOL)
    assert_close(_native.dense_f32_scalar(x, w, b, act or "none"), expected, **TOL)


def test_dense_identical_for_every_thread_count_and_non_contiguous():
    rng = np.random.default_rng(8)
    x, w = _rand(rng, (300, 200))[::3, ::2], _rand(rng, (100, 64))
    one = kernels.dense(x, w, threads=1)
    np.testing.assert_array_equal(kernels.dense(x, w, threads=2), one)
    assert_close(one, _f32(ref.dense(x, w)), **TOL)


@pytest.mark.parametrize("shape", [(1, 10), (7, 3), (2, 5, 1), (1000, 17)])
def test_softmax_matches_reference(shape):
    x = _rand(np.random.default_rng(9), shape) * 20
    for axis in range(-1, -len(shape) - 1, -1):
        assert_close(
            kernels.softmax(x, axis=axis), _f32(ref.softmax(x, axis)), atol=1e-7, rtol=1e-5
        )
    assert_close(_native.softmax_f32_scalar(x), _f32(ref.softmax(x)), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_batch_norm_matches_reference(layout):
    rng = np.random.default_rng(10)
    x = _rand(rng, (3, 5, 7, 9)) if layout == "NHWC" else _rand(rng, (3, 9, 5, 7))
    g, b, m = _rand(rng, (9,)), _rand(rng, (9,)), _rand(rng, (9,))
    v = rng.uniform(0.1, 2, 9).astype(np.float32)
    axis = -1 if layout == "NHWC" else 1
    expected = _f32(ref.batch_norm(x, g, b, m, v, 1e-3, axis))
    assert_close(kernels.batch_norm(x, g, b, m, v, 1e-3, layout), expected, atol=1e-6, rtol=1e-5)
    assert_close(
        _native.batch_norm_f32_scalar(x, g, b, m, v, 1e-3, axis), expected, atol=1e-6, rtol=1e-5
    )


# ---- against onnxruntime single-node models (NCHW, ONNX weight layouts) ---------------


def _run_single_node(
    op, inputs: dict[str, np.ndarray], initializers: dict[str, np.ndarray] | None = None, **attrs
) -> np.ndarray:
    initializers = initializers or {}
    node = helper.make_node(op, list(inputs) + list(initializers), ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


ORT_CONV = [  # batch, cin, cout, h, w, k, stride, dilation, pads (t,b,l,r) | auto_pad, groups
    (1, 3, 5, 10, 9, 3, 1, 1, (0, 0, 0, 0), 1),
    (2, 4, 6, 11, 12, 3, 2, 1, "SAME_UPPER", 2),
    (3, 5, 7, 9, 9, 2, 3, 2, (1, 2, 2, 0), 1),
    (1, 6, 6, 8, 7, 3, 1, 3, (3, 3, 3, 3), 6),
    (2, 1, 32, 28, 28, 3, 1, 1, (0, 0, 0, 0), 1),
    (1, 3, 4, 7, 8, 3, 2, 1, "SAME_LOWER", 1),
    (2, 4, 8, 9, 9, 3, 1, 1, (1, 1, 1, 1), 4),  # depthwise, multiplier 2
]


@pytest.mark.parametrize("case", ORT_CONV, ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_conv2d_matches_onnxruntime(case):
    b, cin, cout, h, w, k, s, d, pads, groups = case
    rng = np.random.default_rng(11)
    x, wk, bias = (
        _rand(rng, (b, cin, h, w)),
        _rand(rng, (cout, cin // groups, k, k)),
        _rand(rng, (cout,)),
    )
    attrs = dict(strides=[s, s], dilations=[d, d], group=groups, kernel_shape=[k, k])
    if isinstance(pads, str):
        attrs["auto_pad"] = pads
        padding = pads.lower()
    else:
        attrs["pads"] = [pads[0], pads[2], pads[1], pads[3]]  # ONNX: begins, then ends
        padding = pads
    expected = _run_single_node("Conv", {"x": x}, {"w": wk, "b": bias}, **attrs)
    got = kernels.conv2d(
        x, wk, bias, strides=s, padding=padding, dilations=d, groups=groups, layout="NCHW"
    )
    assert_close(got, expected, **TOL, layout="NCHW")


@pytest.mark.parametrize(
    ("s", "pads", "output_padding"),
    [(2, (1, 1, 1, 1), 0), (2, (0, 0, 0, 0), 1), (3, (1, 0, 2, 1), 2), (1, (0, 1, 1, 0), 0)],
)
def test_conv2d_transpose_matches_onnxruntime(s, pads, output_padding):
    rng = np.random.default_rng(12)
    x, wk, bias = _rand(rng, (2, 6, 5, 7)), _rand(rng, (6, 4, 4, 4)), _rand(rng, (4,))
    expected = _run_single_node(
        "ConvTranspose",
        {"x": x},
        {"w": wk, "b": bias},
        strides=[s, s],
        pads=[pads[0], pads[2], pads[1], pads[3]],
        kernel_shape=[4, 4],
        output_padding=[output_padding] * 2,
    )
    got = kernels.conv2d_transpose(
        x, wk, bias, strides=s, padding=pads, output_padding=output_padding, layout="NCHW"
    )
    assert_close(got, expected, **TOL, layout="NCHW")


ORT_POOL = list(itertools.product((2, 3), (1, 2), ((0, 0, 0, 0), (1, 1, 0, 1)), (0, 1), (0, 1)))


@pytest.mark.parametrize("case", ORT_POOL, ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_pooling_matches_onnxruntime(case):
    k, s, pads, ceil_mode, cip = case
    x = _rand(np.random.default_rng(13), (2, 5, 9, 10))
    onnx_pads = [pads[0], pads[2], pads[1], pads[3]]
    common = dict(kernel_shape=[k, k], strides=[s, s], pads=onnx_pads, ceil_mode=ceil_mode)
    if not cip:  # count_include_pad means nothing to MaxPool: test it once
        expected = _run_single_node("MaxPool", {"x": x}, **common)
        assert_close(
            kernels.max_pool2d(x, k, s, pads, bool(ceil_mode), layout="NCHW"),
            expected,
            layout="NCHW",
        )
    expected = _run_single_node("AveragePool", {"x": x}, count_include_pad=cip, **common)
    got = kernels.avg_pool2d(
        x, k, s, pads, bool(ceil_mode), count_include_pad=bool(cip), layout="NCHW"
    )
    assert_close(got, expected, atol=1e-6, rtol=1e-6, layout="NCHW")


def test_dense_softmax_batch_norm_match_onnxruntime():
    rng = np.random.default_rng(14)
    x, w, b = _rand(rng, (5, 37)), _rand(rng, (37, 11)), _rand(rng, (11,))
    assert_close(
        kernels.dense(x, w, b), _run_single_node("Gemm", {"x": x}, {"w": w, "b": b}), **TOL
    )
    assert_close(
        kernels.softmax(x), _run_single_node("Softmax", {"x": x}, axis=-1), atol=1e-7, rtol=1e-5
    )
    xc = _rand(rng, (2, 3, 4, 5))
    g, be, m = _rand(rng, (3,)), _rand(rng, (3,)), _rand(rng, (3,))
    v = rng.uniform(0.5, 2, 3).astype(np.float32)
    expected = _run_single_node(
        "BatchNormalization", {"x": xc}, {"g": g, "b": be, "m": m, "v": v}, epsilon=1e-3
    )
    assert_close(
        kernels.batch_norm(xc, g, be, m, v, 1e-3, layout="NCHW"), expected, atol=1e-6, rtol=1e-5
    )


# ---- bad arguments: ValueError naming the argument, never a crash -----------------------

X = np.zeros((1, 5, 5, 3), np.float32)
W = np.zeros((3, 3, 3, 4), np.float32)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kernels.conv2d(X.astype(np.float64), W), "x must have dtype float32, got float64"),
        (lambda: kernels.conv2d(X, W.astype(np.float16)), "w must have dtype float32"),
        (lambda: kernels.conv2d(X[0], W), "x must have rank 4"),
        (
            lambda: kernels.conv2d(X, W[:, :, :2]),
            r"w: shape \(3, 3, 2, 4\) needs w.shape\[2\] \* groups",
        ),
        (lambda: kernels.conv2d(X, W, strides=0), "strides: height stride must be >= 1, got 0"),
        (
            lambda: kernels.conv2d(X, W, strides=(1, -2)),
            "strides: width stride must be >= 1, got -2",
        ),
        (lambda: kernels.conv2d(X, W, dilations=0), "dilations: height dilation must be >= 1"),
        (
            lambda: kernels.conv2d(X, W, dilations=3),
            "kernel height 7 .dilated. is larger than the padded input height 5",
        ),
        (
            lambda: kernels.conv2d(X, np.zeros((7, 7, 3, 4), np.float32), padding=(1, 0, 1, 0)),
            "kernel height 7 .dilated. is larger than the padded input height 6",
        ),
        (lambda: kernels.conv2d(X, W, padding=(-1, 0, 0, 0)), "padding: height pads must be >= 0"),
        (lambda: kernels.conv2d(X, W, padding="full"), "padding must be 'valid', 'same'"),
        (
            lambda: kernels.conv2d(X, W, bias=np.zeros(3, np.float32)),
            r"bias must have shape \(4,\)",
        ),
        (
            lambda: kernels.conv2d(X, np.zeros((3, 3, 1, 4), np.float32), groups=3),
            "groups: output channels 4 are not divisible by groups 3",
        ),
        (
            lambda: kernels.conv2d(X, np.zeros((3, 3, 1, 4), np.float32), groups=2),
            "needs w.shape\\[2\\] \\* groups",
        ),
        (lambda: kernels.conv2d(X, W, groups=0), "groups must be >= 1"),
        (lambda: kernels.conv2d(X, W, activation="gelu"), "activation must be one of"),
        (lambda: kernels.conv2d(X, W, layout="NWHC"), "layout must be 'NHWC' or 'NCHW'"),
        (
            lambda: kernels.max_pool2d(X, 6),
            "kernel height 6 .dilated. is larger than the padded input height 5",
        ),
        (lambda: kernels.max_pool2d(X, 2, strides=0), "strides: height stride must be >= 1"),
        (
            lambda: kernels.max_pool2d(X, 2, padding=(2, 0, 0, 0)),
            "padding: every pad must be smaller",
        ),
        (lambda: kernels.avg_pool2d(X.astype(np.int32), 2), "x must have dtype float32, got int32"),
        (
            lambda: kernels.conv2d_transpose(X, W.transpose(0, 1, 3, 2), strides=0),
            "strides: height stride must be >= 1",
        ),
        (
            lambda: kernels.conv2d_transpose(X, np.zeros((3, 3, 4, 2), np.float32)),
            r"w: shape \(3, 3, 4, 2\) has 2 input channels \(axis 3\) but x has 3",
        ),
        (
            lambda: kernels.conv2d_transpose(X, W.transpose(0, 1, 3, 2), padding=(9, 9, 0, 0)),
            "crop the whole output",
        ),
        (
            lambda: kernels.dense(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)),
            r"w: shape \(4, 5\) does not match x \(2, 3\)",
        ),
        (
            lambda: kernels.dense(np.zeros((2, 3), np.float32), np.zeros((3, 5), np.float64)),
            "w must have dtype float32",
        ),
        (
            lambda: kernels.batch_norm(X, *[np.ones(2, np.float32)] * 4),
            r"gamma must have shape \(3,\)",
        ),
        (lambda: kernels.softmax(np.zeros((2, 0), np.float32)), "softmax axis must not be empty"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
