"""What OpenVINO computes, checked against float64: LRN with a fractional bias, and the
"bf16x3" products (float32 convolutions and dense layers as three bfloat16 products on
AMX, dlinfer/runtime/backends/openvino/bf16x3.py) that dlinfer.explain runs there."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from optional import requires
from reference import assert_close, seed_of

openvino = requires("openvino", "onnx")


def _amx() -> None:
    from dlinfer.runtime.backends.openvino import bf16x3

    if not bf16x3.available():
        pytest.skip("this CPU has no AMX bfloat16 tiles: bf16x3 compiles in float32 here")


def _model(nodes, inits: dict[str, np.ndarray], shape, out_shape=None) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# ---- LRN ------------------------------------------------------------------------------


def _lrn_reference(x: np.ndarray, size: int, alpha: float, beta: float, bias: float
                   ) -> np.ndarray:
    """ONNX's LRN, literally: the squares summed over the channel window, in float64."""
    x = x.astype(np.float64)
    squares = np.zeros_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1] - 1, c + size // 2)
        squares[:, c] = (x[:, lo:hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * squares) ** beta


@openvino
@pytest.mark.parametrize("size,bias", [(3, 1.5), (3, 0.5), (5, 2.25), (3, 1.0)])
def test_lrn_with_a_fractional_bias_gives_onnx_answer(tmp_path, size, bias):
    """OpenVINO 2026.4's CPU plugin truncated the bias (1.5 ran as 1: 20% off)."""
    import dlinfer
    from onnx import helper

    path = tmp_path / "lrn.onnx"
    path.write_bytes(_model([helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.5,
                                              beta=0.75, bias=bias)], {}, (2, 6, 5, 4)))
    x = np.random.default_rng(seed_of("lrn", size, bias)).normal(size=(2, 6, 5, 4))
    got = dlinfer.Model(str(path), backend="openvino").run(x.astype(np.float32))
    # float32 rounding of a sum of squares, a power and a division: a few ulps
    assert_close(got, _lrn_reference(x, size, 0.5, 0.75, bias).astype(np.float32),
                 atol=1e-6, rtol=1e-5)


# ---- bf16x3 ---------------------------------------------------------------------------


