"""`dlinfer doctor`: facts are measured, and CUDA is reported unusable where it is."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from dlinfer.tools import cli, doctor
from optional import onnxruntime_only, requires

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


# -- the convolution probe and per-node provider assignment ------------------------------


@requires("onnx")
def test_conv_probe_is_valid_onnx_and_exact_on_cpu():
    import onnx
    from dlinfer.tools import probe
    from reference import conv2d_nhwc

    data = probe.conv_probe_model_bytes()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    x, want = probe.conv_probe_reference()
    weights = {t.name: onnx.numpy_helper.to_array(t)
               for t in onnx.load_from_string(data).graph.initializer}
    # the naive NumPy conv of tests/reference.py agrees with the probe's own reference
    nhwc = conv2d_nhwc(x.transpose(0, 2, 3, 1).astype(np.float64),
                       weights["w"].transpose(2, 3, 1, 0).astype(np.float64),
                       weights["b"], pads=(1, 1, 1, 1))
    np.testing.assert_allclose(np.maximum(nhwc, 0).transpose(0, 3, 1, 2), want, atol=1e-12)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], want.astype(np.float32))


def test_cpu_probe_runs_the_convolution_and_records_where(facts):
    probe = facts["providers"]["probes"]["CPUExecutionProvider"]
    assert probe["usable"]
    placed = probe["assignment"]
    assert placed["recorded"] and placed["cpu_fallbacks"] == []
    assert placed["nodes_per_provider"] == {"CPUExecutionProvider": 2}  # Conv, Relu


@onnxruntime_only("node-to-provider assignment")
def test_assignment_names_every_node_and_the_cpu_fallbacks(mnist_cnn_like):
    """The CPU provider assigns this model fully; asked as if CUDA were wanted, every node
    is a CPU fallback and is named."""
    import dlinfer
    from dlinfer.runtime import assignment

    model = dlinfer.Model(mnist_cnn_like)
    nodes = assignment.node_assignment(model.session)
    assert nodes and {n["provider"] for n in nodes} == {"CPUExecutionProvider"}
    assert {n["op_type"] for n in nodes} >= {"Conv", "Relu", "Gemm"}
    on_cpu = assignment.of_model(model)
    assert on_cpu["cpu_fallbacks"] == [] and on_cpu["nodes_per_provider"] == {
        "CPUExecutionProvider": len(nodes)}
    as_if_cuda = assignment.summarize(nodes, CUDA)
    assert [f["op_type"] for f in as_if_cuda["cpu_fallbacks"]] == [n["op_type"] for n in nodes]
    text = "\n".join(assignment.describe(as_if_cuda))
    assert f"CPU fallbacks ({len(nodes)} nodes not on {CUDA})" in text and "(Conv)" in text
    # a session opened with the caller's own options records nothing, and says so
    bare = ort.InferenceSession(mnist_cnn_like, providers=["CPUExecutionProvider"])
    assert assignment.node_assignment(bare) is None
    assert "not recorded" in assignment.describe(assignment.summarize(None, CUDA))[0]


@onnxruntime_only("node-to-provider assignment")
def test_info_and_bench_report_the_assignment(mnist_cnn_like, capsys):
    import dlinfer

    assert cli.main(["info", mnist_cnn_like, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["assignment"]["recorded"] and data["assignment"]["cpu_fallbacks"] == []
    assert cli.main(["info", mnist_cnn_like]) == 0
    assert "nodes per provider: CPUExecutionProvider" in capsys.readouterr().out
    results = dlinfer.benchmark(mnist_cnn_like, "cpu", [1], iters=2, warmup=0, environment={})
    assert results.settings["assignment"]["cpu"]["recorded"]
    assert "cpu: nodes per provider: CPUExecutionProvider" in results.table()


def test_preload_dlls_output_goes_into_the_report_not_stdout(monkeypatch, capsys):
    import importlib.util

    from dlinfer.runtime import providers

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "nvidia" else real_find_spec(name, *a))
    monkeypatch.setattr(ort, "preload_dlls",
                        lambda *a, **k: print("WARNING: another CUDA 12.8 found in torch/lib"),
                        raising=False)
    monkeypatch.setattr(providers, "PRELOAD_OUTPUT", "")
    assert cli.main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)  # nothing else on stdout
    assert "another CUDA 12.8 found" in data["cuda"]["preload_output"]


@pytest.fixture(scope="module")
def mnist_cnn_like(tmp_path_factory) -> str:
    """A small conv classifier built with onnx.helper: Conv, Relu, pooling, Gemm."""
    from device_checks import conv_classifier

    return conv_classifier(tmp_path_factory.mktemp("doctor"), 25)
