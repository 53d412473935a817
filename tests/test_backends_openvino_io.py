"""How a batch reaches OpenVINO (docs/runtime.md, "No copies on the way in"): the array
Model.run is given, and the batch Classifier's native preprocessing writes, back the
infer request's input tensor themselves; a read-only array is copied and answers the same.
And a process may end while OpenVINO compiles a shape in the background.
"""

from __future__ import annotations

import subprocess
import sys

import dlinfer
import numpy as np
from optional import requires
from reference import assert_close

openvino = requires("openvino")


def _input_address(model: dlinfer.Model) -> int:
    """Where the calling thread's infer request reads its (only) input."""
    requests = model._runner._local.requests  # this thread's, by compiled model
    (request, inputs), = (e for e in requests.values())
    return request.get_tensor(inputs[0][0]).data.ctypes.data


@openvino
def test_model_run_shares_the_callers_array(mnist_onnx, mnist_digits):
    model = dlinfer.Model(mnist_onnx, backend="openvino", threads=1)
    x = (mnist_digits.x_test[:4, ..., None] / np.float32(255)).astype(np.float32)
    want = model.run(x)
    assert _input_address(model) == x.ctypes.data
    frozen = x.copy()
    frozen.flags.writeable = False  # np.frombuffer's arrays: OpenVINO cannot share them
    assert_close(model.run(frozen), want, atol=0, rtol=0, context="a read-only input (copied)")


@openvino
def test_classifier_preprocesses_straight_into_the_input(mnist_onnx, mnist_digits, monkeypatch):
    clf = dlinfer.Classifier(mnist_onnx, backend="openvino", threads=1)
    batches = []
    preprocess = clf.preprocess
    monkeypatch.setattr(clf, "preprocess", lambda images: batches.append(preprocess(images))
                        or batches[-1])
    clf.predict_proba(mnist_digits.x_test[:3])
    assert _input_address(clf.model) == batches[0].ctypes.data


@openvino
def test_a_script_ending_during_a_background_compile_exits_cleanly(mnist_onnx):
    # The 2nd call with a shape compiles it in a thread (runner.py); a process ending
    # while OpenVINO compiles there aborted with exit status 134.
    script = ("import sys, numpy as np, dlinfer\n"
              "m = dlinfer.Model(sys.argv[1], backend='openvino')\n"
              "x = np.zeros((3, 28, 28, 1), np.float32)\n"
              "m.run(x); m.run(x)\n")
    done = subprocess.run([sys.executable, "-c", script, mnist_onnx], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
