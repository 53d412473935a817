"""dlinfer.explain.fold: an input scaling folded into the first convolution of the
gradient graph gives the same forward values and gradients as the graph it came from.

Tolerances: the folded weights (s W in float32) round differently from scaling the input
(s x, then W): the forward values within 1e-5 relative (a few float32 ulps over 18-term
dot products); the gradient against the float64 finite difference of the unfolded
model with test_explain_gradient's bound, RTOL of sum |gradient * direction|.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from gradient_reference import central_difference, make_model
from onnx import TensorProto, helper
from reference import assert_close
from test_explain_gradient import RTOL, STEP


def _scaled_conv_model(offset: float, pads: list[int]) -> onnx.ModelProto:
    rng = np.random.default_rng(len(pads) + int(offset * 4))
    nodes = [helper.make_node("Mul", ["x", "s"], ["xs"]),
             helper.make_node("Add", ["xs", "o"], ["xo"]),
             helper.make_node("Transpose", ["xo"], ["xt"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["xt", "w", "b"], ["c"], pads=pads),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w2"], ["y"])]
    size = 4 if not any(pads) else 6
    return make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ("N", 6, 6, 2))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"s": np.float32(1 / 255), "o": np.float32(offset),
         "w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
         "b": rng.standard_normal(3).astype(np.float32),
         "w2": rng.standard_normal((3 * size * size, 4)).astype(np.float32)})


@pytest.mark.parametrize("offset, pads, folds", [
    (0.0, [1, 1, 1, 1], 1),  # x / 255: the padding reads zeros either way
    (-1.0, [0, 0, 0, 0], 1),  # x / 127.5 - 1 style, no padding: the offset into the bias
    (-1.0, [1, 1, 1, 1], 0)])  # an offset where the padding reads zeros: left alone
def test_folded_scaling_keeps_values_and_gradients(tmp_path, offset, pads, folds):
    from dlinfer import Model
    from dlinfer.explain import value_and_gradient
    from dlinfer.explain.fold import fold_input_scaling

    model = _scaled_conv_model(offset, pads)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert fold_input_scaling(copy.graph, keep={"y"}) == folds
    kept = {t.name for t in copy.graph.initializer}
    assert ({"s", "o"} & kept) == (set() if folds else {"s", "o"})  # no orphans left
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    x = np.random.default_rng(5).uniform(0, 255, (2, 6, 6, 2)).astype(np.float32)
    _, grad, outputs = value_and_gradient(path, x, index=[1, 3], wrt="x")
    unfolded = Model(path).run(x)
    unfolded = unfolded["y"] if isinstance(unfolded, dict) else unfolded
    assert_close(outputs["y"], unfolded, atol=1e-5, rtol=1e-5)
    directions = [np.random.default_rng(k).standard_normal(x.shape) for k in range(3)]
    fds = central_difference(model, {"x": x}, "x", "y", [1, 3], directions, STEP)
    for d, fd in zip(directions, fds):
        g = grad.astype(np.float64) * d
        assert abs(g.sum() - fd) <= RTOL * np.abs(g).sum()
