"""``optimize --mode int8`` memory is bounded: the peak grows neither with the sample
count nor with the activations per sample (dlinfer.optimize.memory).

Each case runs ``dlinfer.optimize`` int8 in a fresh process and reports how far its peak
resident memory (VmHWM) rose during the call.
"""

from __future__ import annotations

import subprocess
import sys

import any_onnx_models as models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from peak_memory import HAVE_VMHWM, HIGH_WATER

_CALIBRATE = HIGH_WATER + """
import sys
import numpy as np
from dlinfer.optimize import optimize

model, out, count, side = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
calibration = rng.random((count, 3, side, side), dtype=np.float32)
evaluation = rng.random((32, 3, side, side), dtype=np.float32)
before = high_water()
optimize(model, out, "int8", calibrate=calibration, samples=count, eval=evaluation,
         max_drop=100)
print((high_water() - before) // 1024)
"""


def _wide_cnn(path: str) -> str:
    """~0.9 MB of float tensors per sample: three 64-channel 24x24 Conv+Relu pairs."""
    nodes, weights = models._cnn_body(np.random.default_rng(5), "x", (64, 64, 64), 10)
    onnx.save(models._model(nodes, "wide", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [-1, 3, 24, 24])], [helper.make_tensor_value_info(
            "probs", TensorProto.FLOAT, [-1, 10])], weights), path)
    return path


def _large_activations(path: str) -> str:
    """~21 MB of float tensors per sample at 128x128 for few FLOPs: a 1x1 Conv to 64
    channels, then elementwise layers, then a 1x1 Conv to 8 and the head."""
    rng = np.random.default_rng(6)
    weights = {"w0": (rng.standard_normal((64, 3, 1, 1)) * 0.5).astype(np.float32),
               "w1": (rng.standard_normal((8, 64, 1, 1)) * 0.1).astype(np.float32),
               "scale": np.full((64, 1, 1), 0.5, np.float32),
               "shift": np.full((64, 1, 1), 0.1, np.float32),
               "head_w": (rng.standard_normal((8, 4)) * 0.5).astype(np.float32),
               "head_b": np.zeros(4, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0"),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Mul", ["r0", "scale"], ["m0"], name="mul0"),
             helper.make_node("Add", ["m0", "shift"], ["a0"], name="add0"),
             helper.make_node("Relu", ["a0"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w1"], ["c1"], name="conv1"),
             helper.make_node("GlobalAveragePool", ["c1"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], name="head"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    onnx.save(models._model(nodes, "large", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [-1, 3, 128, 128])], [helper.make_tensor_value_info(
            "probs", TensorProto.FLOAT, [-1, 4])], weights), path)
    return path


def _growth(model: str, out: str, count: int, side: int) -> int:
    """MiB the peak resident memory rose during one optimize call, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", _CALIBRATE, model, out, str(count),
                             str(side)], capture_output=True, text=True, timeout=600,
                            check=True)
    return int(result.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_VMHWM, reason="reads Linux's VmHWM")
def test_int8_calibration_peak_does_not_grow_with_samples(tmp_path):
    model = _wide_cnn(str(tmp_path / "wide.onnx"))
    few = _growth(model, str(tmp_path / "few.onnx"), 64, 24)
    many = _growth(model, str(tmp_path / "many.onnx"), 512, 24)
    print(f"peak RSS growth of optimize int8: 64 samples {few} MiB, 512 samples {many} MiB")
    # 512 samples hold 448 x 6.9 KB more calibration input (3 MB) and the rest must not
    # grow: the margin is far below the ~400 MB that kept activations would add.
    assert many <= few + 40


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_VMHWM, reason="reads Linux's VmHWM")
def test_int8_runs_shrink_to_fit_large_activations(tmp_path):
    """64 samples of ~21 MB of tensors each: runs of 64 would hold 1.4 GB at once in the
    calibrator and twice that in the worst-layer search; runs sized by memory.within hold
    ACTIVATION_BUDGET (256 MiB) of tensors (measured: the call's peak rose 640 MiB, the
    arena and the comparison's float64 copies included)."""
    from dlinfer.optimize.memory import per_sample_bytes

    model = _large_activations(str(tmp_path / "large.onnx"))
    x = np.zeros((2, 3, 128, 128), np.float32)
    assert per_sample_bytes(model, {"x": x}, 2) > 20e6
    growth = _growth(model, str(tmp_path / "large.int8.onnx"), 64, 128)
    print(f"peak RSS growth of optimize int8 at ~21 MB of tensors per sample: {growth} MiB")
    assert growth < 1000


def test_run_size_follows_the_activation_bytes(tmp_path):
    """Each float tensor counted once per sample, at the run's real input shape."""
    from dlinfer.optimize.memory import ACTIVATION_BUDGET, per_sample_bytes, within

    model = _large_activations(str(tmp_path / "large.onnx"))
    per = per_sample_bytes(model, {"x": np.zeros((2, 3, 128, 128), np.float32)}, 2)
    # c0 r0 m0 a0 r1 (64 x 128 x 128) and c1 (8 x 128 x 128), then the head's few floats
    assert 0 <= per - 4 * (5 * 64 + 8) * 128 * 128 < 100
    assert within(per, 64) == ACTIVATION_BUDGET // per == 12
    assert within(None, 64) == 64 and within(1.0, 64) == 64 and within(1e12, 64) == 1
