"""The runtime backends behind one API (docs/runtime.md): OpenVINO against onnxruntime.

Model.run's contract on both backends is checked by the runtime tests themselves (the
``backend`` fixture in conftest.py runs them on each); here: what only a second backend
raises (the missing extra, onnxruntime-only options), its answers against onnxruntime's
through Classifier, `dlinfer serve` and an int8 file, threads sharing one model, and
``backend="auto"``'s measured, cached choice.  The Ray Data test is in test_ray.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys

import dlinfer
import numpy as np
import pytest
from dlinfer.verification.compare import DEFAULT_ATOL, DEFAULT_RTOL
from optional import requires
from reference import assert_close

openvino = requires("openvino")
# float32 on both (OpenVINO runs f32 unless the file was gated for bf16): the two differ
# by summation order only, well inside verify's closeness rule.
ATOL, RTOL = DEFAULT_ATOL, DEFAULT_RTOL


def test_openvino_without_the_extra_names_it(mnist_onnx, monkeypatch, capsys):
    from dlinfer.tools.cli import main

    # import openvino -> ImportError, find_spec("openvino") -> None: as if not installed
    monkeypatch.setitem(sys.modules, "openvino", None)
    extra = r"pip install 'dlinfer\[openvino\]'"
    with pytest.raises(dlinfer.MissingExtraError, match=extra) as info:
        dlinfer.Model(mnist_onnx, backend="openvino")
    assert isinstance(info.value, ImportError)  # what `except ImportError` code expects
    with pytest.raises(dlinfer.MissingExtraError, match=extra):
        dlinfer.Classifier(mnist_onnx, backend="openvino")
    monkeypatch.setenv("DLINFER_BACKEND", "openvino")  # the default, asked for by name
    with pytest.raises(dlinfer.MissingExtraError, match=extra):
        dlinfer.Model(mnist_onnx)
    assert main(["info", mnist_onnx, "--backend", "openvino"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlinfer: error: ") and "dlinfer[openvino]" in err, err
    # auto falls back to onnxruntime and says what would add OpenVINO
    model = dlinfer.Model(mnist_onnx, backend="auto")
    assert model.backend == "onnxruntime" and "dlinfer[openvino]" in model.backend_reason


def test_a_backend_name_is_checked(mnist_onnx):
    with pytest.raises(dlinfer.InputError, match="backend must be 'auto', 'onnxruntime' or"):
        dlinfer.Model(mnist_onnx, backend="tensorflow")


@openvino
def test_openvino_refuses_what_configures_onnxruntime(mnist_onnx):
    with pytest.raises(dlinfer.InputError, match="cuda configure onnxruntime"):
        dlinfer.Model(mnist_onnx, backend="openvino", cuda={"gpu_mem_limit": 2**30})
    with pytest.raises(dlinfer.InputError, match="device='cpu' only"):
        dlinfer.Model(mnist_onnx, device="cuda", backend="openvino")


@openvino
def test_header_matches_what_onnxruntime_reads(mnist_onnx):
    from dlinfer.runtime.onnx_header import read_header

    ort = dlinfer.Model(mnist_onnx, backend="onnxruntime")
    header = read_header(mnist_onnx)
    assert header.metadata == ort.metadata
    assert header.inputs == [i.name for i in ort.inputs]
    assert header.outputs == [o.name for o in ort.outputs]
    for t in (*ort.inputs, *ort.outputs):  # the declared dtype and shape of each
        assert header.types[t.name] == (t.dtype, t.shape), t.name
    ov = dlinfer.Model(mnist_onnx, backend="openvino")
    assert (ov.inputs, ov.outputs, ov.spec) == (ort.inputs, ort.outputs, ort.spec)
    assert isinstance(ov, dlinfer.Model) and ov.backend == "openvino"


@openvino
def test_classifier_on_openvino_matches_onnxruntime(mnist_onnx, digit_pngs):
    paths, _ = digit_pngs
    want = dlinfer.Classifier(mnist_onnx, backend="onnxruntime").predict_proba(paths)
    clf = dlinfer.Classifier(mnist_onnx, backend="openvino")
    assert clf.model.backend == "openvino"
    assert_close(clf.predict_proba(paths), want, atol=ATOL, rtol=RTOL,
                 context="Classifier on openvino vs onnxruntime")


@openvino
def test_threads_sharing_one_openvino_model_get_their_own_answers(mnist_onnx, mnist_digits):
    model = dlinfer.Model(mnist_onnx, backend="openvino", threads=1)
    batches = [(mnist_digits.x_test[i * 7:(i + 1) * 7, ..., None] / np.float32(255))
               .astype(np.float32) for i in range(16)]
    alone = [model.run(b) for b in batches]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            together = list(pool.map(model.run, batches))
            for i, (a, b) in enumerate(zip(together, alone)):
                assert_close(a, b, context=f"batch {i} run from 8 threads at once")


@openvino
def test_an_int8_file_from_optimize_runs_on_either_backend(mnist_onnx, digit_pngs, tmp_path):
    from dlinfer.optimize import optimize

    paths, _ = digit_pngs
    out = str(tmp_path / "mlp.int8.onnx")
    optimize(mnist_onnx, out, "int8", calibrate=os.path.dirname(paths[0]), samples=10)
    on_ort = dlinfer.Classifier(out, backend="onnxruntime").predict_proba(paths)
    on_ov = dlinfer.Classifier(out, backend="openvino").predict_proba(paths)
    assert on_ov.shape == on_ort.shape == (10, 10)
    # Both run the file's QDQ pairs as int8 kernels, which round the same values but may
    # requantize at different points: one uint8 step of the softmax input, not more.
    assert_close(on_ov, on_ort, atol=0.02, context="int8 file on openvino vs onnxruntime")
    assert (on_ov.argmax(1) == on_ort.argmax(1)).all()


@requires("openvino", "starlette", "uvicorn")
def test_serve_on_openvino_matches_onnxruntime(mnist_onnx, digit_pngs, tmp_path):
    from serve_helpers import Server, call

    paths, _ = digit_pngs
    want = dlinfer.Classifier(mnist_onnx, backend="onnxruntime").predict(paths, top_k=10)
    server = Server(tmp_path, f"mnist={mnist_onnx}", "--backend", "openvino", "--threads", "1")
    try:
        status, meta = call(server, "GET", "/v1/models")
        assert status == 200
        described = json.dumps(meta)
        assert "openvino" in described, described
        for path, pred in zip(paths, want):
            with open(path, "rb") as f:
                status, body = call(server, "POST", "/v1/models/mnist/predict?top_k=10",
                                    f.read())
            assert status == 200, body
            got = {c["label"]: c["probability"] for c in body["predictions"][0]["top"]}
            expected = {c.label: c.probability for c in pred.top}
            labels = sorted(expected)
            assert_close(np.array([got[k] for k in labels]),
                         np.array([expected[k] for k in labels]), atol=ATOL, rtol=RTOL,
                         context=f"serve --backend openvino vs onnxruntime on {path}")
    finally:
        assert server.stop() == 0


@openvino
def test_auto_measures_once_then_reads_its_cache(mnist_onnx, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from dlinfer.runtime.backends import choice

    monkeypatch.setattr(choice, "_memo", {})
    first = dlinfer.Model(mnist_onnx, backend="auto", threads=1)
    assert first.backend in ("onnxruntime", "openvino")
    assert "measured onnxruntime, openvino" in first.backend_reason
    cached = json.loads((tmp_path / "dlinfer" / "backends.json").read_text())
    (entry,) = cached.values()
    assert entry["backend"] == first.backend and set(entry["timings"]) == {"onnxruntime",
                                                                           "openvino"}
    monkeypatch.setattr(choice, "_memo", {})
    monkeypatch.setattr(choice, "measure", lambda *a: pytest.fail("measured twice"))
    again = dlinfer.Model(mnist_onnx, backend="auto", threads=1)
    assert again.backend == first.backend and again.backend_reason.endswith("(cached)")
    # a GPU device or onnxruntime's options leave nothing to choose
    assert choice.resolve("auto", mnist_onnx, "cuda")[0] == "onnxruntime"


@openvino
def test_bf16_is_gated_on_openvino_and_recorded(mnist_onnx, digit_pngs, tmp_path):
    from dlinfer.optimize import optimize
    from dlinfer.optimize.precision import bf16_candidate
    from dlinfer.runtime.backends import import_openvino

    if "BF16" not in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(dlinfer.OptimizeError, match="bf16 needs a CPU"):
            bf16_candidate(None)
        return
    paths, _ = digit_pngs
    out = str(tmp_path / "mlp.bf16.onnx")
    report = optimize(mnist_onnx, out, "bf16", calibrate=os.path.dirname(paths[0]))
    assert report.gated_on == {"backend": "openvino", "precision": "bf16"}
    assert "gated on:    openvino, bf16" in report.format()
    # no worst layer of 0 error: the search cannot see bfloat16 (it ran 'relative error 0')
    assert report.worst_layer is None and "worst layer:" not in report.format()
    assert any("bf16 is OpenVINO's execution precision" in n for n in report.notes)
    on_ov = dlinfer.Model(out, backend="openvino")
    assert on_ov.precision == "bf16" and on_ov.providers == ["OpenVINO(bf16)"]
    stored = on_ov.spec.extra["optimize"]
    assert stored["mode"] == "bf16" and stored["gated_on"]["backend"] == "openvino"
    # onnxruntime runs the same file in float32: the graph is unchanged
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    assert_close(dlinfer.Model(out, backend="onnxruntime").run(x),
                 dlinfer.Model(mnist_onnx, backend="onnxruntime").run(x))


@openvino
def test_int8_gated_on_openvino_records_it(mnist_onnx, digit_pngs, tmp_path):
    from dlinfer.optimize import optimize

    paths, _ = digit_pngs
    report = optimize(mnist_onnx, str(tmp_path / "mlp.int8.onnx"), "int8",
                      calibrate=os.path.dirname(paths[0]), backend="openvino")
    assert report.gated_on == {"backend": "openvino", "precision": "int8"}
    with pytest.raises(dlinfer.OptimizeError, match="not auto"):
        optimize(mnist_onnx, str(tmp_path / "x.onnx"), "int8",
                 calibrate=os.path.dirname(paths[0]), backend="auto")


def test_calibration_in_slices_gives_one_pass_ranges(mnist_onnx, mnist_digits, tmp_path,
                                                     monkeypatch):
    """quantize_int8 hands onnxruntime one slice per collect_data call, so the calibrator
    drops each slice's activations before the next (bounded memory, docs/optimize.md);
    MinMax ranges must come out as one pass over every sample gives them."""
    import onnx
    import onnxruntime.quantization as q
    from dlinfer.optimize.quantize import int8_settings, quantize_int8

    batch = {"images": (mnist_digits.x_test[:200, ..., None] / np.float32(255))}
    sliced = quantize_int8(mnist_onnx, str(tmp_path), batch, int8_settings())
    scales_sliced = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(sliced)
                     .graph.initializer if "scale" in t.name or "zero_point" in t.name}
    original = q.quantize_static

    def one_pass(*args, **kwargs):
        kwargs["extra_options"] = {k: v for k, v in kwargs["extra_options"].items()
                                   if k != "CalibStridedMinMax"}
        return original(*args, **kwargs)

    monkeypatch.setattr(q, "quantize_static", one_pass)
    os.makedirs(tmp_path / "whole")
    whole = quantize_int8(mnist_onnx, str(tmp_path / "whole"), batch, int8_settings())
    scales_whole = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(whole)
                    .graph.initializer if "scale" in t.name or "zero_point" in t.name}
    assert scales_sliced.keys() == scales_whole.keys() and scales_sliced
    for name, value in scales_whole.items():
        assert_close(scales_sliced[name], value, context=name)


@requires("openvino", "nncf")
def test_int8_by_nncf_runs_on_either_backend(mnist_onnx, digit_pngs, tmp_path):
    from dlinfer.optimize import optimize

    paths, _ = digit_pngs
    out = str(tmp_path / "mlp.nncf.onnx")
    report = optimize(mnist_onnx, out, "int8", calibrate=os.path.dirname(paths[0]),
                      method="nncf", backend="openvino")
    assert report.settings["calibration"] == "nncf" and report.gated_on["backend"] == "openvino"
    on_ort = dlinfer.Classifier(out, backend="onnxruntime").predict_proba(paths)
    on_ov = dlinfer.Classifier(out, backend="openvino").predict_proba(paths)
    # the same QDQ pairs on both (see test_an_int8_file_from_optimize_runs_on_either_backend)
    assert_close(on_ov, on_ort, atol=0.02, context="NNCF int8 on openvino vs onnxruntime")


@openvino
def test_openvino_takes_host_ortvalues_and_refuses_keep_on_device(mnist_onnx, mnist_digits):
    import onnxruntime as ort

    x = (mnist_digits.x_test[:3, ..., None] / np.float32(255)).astype(np.float32)
    model = dlinfer.Model(mnist_onnx, backend="openvino")
    want = model.run(x)
    assert_close(model.run(ort.OrtValue.ortvalue_from_numpy(x)), want, context="OrtValue")
    assert_close(model.run({"images": ort.OrtValue.ortvalue_from_numpy(x)}), want,
                 context="{name: OrtValue}")
    with pytest.raises(dlinfer.InputError, match="keep_on_device=True"):
        model.run(x, keep_on_device=True)


@openvino
def test_dlinfer_backend_sets_the_default(mnist_onnx, monkeypatch):
    monkeypatch.setenv("DLINFER_BACKEND", "openvino")
    model = dlinfer.Model(mnist_onnx)
    assert model.backend == "openvino" and "$DLINFER_BACKEND" in model.backend_reason
    assert dlinfer.Model(mnist_onnx, backend="onnxruntime").backend == "onnxruntime"
    monkeypatch.setenv("DLINFER_BACKEND", "tensorflow")
    with pytest.raises(dlinfer.InputError, match="got 'tensorflow'"):
        dlinfer.Model(mnist_onnx)


@openvino
def test_bench_compares_backends_side_by_side(mnist_onnx):
    from dlinfer.tools.bench import benchmark

    results = benchmark(mnist_onnx, "cpu", [1, 4], iters=3, warmup=1, threads=1,
                        backend="onnxruntime,openvino", environment={})
    assert [r["provider"] for r in results] == ["CPUExecutionProvider"] * 2 + \
        ["OpenVINO(f32)"] * 2
    table = results.table()
    assert "OpenVINO(f32) vs onnxruntime CPU, items/s: batch 1 " in table
    assert "cpu (openvino): every node runs on OpenVINO(f32)" in table


@openvino
def test_a_recurring_shape_gets_its_own_compiled_model(mnist_onnx, mnist_digits):
    from dlinfer.runtime.backends.openvino import runner

    model = dlinfer.Model(mnist_onnx, backend="openvino", threads=1)
    x = (mnist_digits.x_test[:5, ..., None] / np.float32(255)).astype(np.float32)
    first = model.run(x)  # the dynamic model
    assert_close(model.run(x), first, context="the call that starts the static compile")
    model._runner.wait_for_compiles()
    assert (x.shape,) in model._runner._static
    static = model._runner._static[(x.shape,)]
    assert static[0] is not model._runner.compiled  # a model of its own
    assert_close(model.run(x), first, context="static vs dynamic")
    for n in range(1, runner.STATIC_SHAPES + 3):  # more shapes than get their own
        for _ in range(runner.STATIC_AFTER):
            model.run(x[:1].repeat(n, axis=0))
    model._runner.wait_for_compiles()
    assert len(model._runner._static) == runner.STATIC_SHAPES
