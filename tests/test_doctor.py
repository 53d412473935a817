"""`dlinfer doctor`: facts are measured, and CUDA is reported unusable where it is."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from dlinfer.tools import cli, doctor
from optional import requires

CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def facts():
    return doctor.diagnose()


@requires("onnx")
def test_probe_model_is_valid_onnx_and_computes_relu():
    import onnx

    data = doctor.probe_model_bytes()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.array([-2.0, -0.5, 0.0, 3.0], np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], [0, 0, 0, 3])


def test_cpu_provider_is_usable(facts):
    probe = facts["providers"]["probes"]["CPUExecutionProvider"]
    assert probe["usable"] and probe["reason"] is None
    assert probe["active"] == ["CPUExecutionProvider"]


def test_doctor_json_parses_and_reports_cuda_not_usable_here(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("onnxruntime", "providers", "cuda", "gpu", "cpu"):
        assert key in data
    assert data["onnxruntime"]["version"] == ort.__version__
    assert set(data["providers"]["usable"]) <= set(data["providers"]["available"])
    if CUDA not in data["providers"]["available"]:
        pytest.skip("this onnxruntime build has no CUDA provider")
    cuda = data["providers"]["probes"][CUDA]
    if cuda["usable"]:
        pytest.skip("CUDA really works here")
    assert CUDA not in data["providers"]["usable"]
    # the reason is onnxruntime's/the loader's, not a guess
    assert "CUDA" in cuda["reason"] and ort.__version__ in cuda["reason"]
    assert data["cuda"]["required"]["cuda"]  # e.g. "13.0", from onnxruntime's build info


def test_doctor_text_says_why(capsys, facts):
    assert cli.main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "CPUExecutionProvider" in text and "usable" in text
    if CUDA in facts["providers"]["available"] and not facts["providers"]["probes"][CUDA]["usable"]:
        assert f"{CUDA}        NOT usable:" in text


def test_cuda_libraries_come_from_the_provider_library(facts):
    cuda = facts["cuda"]
    if cuda["provider_library"] is None:
        pytest.skip("no CUDA provider library in this onnxruntime build")
    names = [lib["name"] for lib in cuda["libraries"]]
    assert any(n.startswith("libcudart.so") for n in names)  # read from its ELF DT_NEEDED
    assert any(n.startswith("libcudnn.so") for n in names)  # opened lazily; from the build info
    for lib in cuda["libraries"]:
        assert lib["found"] == (lib["error"] is None)
    assert cuda["missing"] == [lib["name"] for lib in cuda["libraries"] if not lib["found"]]


def test_cpu_facts(facts):
    cpu = facts["cpu"]
    assert cpu["logical_cores"] >= 1 and 1 <= cpu["usable_cores"] <= cpu["logical_cores"]
    assert isinstance(cpu["simd"], list)
    if cpu["arch"] in ("x86_64", "AMD64"):
        assert "sse2" in cpu["simd"]


def test_gpu_section_explains_absence(facts):
    gpu = facts["gpu"]
    if gpu["devices"]:
        assert all(d["name"] and d["driver"] for d in gpu["devices"])
    else:
        assert gpu["reason"] or gpu["source"]
