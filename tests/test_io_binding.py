"""IO binding stays right on devices where binding copies the input (CUDA).

onnxruntime copies a host input to the device when it is *bound*, not when the session
runs.  These tests make that happen on CPU: ``dlinfer.runtime.binding.bind_input`` is
swapped for one that binds a snapshot of the array, and the device rule says binding
copies, as it does on CUDA.  Calling ``run`` again with the same array object after
changing its contents must give the answer for the new contents.  Before the fix,
dlinfer kept a binding made for the same array object (or copied small inputs into a
host buffer that stayed bound), which on CUDA returns the first call's answer forever.

The models come from onnx.helper with seeded random weights, so the `gpu`-marked test
runs on a GPU host that has neither TensorFlow nor the MNIST data.
"""

from __future__ import annotations

import dlinfer
import numpy as np
import pytest
from device_checks import CUDA_USABLE, conv_classifier, two_input_model
from dlinfer.runtime import binding as rt_binding
from dlinfer.verification.compare import compare
from optional import onnxruntime_only

H = W = 8  # 3x8x8 float32 = 768 bytes per image: batch 3 takes the small-input copy path


@pytest.fixture(scope="module")
def conv_path(tmp_path_factory) -> str:
    return conv_classifier(tmp_path_factory.mktemp("io_binding"), 18)


@pytest.fixture(scope="module")
def two_input_path(tmp_path_factory) -> str:
    return two_input_model(tmp_path_factory.mktemp("io_binding2"), 19)


@pytest.fixture
def binding_snapshots(monkeypatch) -> list[np.ndarray]:
    """Bind a copy of every input and say binding copies, as onnxruntime does on CUDA."""
    kept: list[np.ndarray] = []  # the binding points into these: keep them alive

    def snapshot(binding, name, value):
        copy = np.array(value, copy=True)
        kept.append(copy)
        binding.bind_input(name, copy)

    monkeypatch.setattr(rt_binding, "bind_input", snapshot)
    monkeypatch.setattr(rt_binding, "binding_copies_input", lambda device: True)
    return kept


def _images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, H, W), np.float32)


@onnxruntime_only("IO binding (dlinfer.runtime.binding.bind_input)")
@pytest.mark.parametrize("batch", [3, 64], ids=["small-input", "large-input"])
@pytest.mark.parametrize("call", ["array", "dict"])
def test_same_array_new_contents_gives_new_answer(conv_path, binding_snapshots, batch, call):
    plain = dlinfer.Model(conv_path)
    bound = dlinfer.Model(conv_path, io_binding=True)
    x = _images(batch, 1)
    wrap = (lambda a: a) if call == "array" else (lambda a: {"input": a})
    np.testing.assert_array_equal(bound.run(wrap(x)), plain.run(x))
    for seed in (2, 3):
        x[:] = _images(batch, seed)  # the same object, new contents
        np.testing.assert_array_equal(bound.run(wrap(x)), plain.run(x),
                                      err_msg=f"stale result after rewriting the input ({seed})")
    out = np.empty((batch, 5), np.float32)
    x[:] = _images(batch, 4)
    assert bound.run(wrap(x), out=out) is out
    np.testing.assert_array_equal(out, plain.run(x))
    other = _images(batch, 5)  # a new array of the same shape
    np.testing.assert_array_equal(bound.run(wrap(other)), plain.run(other))
    assert binding_snapshots, "the swapped bind_input was never called"


def test_two_inputs_each_rebound(two_input_path, binding_snapshots):
    plain = dlinfer.Model(two_input_path)
    bound = dlinfer.Model(two_input_path, io_binding=True)
    rng = np.random.default_rng(6)
    a = rng.standard_normal((2, 4, 4), np.float32)
    b = rng.standard_normal((2, 3), np.float32)
    for _ in range(3):
        got, want = bound.run(a, b), plain.run(a, b)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        a[:] = rng.standard_normal(a.shape, np.float32)
        b[:] = rng.standard_normal(b.shape, np.float32)


@onnxruntime_only("IO binding (dlinfer.runtime.binding.bind_input)")
def test_cpu_keeps_its_zero_copy_binding(conv_path, monkeypatch):
    """On CPU the binding points at the array, so the same array is bound only once."""
    calls: list[str] = []
    real = rt_binding.bind_input

    def counting(binding, name, value):
        calls.append(name)
        real(binding, name, value)

    monkeypatch.setattr(rt_binding, "bind_input", counting)
    plain = dlinfer.Model(conv_path)
    bound = dlinfer.Model(conv_path, io_binding=True)
    x = _images(64, 7)
    for seed in (8, 9, 10):
        x[:] = _images(64, seed)
        np.testing.assert_array_equal(bound.run(x), plain.run(x))
    assert calls == ["input"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_USABLE, reason="no usable CUDA execution provider here")
@pytest.mark.parametrize("batch", [3, 64], ids=["small-input", "large-input"])
def test_cuda_io_binding_sees_rewritten_input(conv_path, batch):
    cpu = dlinfer.Model(conv_path)
    bound = dlinfer.Model(conv_path, device="cuda", io_binding=True)
    x = _images(batch, 11)
    for seed in (12, 13, 14):
        result = compare("cuda io_binding", bound.run(x), cpu.run(x), atol=1e-4, rtol=1e-3)
        assert result.ok, result
        x[:] = _images(batch, seed)
