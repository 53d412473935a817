"""Every kind of bad input gets a clear dlinfer exception naming the problem."""

from __future__ import annotations

import dlinfer
import numpy as np
import pytest
from dlinfer import errors
from optional import onnxruntime_only


@pytest.fixture(scope="module")
def clf(mnist_onnx):
    return dlinfer.Classifier(mnist_onnx)


# -- model files ---------------------------------------------------------------------------

def test_missing_model_file(tmp_path, backend):
    path = tmp_path / "nope.onnx"
    with pytest.raises(dlinfer.ModelNotFoundError, match="nope.onnx"):
        dlinfer.Model(path, backend=backend)
    with pytest.raises(FileNotFoundError):  # also a built-in FileNotFoundError
        dlinfer.Classifier(path)


def test_truncated_model_file(tmp_path, mnist_onnx, backend):
    data = open(mnist_onnx, "rb").read()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(dlinfer.ModelLoadError, match="truncated.onnx"):
        dlinfer.Model(path, backend=backend)


def test_not_onnx_file(tmp_path, backend):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(dlinfer.ModelLoadError, match="cannot load .*notes.onnx"):
        dlinfer.Model(path, backend=backend)


def test_directory_as_model(tmp_path, backend):
    with pytest.raises(dlinfer.ModelLoadError, match="directory"):
        dlinfer.Model(tmp_path, backend=backend)


# -- image files ---------------------------------------------------------------------------

def test_corrupt_image_file(clf, tmp_path, digit_pngs):
    data = open(digit_pngs[0][0], "rb").read()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(dlinfer.ImageDecodeError, match="cut.png"):
        clf.predict(str(path))


def test_not_an_image_file(clf, tmp_path):
    path = tmp_path / "readme.png"
    path.write_text("hello")
    with pytest.raises(dlinfer.ImageDecodeError, match="readme.png: not an image"):
        clf.predict([str(path)])


def test_missing_image_file(clf, tmp_path):
    with pytest.raises(dlinfer.ImageDecodeError, match="file not found"):
        clf.predict(str(tmp_path / "missing.png"))


# -- arrays --------------------------------------------------------------------------------

# Issue 4: uint8 RGB and RGBA arrays are now converted to the model's gray by the
# native pass; only channel counts no colour order has are refused (and floats,
# which are not converted).
@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    # (a bare (28, 28, 2) array would be 28 gray images of 28x2, so it goes in a list)
    [([28, 28, 2], np.uint8, "1, 3 or 4 channels, got 2"),
     ((2, 28, 28, 5), np.uint8, "1, 3 or 4 channels, got 5"),
     ((28, 28, 3), np.float32, "1-channel")],
    ids=["2-channels", "5-channel-batch", "float-rgb"],
)
def test_wrong_channel_count(clf, shape, dtype, message):
    images = [np.zeros(shape, dtype)] if isinstance(shape, list) else np.zeros(shape, dtype)
    with pytest.raises(dlinfer.ChannelError, match=message):
        clf.predict(images)


@pytest.mark.parametrize("shape", [(28,), (1, 1, 28, 28, 1)], ids=["rank1", "rank5"])
def test_wrong_rank_in_classifier(clf, shape):
    with pytest.raises(dlinfer.InputRankError, match="rank"):
        clf.predict(np.zeros(shape, np.uint8))


def test_wrong_rank_in_model_run(mnist_onnx, backend):
    with pytest.raises(dlinfer.InputRankError, match="needs rank 4"):
        dlinfer.Model(mnist_onnx, backend=backend).run(np.zeros((28, 28, 1), np.float32))


def test_wrong_size_float_array(clf):
    # uint8 arrays of any size are resized (issue 4); scaled floats are not.
    with pytest.raises(dlinfer.InputShapeError, match="28x28"):
        clf.predict(np.zeros((32, 32), np.float32))


def test_float_pixels_in_0_255_are_refused(clf):
    with pytest.raises(dlinfer.InputDtypeError, match=r"scaled to \[0, 1\]"):
        clf.predict(np.full((28, 28), 200.0, np.float32))


def test_nan_input_is_refused(clf):
    x = np.zeros((28, 28), np.float32)
    x[3, 4] = np.nan
    with pytest.raises(dlinfer.InputDtypeError, match="NaN"):
        clf.predict(x)


def test_integer_arrays_other_than_uint8_are_refused(clf):
    with pytest.raises(dlinfer.InputDtypeError, match="uint8"):
        clf.predict(np.zeros((28, 28), np.int64))


def test_uint8_into_a_float_model_input_is_refused(mnist_onnx, backend):
    with pytest.raises(dlinfer.InputDtypeError, match="needs dtype float32, got uint8"):
        dlinfer.Model(mnist_onnx, backend=backend).run(np.zeros((1, 28, 28, 1), np.uint8))


def test_float64_into_model_run_is_refused(mnist_onnx, backend):
    with pytest.raises(TypeError, match="float32"):
        dlinfer.Model(mnist_onnx, backend=backend).run(np.zeros((1, 28, 28, 1), np.float64))


@pytest.mark.parametrize(
    "empty",
    [[], np.zeros((0, 28, 28, 1), np.uint8), np.zeros((0, 28, 28), np.float32)],
    ids=["empty-list", "empty-uint8-batch", "empty-float-batch"],
)
def test_empty_batch_in_classifier(clf, empty):
    with pytest.raises(dlinfer.EmptyBatchError, match="empty"):
        clf.predict(empty)


def test_empty_batch_in_model_run(mnist_onnx, backend):
    with pytest.raises(dlinfer.EmptyBatchError):
        dlinfer.Model(mnist_onnx, backend=backend).run(np.zeros((0, 28, 28, 1), np.float32))


def test_wrong_input_names(mnist_onnx, backend):
    with pytest.raises(dlinfer.InputError, match="missing"):
        model = dlinfer.Model(mnist_onnx, backend=backend)
        model.run({"pixels": np.zeros((1, 28, 28, 1), np.float32)})


# -- devices -------------------------------------------------------------------------------

@onnxruntime_only("CUDA devices")
def test_cuda_request_without_cuda_raises_with_onnxruntime_reason(mnist_onnx):
    try:
        m = dlinfer.Model(mnist_onnx, device="cuda")
    except dlinfer.ProviderUnavailableError as exc:
        message = str(exc)
        assert "device='cuda:0'" in message
        assert "CPUExecutionProvider" in message  # what it would have run on instead
        # the real reason: the library that failed to load, or what onnxruntime needs
        assert "CUDA" in exc.reason and exc.reason in message
        assert isinstance(exc, RuntimeError)
    else:
        assert m.providers[0] == "CUDAExecutionProvider", "must never run CUDA on CPU"
        pytest.skip("CUDA really works here")


def test_every_error_is_a_dlinfer_error():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), dlinfer.DlinferError)
