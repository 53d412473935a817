"""Device selection: strict explicit devices, an honest "auto", the lean run() path."""

from __future__ import annotations

import logging

import dlinfer
import numpy as np
import onnxruntime as ort
import pytest
from dlinfer.tools.doctor import probe_provider
from optional import cpu_providers, onnxruntime_only
from reference import assert_close

CUDA_USABLE = probe_provider("CUDAExecutionProvider")["usable"] if (
    "CUDAExecutionProvider" in ort.get_available_providers()
) else False
gpu = pytest.mark.skipif(not CUDA_USABLE, reason="no usable CUDA execution provider here")


class _Subclass(np.ndarray):
    pass


@pytest.fixture(scope="module")
def x3() -> np.ndarray:
    return np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)


@onnxruntime_only("CUDA and TensorRT devices")
@pytest.mark.skipif(CUDA_USABLE, reason="CUDA works here")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "tensorrt"])
def test_explicit_gpu_device_raises_with_onnxruntime_reason(mnist_onnx, device, capfd):
    with pytest.raises(dlinfer.ProviderUnavailableError) as info:
        dlinfer.Model(mnist_onnx, device=device)
    exc = info.value
    assert exc.reason in str(exc)
    assert (f"onnxruntime {ort.__version__} needs" in exc.reason
            or "install onnxruntime-gpu" in exc.reason)
    # dlinfer found the reason itself; onnxruntime did not get to print fallback errors
    assert "[E:onnxruntime" not in capfd.readouterr().err


@pytest.mark.skipif(CUDA_USABLE, reason="CUDA works here")
def test_auto_picks_cpu_and_announces_it(mnist_onnx, caplog):
    with caplog.at_level(logging.INFO, logger="dlinfer"):
        m = dlinfer.Model(mnist_onnx, device="auto")
    assert m.device == "cpu" and m.providers == cpu_providers()
    assert m.device_reason.startswith("device='auto' chose cpu: ")
    assert any("device='auto' chose cpu" in r.getMessage() for r in caplog.records)


@onnxruntime_only("session_options")
def test_session_options_passthrough(mnist_onnx, x3):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    m = dlinfer.Model(mnist_onnx, session_options=options)
    assert_close(m.run(x3), dlinfer.Model(mnist_onnx).run(x3), atol=1e-6)


def test_io_binding_matches_plain_run(mnist_onnx, x3):
    plain = dlinfer.Model(mnist_onnx)
    bound = dlinfer.Model(mnist_onnx, io_binding=True)
    want = plain.run(x3)
    got = bound.run(x3)
    np.testing.assert_array_equal(got, want)
    out = np.full((3, 10), np.nan, np.float32)
    assert bound.run(x3, out=out) is out
    np.testing.assert_array_equal(out, want)
    # a new batch size and a fresh result array each call without out=
    np.testing.assert_array_equal(bound.run(x3[:1]), want[:1])
    assert bound.run(x3) is not bound.run(x3)


@pytest.mark.parametrize(
    "out, error, match",
    [
        (np.empty((3, 10), np.float64), dlinfer.InputDtypeError, "float32"),
        (np.empty((2, 10), np.float32), dlinfer.InputShapeError, r"\(3, 10\)"),
        (np.empty((10, 3), np.float32).T, dlinfer.InputError, "C-contiguous"),
        ([0.0] * 30, dlinfer.InputDtypeError, "list"),
    ],
    ids=["dtype", "shape", "strided", "not-array"],
)
def test_bad_out_arrays(mnist_onnx, x3, out, error, match):
    with pytest.raises(error, match=match):
        dlinfer.Model(mnist_onnx, io_binding=True).run(x3, out=out)


def test_out_needs_io_binding(mnist_onnx, x3):
    with pytest.raises(dlinfer.InputError, match="io_binding=True"):
        dlinfer.Model(mnist_onnx).run(x3, out=np.empty((3, 10), np.float32))


