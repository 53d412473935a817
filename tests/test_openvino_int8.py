"""int8 files on OpenVINO: QDQ pairs folded before the CPU plugin compiles them, and
``--mode int8 --bf16`` gated as a precision of its own (docs/optimize.md)."""

from __future__ import annotations

import collections
import os

import dlinfer
import numpy as np
import pytest
from optional import requires
from reference import assert_close

openvino = requires("openvino")


def _strided_branches(path: str) -> None:
    """A ResNet downsampling block in small: one activation feeding two stride-2 1x1
    convolutions, whose sum leaves the graph (NCHW, float32, seeded weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32),
                                       name)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "wa", "ba"], ["ca"], kernel_shape=[1, 1],
                         strides=[2, 2]),
        helper.make_node("Conv", ["r0", "wb", "bb"], ["cb"], kernel_shape=[1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["cb"], ["rb"]),
        helper.make_node("Conv", ["rb", "wc", "bc"], ["cc"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["ca", "cc"], ["y"]),
    ]
    weights = [weight("w0", (16, 8, 3, 3)), weight("b0", (16,)),
               weight("wa", (32, 16, 1, 1)), weight("ba", (32,)),
               weight("wb", (32, 16, 1, 1)), weight("bb", (32,)),
               weight("wc", (32, 32, 3, 3)), weight("bc", (32,))]
    graph = helper.make_graph(
        nodes, "strided_branches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32, 8, 8])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what this onnxruntime's quantizer reads
    onnx.save(model, path)


@openvino
def test_qdq_pairs_fold_so_every_convolution_runs_in_int8(tmp_path):
    """OpenVINO's ONNX frontend reads a QDQ pair as FakeQuantize -> Convert -> Convert ->
    Subtract -> Multiply, and the CPU plugin's strides optimization cuts that chain before
    stride-2 1x1 convolutions, which then ran in float32 (ResNet50: 6 of 53, half the
    speed).  dlinfer folds the pairs first (runtime/backends/openvino/loader.read_onnx)."""
    from dlinfer.optimize.quantize import int8_settings, quantize_int8
    from dlinfer.runtime.backends.openvino.loader import compile_model

    source = str(tmp_path / "float.onnx")
    _strided_branches(source)
    x = np.random.default_rng(1).random((8, 8, 16, 16), dtype=np.float32)
    settings = {**int8_settings(), "keep_shallow": False}
    quantized = quantize_int8(source, str(tmp_path), {"x": x}, settings)

    runtime = compile_model(quantized, threads=1).get_runtime_model()
    precisions = collections.Counter(
        op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution")
    assert sum(precisions.values()) == 4 and set(precisions) <= {"u8", "i8"}, precisions

    # and the folded graph answers as onnxruntime runs the same QDQ pairs
    on_ov = dlinfer.Model(quantized, backend="openvino").run(x)
    on_ort = dlinfer.Model(quantized, backend="onnxruntime").run(x)
    scale = float(np.abs(on_ort).max())
    # one int8 step of the output's range either way: the two round differently inside
    assert_close(on_ov, on_ort, atol=scale / 127, rtol=0, context="QDQ on openvino vs ort")


@openvino
def test_int8_with_bf16_is_gated_as_its_own_precision(mnist_onnx, digit_pngs, tmp_path):
    from dlinfer.optimize import optimize
    from dlinfer.runtime.backends import import_openvino

    calibration = os.path.dirname(digit_pngs[0][0])
    out = str(tmp_path / "cnn.int8_bf16.onnx")
    if "BF16" not in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(dlinfer.OptimizeError, match="bf16 needs a CPU"):
            optimize(mnist_onnx, out, "int8", calibrate=calibration, bf16=True)
        return
    report = optimize(mnist_onnx, out, "int8", calibrate=calibration, bf16=True)
    assert report.gated_on == {"backend": "openvino", "precision": "int8+bf16"}
    assert "gated on:    openvino, int8+bf16" in report.format()
    on_ov = dlinfer.Model(out, backend="openvino")
    assert on_ov.precision == "bf16" and on_ov.providers == ["OpenVINO(bf16)"]
    assert on_ov.spec.extra["optimize"]["gated_on"]["precision"] == "int8+bf16"
    # onnxruntime runs the same int8 file with its float parts in float32
    paths = digit_pngs[0]
    on_ort = dlinfer.Classifier(out, backend="onnxruntime").predict_proba(paths)
    on_bf16 = dlinfer.Classifier(out, backend="openvino").predict_proba(paths)
    # bfloat16 keeps 8 bits of mantissa: 2^-8 relative on each float op, a few percent
    # of a probability after the dense layers, as the gate allowed
    assert_close(on_bf16, on_ort, atol=0.05, rtol=0, context="int8+bf16 vs int8 on ort")


@openvino
def test_auto_runs_a_gated_file_where_it_passed_its_gate(mnist_onnx, digit_pngs, tmp_path,
                                                         monkeypatch):
    """backend='auto' times a float32 file on every backend, but an optimized file only
    runs where its accuracy gate passed (its spec's extra.optimize.gated_on)."""
    from dlinfer.optimize import optimize
    from dlinfer.runtime.backends import choice

    calibration = os.path.dirname(digit_pngs[0][0])
    for backend in ("onnxruntime", "openvino"):
        out = str(tmp_path / f"int8.{backend}.onnx")
        optimize(mnist_onnx, out, "int8", calibrate=calibration, backend=backend)
        monkeypatch.setattr(choice, "measure", lambda *a, **k: pytest.fail("measured"))
        model = dlinfer.Model(out, backend="auto", threads=1)  # one thread: nothing to time
        assert model.backend == backend
        assert f"the file was gated on {backend}" in model.backend_reason


@pytest.mark.parametrize("faster", ["onnxruntime on 1 thread", "onnxruntime"])
def test_auto_times_onnxruntime_on_one_thread_too(mnist_onnx, digit_pngs, tmp_path,
                                                  monkeypatch, faster):
    """A file gated on onnxruntime, Model(threads=2, backend='auto'): onnxruntime on 2
    threads and on 1 are timed, and the faster one runs (a small model's operators are
    too short to share; runtime/backends/choice.py)."""
    from dlinfer.optimize import optimize
    from dlinfer.runtime.backends import choice

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(choice, "_memo", {})
    out = str(tmp_path / "int8.onnx")
    optimize(mnist_onnx, out, "int8", calibrate=os.path.dirname(digit_pngs[0][0]))
    timed = []

    def per_item_ms(model, batch, budget):  # the timing decided here, not by the machine
        label = choice.ONE_THREAD if model.threads == 1 else model.backend
        timed.append(label)
        return 1.0 if label == faster else 2.0

    monkeypatch.setattr(choice, "_per_item_ms", per_item_ms)
    model = dlinfer.Model(out, backend="auto", threads=2)
    assert set(timed) == {"onnxruntime", choice.ONE_THREAD}  # never OpenVINO: not gated there
    assert model.backend == "onnxruntime" and model.threads == (1 if "1" in faster else 2)
    assert f": {faster} (precision int8) is fastest" in model.backend_reason
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    assert_close(model.run(x), dlinfer.Model(out, backend="onnxruntime", threads=2).run(x),
                 context=f"auto ({faster}) vs two threads")


def test_bf16_goes_with_int8_only(mnist_onnx, tmp_path):
    from dlinfer.optimize import optimize

    with pytest.raises(dlinfer.OptimizeError, match="--bf16 goes with --mode int8"):
        optimize(mnist_onnx, str(tmp_path / "x.onnx"), "fp16", bf16=True)
