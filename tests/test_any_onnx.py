"""Any ONNX file, not only image batches (issue 26): every command on graphs shaped like
third-party files (tests/any_onnx_models.py), with no dlinfer spec.

Each command either works or ends in a clear refusal: a non-zero exit with one
``dlinfer: error:`` line naming the input or node, never a traceback.
"""

from __future__ import annotations

import json
import threading

import any_onnx_models as models
import dlinfer
import numpy as np
import onnx
import pytest
from dlinfer.optimize import optimize
from dlinfer.runtime.batch_axis import batch_axes
from dlinfer.tools.cli import main
from optional import requires
from reference import assert_close

TINY = ["--warmup", "1", "--iters", "3"]
serving = requires("starlette", "uvicorn")
SHAPES = ("fixed_batch_cnn", "silero_like", "opset11_cnn", "pyramid_cnn", "sequence_model")


def _calibration(name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Calibration inputs by input name, on each input's own batch axis."""
    return {
        "fixed_batch_cnn": lambda: {"x": rng.random((16, 3, 16, 16), np.float32)},
        "silero_like": lambda: {"input": rng.standard_normal((16, 64)).astype(np.float32),
                                "state": 0.1 * rng.standard_normal((2, 16, 16))
                                .astype(np.float32),
                                "sr": np.array(16000, np.int64)},
        "opset11_cnn": lambda: {"x": rng.random((64, 3, 16, 16), np.float32)},
        "pyramid_cnn": lambda: {"images": rng.random((8, 3, 64, 64), np.float32)},
        "sequence_model": lambda: {"frames": rng.standard_normal((40, 8)).astype(np.float32)},
    }[name]()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("any_onnx")
    paths = {}
    for name in (*SHAPES, "cumsum_model"):
        paths[name] = str(folder / f"{name}.onnx")
        onnx.save(getattr(models, name)(), paths[name])
        if name in SHAPES:
            np.savez(folder / f"{name}.npz", **_calibration(name, np.random.default_rng(7)))
    return paths


def _npz(path: str) -> str:
    return path[:-len(".onnx")] + ".npz"


def _one_run(name: str, path: str) -> dict[str, np.ndarray]:
    """The calibration data as one Model.run call takes it (a fixed batch: one sample)."""
    feed = dict(np.load(_npz(path)))
    return {"x": feed["x"][:1]} if name == "fixed_batch_cnn" else feed


def _refused(status: int, err: str, *named: str) -> None:
    """A clear refusal: exit 1 (the one rule, docs/errors.md), one message naming what is
    wrong, no traceback."""
    assert status == 1, err  # docs/errors.md: every typed refusal exits 1
    assert err.startswith("dlinfer: error: ") and "Traceback" not in err, err
    for name in named:
        assert name in err, (name, err)


def test_each_input_gets_its_batch_axis_by_the_one_rule(files):
    axes = {name: {k: (b.axis, b.size) for k, b in batch_axes(dlinfer.Model(p)).items()}
            for name, p in files.items()}
    assert axes["fixed_batch_cnn"] == {"x": (0, 1)}  # a fixed batch of 1
    # The state's batch is on axis 1 (it shares the dimension 'batch'); sr is 0-d.
    assert axes["silero_like"] == {"input": (0, None), "state": (1, None), "sr": (None, None)}
    assert axes["opset11_cnn"] == {"x": (0, None)}
    assert axes["pyramid_cnn"] == {"images": (0, None)}
    # (sequence_length, 8): axis 0 may be time, so it is never taken for a batch.
    assert axes["sequence_model"] == {"frames": (None, None)}


@pytest.mark.parametrize("name", SHAPES)
def test_info_run_verify_and_bench_work(files, name, capsys):
    path = files[name]
    assert main(["info", path]) == 0
    assert "batch axis" in capsys.readouterr().out
    assert dlinfer.Model(path).run(_one_run(name, path)) is not None
    assert main(["verify", path]) == 0
    out = capsys.readouterr().out
    assert "OK: all outputs agree" in out or "nothing to compare" in out
    assert main(["verify", path, "--data", _npz(path)]) == 0
    capsys.readouterr()
    assert main(["bench", path, "--batch-sizes", "1,4", *TINY]) == 0
    captured = capsys.readouterr()
    if name in ("fixed_batch_cnn", "sequence_model"):  # one batch size only, said so
        assert "batch sizes [4] skipped" in captured.err


def test_api_and_cli_give_the_same_verify_report(files, capsys):
    path = files["silero_like"]
    assert main(["verify", path, "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli == dlinfer.verify(None, path).to_dict()
    assert cli["samples"] == 16 and cli["ok"]
    assert [c["name"] for c in cli["outputs"]] == ["reference vs onnxruntime: output",
                                                   "reference vs onnxruntime: stateN"]


def test_state_on_axis_1_and_a_scalar_are_sliced_and_passed_through(files):
    """Run one sample at a time along each input's own axis; the outputs must equal one
    run of all samples (each sample of this model is independent)."""
    from dlinfer.runtime.batch_axis import output_axes, run_split

    model = dlinfer.Model(files["silero_like"])
    feed = _calibration("silero_like", np.random.default_rng(1))
    whole = model.run(feed)
    axes = batch_axes(model)
    apart = run_split(model.run, feed, axes, 1, ["output", "stateN"],
                      output_axes(model, axes))
    assert_close(apart["output"], whole["output"], atol=0, rtol=0)  # same kernels, same rows
    # stateN (2, batch, 16) is named by the batch dimension: runs joined on axis 1.
    assert_close(apart["stateN"], whole["stateN"], atol=0, rtol=0)


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("mode", ["graph", "fp16", "int8"])
def test_optimize_each_mode_works_or_refuses_clearly(files, name, mode, tmp_path, capsys):
    path, out = files[name], str(tmp_path / f"{name}_{mode}.onnx")
    # 2 points: random-weight models on 8-64 calibration samples (the top-1 agreement of
    # a few samples moves in steps of several points; the relative RMS error does not).
    status = main(["optimize", path, "--out", out, "--mode", mode, "--calibrate", _npz(path),
                   "--max-drop", "2"])
    captured = capsys.readouterr()
    if status == 0:
        assert f"wrote {out}" in captured.out
        assert dlinfer.Model(out).run(_one_run(name, path)) is not None
    else:
        _refused(status, captured.err)


def test_int8_of_the_opset_11_cnn_upgrades_loads_and_passes_its_gate(files, tmp_path):
    out = tmp_path / "opset11_int8.onnx"
    report = optimize(files["opset11_cnn"], out, "int8",
                              calibrate=_npz(files["opset11_cnn"]), max_drop=2)
    assert report.written and report.passed and report.settings["per_channel"]
    assert any("upgraded to 13" in n for n in report.notes)
    axes = [n.attribute for n in onnx.load(out).graph.node if n.op_type == "DequantizeLinear"]
    assert any(a.name == "axis" for attrs in axes for a in attrs)  # per channel
    x = np.load(_npz(files["opset11_cnn"]))["x"][:4]
    assert dlinfer.Model(str(out)).run(x).shape == (4, 5)


def test_a_size_the_graph_cannot_take_is_refused_naming_it(files, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 3, 48, 48), np.float32))  # not a multiple of 32
    for argv in (["verify", files["pyramid_cnn"], "--data", str(bad)],
                 ["optimize", files["pyramid_cnn"], "--out", str(tmp_path / "o.onnx"),
                  "--mode", "graph", "--calibrate", str(bad)]):
        _refused(main(argv), capsys.readouterr().err, "images", "48, 48")
    with pytest.raises(dlinfer.InputError, match="images"):
        dlinfer.verify(None, files["pyramid_cnn"], {"images": np.zeros((2, 3, 48, 48),
                                                                      np.float32)})


def test_drawn_samples_pick_a_size_the_graph_runs_at(files):
    report = dlinfer.verify(None, files["pyramid_cnn"], samples=2)
    assert report.ok and "dynamic axes at 64" in report.data_source  # 32 pools to nothing


def test_verify_notes_an_op_the_reference_lacks_and_exits_0(files, capsys):
    assert main(["verify", files["cumsum_model"]]) == 0
    out = capsys.readouterr().out
    assert "note: reference executor skipped" in out and "'CumSum'" in out


def test_wrong_inputs_stay_typed(files, capsys):
    path = files["silero_like"]
    feed = _calibration("silero_like", np.random.default_rng(2))
    feed["state"] = feed["state"][:, :3]  # 3 states for 16 samples
    with pytest.raises(dlinfer.InputShapeError, match="'input' 16 on axis 0, 'state' 3 on axis 1"):
        dlinfer.verify(None, path, feed)
    feed = _calibration("silero_like", np.random.default_rng(2))
    feed["sr"] = np.array([16000, 8000])  # not 0-d
    with pytest.raises(dlinfer.InputError, match="'sr'"):
        dlinfer.verify(None, path, feed)
    feed = _calibration("silero_like", np.random.default_rng(2))
    feed["state"] = feed["state"][:, :3]
    with pytest.raises(dlinfer.InputShapeError, match=r"\{'input': 0, 'state': 1\}"):
        dlinfer.Model(path).run(feed)  # Model.run checks the same axes
    # The reference executor checks what the graph declares, as onnxruntime does.
    from dlinfer.verification import reference

    feed = _calibration("silero_like", np.random.default_rng(2))
    feed["state"] = feed["state"][0]
    with pytest.raises(dlinfer.InputRankError, match="input 'state' needs rank 3"):
        reference.run(path, feed)


def test_graph_mode_accepts_a_quantized_graph(files, tmp_path):
    int8 = tmp_path / "int8.onnx"
    optimize(files["opset11_cnn"], int8, "int8", calibrate=_npz(files["opset11_cnn"]),
                     max_drop=100)
    report = optimize(int8, tmp_path / "graph.onnx", "graph")
    assert report.written


def test_fp16_refusal_names_the_overflowing_node(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["large"], name="scale"),
         helper.make_node("MatMul", ["large", "w"], ["big"], name="amplify"),
         helper.make_node("Mul", ["big", "small"], ["y"], name="shrink")],
        "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32) * 1e3, "w"),  # x * 1e6 at last
         numpy_helper.from_array(np.array(1e-6, np.float32), "small")])
    path = tmp_path / "overflow.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), path)
    with pytest.raises(dlinfer.OptimizeError, match="float16 overflow: node 'amplify' "
                       r"\(MatMul\) gives values up to"):
        optimize(path, tmp_path / "half.onnx", "fp16")


