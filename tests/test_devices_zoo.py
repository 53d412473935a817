"""CUDA against CPU for every zoo model, on the GPU host, without TensorFlow.

The zoo's ONNX files are exported where TensorFlow is (``benchmarks/gpu_check.sh
--prepare``) and carried to the GPU host; ``DLINFER_ZOO_ONNX`` names the folder.  Each
model runs on CPU and on CUDA, through ``run`` and through IO binding (whose bind-time
copy is the regression of tests/test_io_binding.py, here for real), at batch 1 and 8,
on the inputs ``dlinfer bench`` would make.

Tolerance: TF32 is switched off (``use_tf32=False``) so both sides compute in float32;
what remains is summation order (cuDNN's algorithms against MLAS): 1e-4 absolute plus
1e-3 relative, with no flipped argmax for the classifiers.  Measured figures go into
benchmarks/README.md when a CUDA machine runs this.
"""

from __future__ import annotations

import os

import dlinfer
import numpy as np
import pytest
from device_checks import CUDA_USABLE
from dlinfer.tools.bench import _inputs
from dlinfer.verification.compare import compare

FOLDER = os.environ.get("DLINFER_ZOO_ONNX", "")
MODELS = sorted(f[:-5] for f in os.listdir(FOLDER) if f.endswith(".onnx")) \
    if os.path.isdir(FOLDER) else []

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA_USABLE, reason="no usable CUDA execution provider here"),
    pytest.mark.skipif(not MODELS, reason="no zoo ONNX files: export them with "
                       "`benchmarks/gpu_check.sh --prepare` and set DLINFER_ZOO_ONNX"),
]


@pytest.mark.parametrize("name", MODELS or ["none"])
@pytest.mark.parametrize("io_binding", [False, True], ids=["run", "io_binding"])
def test_cuda_matches_cpu(name, io_binding):
    path = os.path.join(FOLDER, f"{name}.onnx")
    cpu = dlinfer.Model(path)
    cuda = dlinfer.Model(path, device="cuda", io_binding=io_binding, cuda={"use_tf32": False})
    assert cuda.providers[0] == "CUDAExecutionProvider"
    fixed = cpu.inputs[0].shape[0]
    for batch in ([fixed] if fixed else [1, 8]):
        x = _inputs(cpu, batch, False, np.random.default_rng(batch))
        want, got = cpu.run(x), cuda.run(x)
        wants = want if isinstance(want, dict) else {"output": want}
        gots = got if isinstance(got, dict) else {"output": got}
        for key in wants:
            check = compare(f"{name}[{key}] batch {batch}", gots[key], wants[key],
                            atol=1e-4, rtol=1e-3)
            assert check.ok, check
            if cpu.spec is not None and "classification" in cpu.spec.task:
                assert not check.argmax_flips, check
        if io_binding and not isinstance(x, dict):
            x2 = _inputs(cpu, batch, False, np.random.default_rng(batch + 100))
            x[...] = x2  # the same array, new contents: the answer must follow
            check = compare(f"{name} rebound", cuda.run(x), cpu.run(x2), atol=1e-4, rtol=1e-3)
            assert check.ok, check