def _bf16_reference(value: float) -> float:
    """float32 ``value`` rounded to the nearest bfloat16, ties to the even one, one value
    at a time: the two bfloat16 neighbours by truncating the bits, the nearer kept."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    if (bits >> 23) & 0xFF == 0xFF:  # inf and nan stay
        return value
    low = bits & 0xFFFF0000
    high = low + 0x10000
    as_float = [struct.unpack("<f", struct.pack("<I", b))[0] for b in (low, high)]
    d_low, d_high = abs(value - as_float[0]), abs(as_float[1] - value)
    if d_low < d_high or (d_low == d_high and not (low >> 16) & 1):
        return as_float[0]
    return as_float[1]


@openvino
def test_to_bf16_rounds_to_nearest_even():
    from dlinfer.runtime.backends.openvino.bf16x3 import to_bf16

    rng = np.random.default_rng(seed_of("to_bf16"))
    values = np.concatenate([
        rng.standard_normal(2000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 2000),
        # exact ties, both parities, and the edges
        np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 3.3895314e38, 1e-40, 0.0,
                  -0.0, np.inf, -np.inf, np.nan], np.float32)]).astype(np.float32)
    got = to_bf16(values)
    want = np.array([_bf16_reference(float(v)) for v in values], np.float32)
    np.testing.assert_array_equal(got, want)  # bit for bit (nan where nan)


def _split_case(kind: str):
    """A float32 layer with 16 input channels (the fewest that are split) and its float64
    reference, on seeded data: a 3x3 convolution, or a dense layer."""
    from onnx import helper

    rng = np.random.default_rng(seed_of("bf16x3", kind))
    if kind == "conv":
        x = rng.standard_normal((2, 16, 9, 9))
        w = rng.standard_normal((8, 16, 3, 3)) / 12
        node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])
        cols = np.stack([x[:, :, i:i + 7, j:j + 7] for i in range(3) for j in range(3)], 2)
        k = w.reshape(8, 16, 9)
        want = np.einsum("ncphw,ocp->nohw", cols, k)
        sums = np.einsum("ncphw,ocp->nohw", np.abs(cols), np.abs(k))  # sum |x * w|
        products = 16 * 9
    else:
        x = rng.standard_normal((4, 64))
        w = rng.standard_normal((64, 10)) / 8
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        want, sums, products = x @ w, np.abs(x) @ np.abs(w), 64
    graph = _model([node], {"w": w.astype(np.float32)}, x.shape)
    return graph, x.astype(np.float32), want, sums, products


def _compile(graph: bytes, precision: str):
    import openvino as ov
    from dlinfer.runtime.backends.openvino import bf16x3

    core = ov.Core()
    model = core.read_model(graph, b"")
    config = {"INFERENCE_NUM_THREADS": 1}
    if precision == "bf16x3":
        return bf16x3.compile(ov, core, model, config)
    return core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision}
                              ), precision


@openvino
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_split_products_are_float32_accurate_where_bfloat16_is_not(kind):
    _amx()
    graph, x, want, sums, products = _split_case(kind)
    compiled, precision = _compile(graph, "bf16x3")
    assert precision == "bf16x3"
    got = compiled({0: x})[compiled.outputs[0]]
    # Per output: the split's three dropped terms, each at most 2^-18 of sum |x*w| (the
    # module docstring), and float32 accumulation of the 3 * products terms, at most
    # 3 * products * 2^-24 of it (worst case; typical errors are far smaller).
    bound = (3 * 2.0 ** -18 + 3 * products * 2.0 ** -24) * sums
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
    # The bound tells the split from one bfloat16 product, which breaks it.
    plain, _ = _compile(graph, "bf16")
    rounded = plain({0: x})[plain.outputs[0]]
    assert np.any(np.abs(rounded - want) > bound)


@openvino
def test_compile_falls_back_to_float32_when_an_op_would_round(monkeypatch, caplog):
    _amx()
    from dlinfer.runtime.backends.openvino import bf16x3

    graph, x, want, _, _ = _split_case("conv")
    # The check on a real stray: a model compiled in bfloat16 without the split.
    plain, _ = _compile(graph, "bf16")
    assert any(op.startswith("Convolution") for op in bf16x3.bfloat16_ops(plain))
    # compile() runs the check and, where it finds one, compiles in float32.
    monkeypatch.setattr(bf16x3, "bfloat16_ops", lambda compiled: ["Eltwise 'stray'"])
    with caplog.at_level("INFO", logger="dlinfer"):
        compiled, precision = _compile(graph, "bf16x3")
    assert precision == "f32" and "Eltwise 'stray'" in caplog.text
    reference, _ = _compile(graph, "f32")
    np.testing.assert_array_equal(compiled({0: x})[compiled.outputs[0]],
                                  reference({0: x})[reference.outputs[0]])


def _cnn(path) -> None:
    """A CNN wide enough to be split: Conv 3->16, Relu, Conv 16->16, Relu, global
    average, dense 16->5 (logits)."""
    from onnx import helper

    rng = np.random.default_rng(seed_of("bf16x3 cnn"))
    inits = {"w1": rng.standard_normal((16, 3, 3, 3)).astype(np.float32) / 5,
             "w2": rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 12,
             "b2": rng.standard_normal(16).astype(np.float32) / 10,
             "fc": rng.standard_normal((16, 5)).astype(np.float32) / 4}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3],
                              pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["y"])]
    path.write_bytes(_model(nodes, inits, ("N", 3, 12, 12), ("N", 5)))


@openvino
def test_explain_gradients_on_openvino_match_onnxruntime(tmp_path, caplog):
    """gradient() on an OpenVINO model: float32 by default, bf16x3 when asked (where the
    CPU has AMX), both against onnxruntime's float32 run of the same graph."""
    from dlinfer import Model
    from dlinfer.explain import gradient
    from dlinfer.runtime.backends.openvino import bf16x3

    path = tmp_path / "cnn.onnx"
    _cnn(path)
    x = np.random.default_rng(seed_of("bf16x3 x")).standard_normal((3, 3, 12, 12)).astype(
        np.float32)
    want = gradient(Model(str(path), backend="onnxruntime"), x, index=[0, 3, 4], wrt="r1")
    on_openvino = Model(str(path), backend="openvino")
    with caplog.at_level("INFO", logger="dlinfer"):
        exact = gradient(on_openvino, x, index=[0, 3, 4], wrt="r1")
        split = gradient(on_openvino, x, index=[0, 3, 4], wrt="r1", precision="bf16x3")
    # float32 both: sums of a few hundred products in another order
    assert_close(exact, want, atol=1e-6 * np.abs(want).max(), rtol=1e-5)
    # bf16x3 through two split products (the second convolution, the dense layer) and
    # their backward passes: about 1e-5 of the products' sums each (bf16x3.py)
    assert_close(split, want, atol=1e-4 * np.abs(want).max())
    if bf16x3.available():
        assert "its products in f32" in caplog.text and "its products in bf16x3" in caplog.text
        assert np.abs(split - want).max() > 0  # the split ran: not float32's exact answer