def test_the_batcher_never_groups_a_time_axis(files):
    """Concurrent sequence requests: frames run together would differ from frames run
    apart (a running sum over time), so each request must run alone."""
    model = dlinfer.Model(files["sequence_model"])
    rng = np.random.default_rng(3)
    requests = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(12)]
    results: list = [None] * len(requests)
    with dlinfer.Batcher(model, max_batch_size=8, max_delay_ms=50) as batcher:
        def send(i: int) -> None:
            results[i] = batcher.submit(requests[i]).result()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert batcher.max_batch_size == 1 and batcher.stats().mean_batch_size == 1.0
    for request, got in zip(requests, results, strict=True):
        assert_close(got, model.run(request), atol=0, rtol=0)


def test_the_batcher_groups_batch_first_requests(files):
    model = dlinfer.Model(files["opset11_cnn"])
    x = np.random.default_rng(4).random((6, 3, 16, 16), np.float32)
    with dlinfer.Batcher(model, max_batch_size=8, max_delay_ms=50) as batcher:
        got = np.stack([f.result() for f in batcher.submit_many(list(x))])
    assert_close(got, model.run(x), atol=1e-6, rtol=1e-5)  # one batch vs one batch


def _tensor(name: str, array: np.ndarray) -> dict:
    datatype = {"float32": "FP32", "int64": "INT64"}[array.dtype.name]
    return {"name": name, "datatype": datatype, "shape": list(array.shape),
            "data": array.reshape(-1).tolist()}


