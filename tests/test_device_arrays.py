"""Device arrays in and out of Model.run: OrtValues, DLPack tensors, keep_on_device.

On CPU the model's device is the CPU, so OrtValues there and NumPy through DLPack are
bound without a copy.  Marked `gpu`: the same on CUDA, CUDA OrtValues in and out.
"""

from __future__ import annotations

import dlinfer
import numpy as np
import onnxruntime as ort
import pytest
from device_checks import CUDA_USABLE, conv_classifier, two_input_model
from dlinfer.verification.compare import compare
from optional import onnxruntime_only, requires


class DLPackTensor:
    """A tensor that is not a NumPy array but speaks DLPack (as torch and CuPy do)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.dtype = array.dtype

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


@pytest.fixture(scope="module")
def conv_path(tmp_path_factory) -> str:
    return conv_classifier(tmp_path_factory.mktemp("device_arrays"), 21)


@pytest.fixture(scope="module")
def two_input_path(tmp_path_factory) -> str:
    return two_input_model(tmp_path_factory.mktemp("device_arrays2"), 22)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(23).standard_normal((3, 3, 8, 8), np.float32)


@pytest.mark.parametrize("io_binding", [False, True], ids=["run", "io_binding"])
def test_ortvalue_and_dlpack_inputs_give_the_array_answer(conv_path, x, io_binding):
    m = dlinfer.Model(conv_path, io_binding=io_binding)
    want = dlinfer.Model(conv_path).run(x)
    np.testing.assert_array_equal(m.run(ort.OrtValue.ortvalue_from_numpy(x)), want)
    np.testing.assert_array_equal(m.run(DLPackTensor(x)), want)
    np.testing.assert_array_equal(m.run({"input": DLPackTensor(x)}), want)


@onnxruntime_only("keep_on_device (OrtValues out)")
def test_keep_on_device_returns_ortvalues_on_the_models_device(conv_path, x):
    m = dlinfer.Model(conv_path)
    want = m.run(x)
    for given in (x, ort.OrtValue.ortvalue_from_numpy(x), DLPackTensor(x)):
        got = m.run(given, keep_on_device=True)
        assert isinstance(got, ort.OrtValue) and got.device_name() == "cpu"
        assert got.shape() == [3, 5]
        np.testing.assert_array_equal(got.numpy(), want)
    # an output kept on the device feeds the next model without leaving it
    again = m.run(ort.OrtValue.ortvalue_from_numpy(x), keep_on_device=True)
    np.testing.assert_array_equal(np.from_dlpack(again._ortvalue), want)


def test_dlpack_input_is_not_copied_on_cpu(conv_path, x):
    """The DLPack view shares the caller's memory: writes after wrapping are seen."""
    m = dlinfer.Model(conv_path)
    data = x.copy()
    tensor = DLPackTensor(data)
    value = ort.OrtValue.from_dlpack(tensor)
    data[:] = x[::-1]
    np.testing.assert_array_equal(m.run(value), m.run(x[::-1].copy()))


def _image_and_features() -> tuple[np.ndarray, np.ndarray]:
    """A batch of two for the two-input model: ``image`` (2, 4, 4), ``features`` (2, 3)."""
    rng = np.random.default_rng(24)
    return rng.standard_normal((2, 4, 4), np.float32), rng.standard_normal((2, 3), np.float32)


def test_multi_input_device_values(two_input_path):
    m = dlinfer.Model(two_input_path)
    a, b = _image_and_features()
    want = m.run(a, b)
    got = m.run(ort.OrtValue.ortvalue_from_numpy(a), DLPackTensor(b))
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    with pytest.raises(dlinfer.InputShapeError, match="batch sizes differ"):
        m.run(ort.OrtValue.ortvalue_from_numpy(a), DLPackTensor(b[:1]))


@onnxruntime_only("keep_on_device (OrtValues out)")
def test_multi_input_device_values_kept_on_device(two_input_path):
    m = dlinfer.Model(two_input_path)
    a, b = _image_and_features()
    want = m.run(a, b)
    kept = m.run({"image": a, "features": ort.OrtValue.ortvalue_from_numpy(b)},
                 keep_on_device=True)
    for name in want:
        np.testing.assert_array_equal(kept[name].numpy(), want[name])


@pytest.mark.parametrize(
    "value, error, match",
    [
        (lambda x: ort.OrtValue.ortvalue_from_numpy(x.astype(np.float64)),
         dlinfer.InputDtypeError, "needs dtype float32, got float64"),
        (lambda x: DLPackTensor(x[:, :, :4].copy()), dlinfer.InputShapeError, "axis 2"),
        # OpenVINO reads a strided host tensor as a NumPy view (and copies it)
        pytest.param(lambda x: DLPackTensor(x[:, :, :4]), dlinfer.InputError,
                     "onnxruntime cannot take this DLPackTensor through DLPack: .*contiguous",
                     marks=onnxruntime_only("its DLPack import refuses strided tensors")),
        (lambda x: ort.OrtValue.ortvalue_from_numpy(x[0]), dlinfer.InputRankError, "rank 4"),
        (lambda x: DLPackTensor(x[:0]), dlinfer.EmptyBatchError, "empty batch"),
    ],
    ids=["dtype", "shape", "strided", "rank", "empty"],
)
def test_bad_device_values_fail_by_name(conv_path, x, value, error, match):
    with pytest.raises(error, match=match):
        dlinfer.Model(conv_path).run(value(x))


def test_out_is_for_host_arrays_only(conv_path, x):
    m = dlinfer.Model(conv_path, io_binding=True)
    with pytest.raises(dlinfer.InputError, match="out= takes host arrays"):
        m.run(DLPackTensor(x), out=np.empty((3, 5), np.float32))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_USABLE, reason="no usable CUDA execution provider here")
def test_cuda_ortvalues_in_and_out(conv_path, x):
    cpu = dlinfer.Model(conv_path).run(x)
    m = dlinfer.Model(conv_path, device="cuda")
    on_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    got = m.run(on_gpu, keep_on_device=True)
    assert got.device_name() == "cuda"
    for result in (got.numpy(), m.run(on_gpu), m.run(x, keep_on_device=True).numpy()):
        check = compare("cuda vs cpu", result, cpu, atol=1e-4, rtol=1e-3)
        assert check.ok, check
    # a result left on the GPU is a valid input of the next call there
    assert m.run(ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0), keep_on_device=True).shape() \
        == [3, 5]


@pytest.mark.gpu
@requires("torch")
@pytest.mark.skipif(not CUDA_USABLE, reason="no usable CUDA execution provider here")
def test_cuda_torch_tensor_in(conv_path, x):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    cpu = dlinfer.Model(conv_path).run(x)
    got = dlinfer.Model(conv_path, device="cuda").run(torch.from_numpy(x).cuda())
    check = compare("torch cuda input", got, cpu, atol=1e-4, rtol=1e-3)
    assert check.ok, check


@pytest.mark.gpu
@requires("cupy")
@pytest.mark.skipif(not CUDA_USABLE, reason="no usable CUDA execution provider here")
def test_cuda_cupy_array_in(conv_path, x):
    import cupy

    cpu = dlinfer.Model(conv_path).run(x)
    got = dlinfer.Model(conv_path, device="cuda").run(cupy.asarray(x))
    check = compare("cupy input", got, cpu, atol=1e-4, rtol=1e-3)
    assert check.ok, check