@pytest.mark.parametrize("io_binding", [False, True], ids=["run", "io_binding"])
def test_slow_path_inputs_still_work_and_fail_clearly(mnist_onnx, x3, io_binding):
    m = dlinfer.Model(mnist_onnx, io_binding=io_binding)
    want = dlinfer.Model(mnist_onnx).run(x3)
    fortran = np.asfortranarray(x3)
    np.testing.assert_array_equal(m.run(fortran), want)  # non-contiguous: copied, not refused
    np.testing.assert_array_equal(m.run({"images": x3}), want)
    np.testing.assert_array_equal(m.run(x3.view(_Subclass)), want)  # not the exact type
    with pytest.raises(dlinfer.EmptyBatchError):
        m.run(np.zeros((0, 28, 28, 1), np.float32))
    with pytest.raises(dlinfer.InputShapeError, match="axis 1"):
        m.run(np.zeros((1, 27, 28, 1), np.float32))
    with pytest.raises(dlinfer.InputDtypeError):
        m.run(x3.astype(np.float64))


@pytest.mark.gpu
@gpu
def test_cuda_runs_on_cuda_and_matches_cpu(mnist_onnx, x3):
    m = dlinfer.Model(mnist_onnx, device="cuda")
    assert m.providers[0] == "CUDAExecutionProvider"
    assert_close(m.run(x3), dlinfer.Model(mnist_onnx).run(x3), atol=1e-4, context="cuda vs cpu")
    bound = dlinfer.Model(mnist_onnx, device="cuda", io_binding=True)
    assert_close(bound.run(x3), m.run(x3), atol=1e-6, context="io_binding vs run on cuda")


@pytest.mark.parametrize("batch", [3, 8], ids=["copied-input", "zero-copy-input"])
def test_io_binding_reuse_sees_new_data_and_new_shapes(mnist_onnx, batch):
    """Bindings are cached: in-place changes, new arrays and new shapes must all show.

    3 digits (9 KB) are copied into a buffer that stays bound; 8 (25 KB) are bound as is.
    """
    plain = dlinfer.Model(mnist_onnx)
    bound = dlinfer.Model(mnist_onnx, io_binding=True)
    data = np.random.default_rng(1).random((2, batch, 28, 28, 1), dtype=np.float32)
    x = data[0].copy()
    out = np.empty((batch, 10), np.float32)
    np.testing.assert_array_equal(bound.run(x, out=out), plain.run(data[0]))
    x[:] = data[1]  # same object, new contents
    np.testing.assert_array_equal(bound.run(x, out=out), plain.run(data[1]))
    np.testing.assert_array_equal(bound.run(data[0].copy(), out=out), plain.run(data[0]))
    with pytest.raises(dlinfer.InputShapeError, match=r"\(1, 10\)"):
        bound.run(x[:1], out=out)  # same out, but the batch changed
    np.testing.assert_array_equal(bound.run(x[:1]), plain.run(data[1][:1]))
    other = np.empty((batch, 10), np.float32)
    assert bound.run(x, out=other) is other
    np.testing.assert_array_equal(other, plain.run(data[1]))


def test_io_binding_per_thread(mnist_onnx, x3):
    from concurrent.futures import ThreadPoolExecutor

    bound = dlinfer.Model(mnist_onnx, io_binding=True, threads=1)
    want = dlinfer.Model(mnist_onnx).run(x3)
    batches = [x3[i % 3 : i % 3 + 1].copy() for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(bound.run, batches))
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, want[i % 3 : i % 3 + 1])


@pytest.mark.skipif(CUDA_USABLE, reason="CUDA works here")
def test_cli_info_says_what_auto_chose(mnist_onnx, capsys):
    from dlinfer.tools import cli

    assert cli.main(["info", mnist_onnx, "--device", "auto"]) == 0
    assert "device='auto' chose cpu: " in capsys.readouterr().out