def _outputs(reply: dict) -> dict[str, np.ndarray]:
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    return {o["name"]: np.asarray(o["data"], dtypes[o["datatype"]]).reshape(o["shape"])
            for o in reply["outputs"]}


@serving
def test_serve_v2_takes_bare_files_with_state_and_scalar_inputs(files, tmp_path):
    """Files without a spec on the v2 route answer as Model.run does; concurrent sequence
    requests to a model whose axis 0 is time are never grouped."""
    from concurrent.futures import ThreadPoolExecutor

    from serve_helpers import Server, call, post_json

    server = Server(tmp_path, f"fixed={files['fixed_batch_cnn']}",
                    f"silero={files['silero_like']}", f"seq={files['sequence_model']}",
                    f"cnn={files['opset11_cnn']}", "--max-delay-ms", "50")
    try:
        silero = dlinfer.Model(files["silero_like"])
        feed = _calibration("silero_like", np.random.default_rng(5))
        status, reply = post_json(server, "/v2/models/silero/infer",
                                  {"inputs": [_tensor(k, v) for k, v in feed.items()]})
        assert status == 200, reply
        got, want = _outputs(reply), silero.run(feed)
        for name in ("output", "stateN"):  # the same kernels on the same run
            assert_close(got[name], want[name], atol=0, rtol=0, context=name)
        status, meta = call(server, "GET", "/v2/models/silero")
        assert status == 200 and meta["inputs"][2] == {"name": "sr", "datatype": "INT64",
                                                       "shape": []}
        x = np.random.default_rng(6).random((1, 3, 16, 16), np.float32)
        status, reply = post_json(server, "/v2/models/fixed/infer",
                                  {"inputs": [_tensor("x", x)]})
        assert status == 200 and reply["outputs"][0]["shape"] == [1, 4]
        assert_close(_outputs(reply)["probs"], dlinfer.Model(files["fixed_batch_cnn"]).run(x),
                     atol=0, rtol=0)
        # A batch-first model: each row is a sample the Batcher may group with others.
        x = np.random.default_rng(7).random((3, 3, 16, 16), np.float32)
        status, reply = post_json(server, "/v2/models/cnn/infer", {"inputs": [_tensor("x", x)]})
        assert status == 200, reply
        assert_close(_outputs(reply)["probs"], dlinfer.Model(files["opset11_cnn"]).run(x),
                     atol=1e-6, rtol=1e-5)  # rows run in another batch: other kernels' order
        # A scalar sent with the wrong type (400), and a batch the graph cannot take (422,
        # as for any input of the wrong shape): errors naming the input; the server goes on.
        feed["sr"] = np.array(16000.0, np.float32)
        status, reply = post_json(server, "/v2/models/silero/infer",
                                  {"inputs": [_tensor(k, v) for k, v in feed.items()]})
        assert status == 400 and "'sr' takes INT64" in reply["error"]
        status, reply = post_json(server, "/v2/models/fixed/infer",
                                  {"inputs": [_tensor("x", np.zeros((2, 3, 16, 16),
                                                                   np.float32))]})
        assert status == 422 and "'x'" in reply["error"], reply
        # Twelve concurrent sequences: a running sum over time, so any grouping along
        # axis 0 would change every answer after the first request's frames.
        seq = dlinfer.Model(files["sequence_model"])
        requests = [np.random.default_rng(i).standard_normal((4 + i % 3, 8))
                    .astype(np.float32) for i in range(12)]

        def send(frames: np.ndarray) -> dict:
            return post_json(server, "/v2/models/seq/infer",
                             {"inputs": [_tensor("frames", frames)]})

        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(send, requests))
        for frames, (status, reply) in zip(requests, replies, strict=True):
            assert status == 200, reply
            assert_close(_outputs(reply)["probs"], seq.run(frames), atol=0, rtol=0)
    finally:
        server.stop()


def test_a_declared_batch_axis_wins_over_inference(files, tmp_path, capsys):
    """`spec set --batch-axis` records the axis; every command then reads the spec."""
    out = str(tmp_path / "declared.onnx")
    assert main(["spec", "set", files["sequence_model"], "--out", out, "--task", "regression",
                 "--batch-axis", "frames=0"]) == 0
    assert "frames" in capsys.readouterr().out
    (axis,) = batch_axes(dlinfer.Model(out)).values()
    assert (axis.axis, axis.source) == (0, "spec")
    with dlinfer.Batcher(dlinfer.Model(out), max_batch_size=8) as batcher:
        assert batcher.max_batch_size == 8  # batch-first now: requests may be grouped
    # Left to the rule, spec set records what it infers: the time axis stays unguessed.
    inferred = str(tmp_path / "inferred.onnx")
    assert main(["spec", "set", files["sequence_model"], "--out", inferred, "--task",
                 "regression"]) == 0
    assert "has no batch axis" in capsys.readouterr().err
    assert batch_axes(dlinfer.Model(inferred))["frames"].axis is None
