"""The reference executor's control flow (Loop, Scan, If) and recurrent ops (LSTM, GRU,
RNN, ReverseSequence), each checked three ways:

- ONNX's own node conformance cases that use these ops (``collect_testcases()``, ~4 s
  to generate): each passes within the ONNX backend tolerances or is refused by name;
- hand-built graphs against onnxruntime: subgraphs reading enclosing-scope tensors
  (a Loop holding an If that reads the main graph's intermediates), Scan directions and
  axes, ragged ``sequence_lens`` in every direction;
- Keras recurrent models exported by dlinfer (TensorFlow): masked ones become ``Loop``
  bodies, unmasked LSTMs the ONNX ``LSTM`` op; reference within 1e-5 of onnxruntime.

1e-5 for the recurrent ops: the reference computes them in float64, onnxruntime in
float32; over a dozen steps of tanh/sigmoid they differ by ~1e-7.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
from optional import requires, tensorflow
from reference import assert_close, seed_of

pytestmark = requires("onnx", "onnxruntime")

RTOL, ATOL = 1e-3, 1e-7  # onnx/backend/test/runner: the tolerances every backend meets
CLOSE = 1e-5
MINE = {"Loop", "Scan", "If", "LSTM", "GRU", "RNN", "ReverseSequence"}
# Cases that use nothing but these ops and trivial helpers: each must pass, not be refused.
# A name ending in "_" is a prefix.
MUST_PASS = ("test_lstm_", "test_gru_", "test_simple_rnn_", "test_rnn_", "test_reversesequence_",
             "test_scan_sum", "test_scan9_", "test_loop11", "test_if")


def _must_pass(name: str) -> bool:
    return any(name == p or (p.endswith("_") and name.startswith(p)) for p in MUST_PASS)


def _ops(graph) -> set[str]:
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attr in node.attribute:
            if attr.HasField("g"):
                found |= _ops(attr.g)
    return found


@cache
def _cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # the generators overflow casts on purpose
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [c for c in cases if c.model is not None and _ops(c.model.graph) & MINE]


def test_onnx_conformance_cases_pass_or_are_refused_by_name():
    from dlinfer.verification import reference

    passed, refused, bad = [], [], []
    for case in _cases():
        names = [i.name for i in case.model.graph.input]
        try:
            graph = reference.Graph(case.model)
            for inputs, expected in case.data_sets:
                got = graph.run(dict(zip(names, inputs)))
                for (name, value), want in zip(got.items(), expected):
                    assert_close(value, want, atol=ATOL, rtol=RTOL, context=f"{case.name} {name}")
            passed.append(case.name)
        except reference.UnsupportedOpError as exc:
            assert "reference executor:" in str(exc) and "is not supported" in str(exc), exc
            refused.append(f"{case.name}: {str(exc)[:120]}")
        except Exception as exc:  # a wrong answer or an unclear error
            bad.append(f"{case.name}: {type(exc).__name__}: {exc}")
    print(f"\nLoop/Scan/If/LSTM/GRU/RNN/ReverseSequence conformance: {len(passed)} pass, "
          f"{len(refused)} refused, of {len(passed) + len(refused) + len(bad)}")
    print("\n".join(f"  refused {r}" for r in refused))
    assert not bad, "\n".join(bad)
    must = [r for r in refused if _must_pass(r.split(":")[0])]
    assert not must, "refused, though plain cases of the ops claimed:\n" + "\n".join(must)


# ---- hand-built graphs against onnxruntime ---------------------------------------

def _model(nodes, inputs, outputs, initializers=(), opset=17):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _info(name, elem, shape=None):
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, shape)


def _const(name, value):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


def _both(model, feed, **tol):
    """Reference and onnxruntime on the same feed: every output close."""
    import onnxruntime as ort
    from dlinfer.verification import reference

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, feed)
    got = reference.run(model, feed)
    assert list(got) == [o.name for o in session.get_outputs()]
    for (name, value), expected in zip(got.items(), want):
        assert_close(value, expected, context=name, **tol)
    return got


def _loop_model():
    """Loop(M, cond, v): v += a; scan outputs v * i and If(i < 1, a, v) per step.

    ``a`` is an intermediate of the main graph read only inside the body (and, two
    levels down, by the If's then-branch): it must stay alive until the Loop is done.
    """
    from onnx import TensorProto as T
    from onnx import helper

    f32 = T.FLOAT
    then = helper.make_graph([helper.make_node("Identity", ["a"], ["t"])], "then", [],
                             [_info("t", f32, [2, 3])])
    other = helper.make_graph([helper.make_node("Identity", ["v_in"], ["e"])], "else", [],
                              [_info("e", f32, [2, 3])])
    body = helper.make_graph(
        [helper.make_node("Add", ["v_in", "a"], ["v_out"]),
         helper.make_node("Cast", ["i"], ["fi"], to=f32),
         helper.make_node("Mul", ["v_out", "fi"], ["scaled"]),
         helper.make_node("Less", ["i", "stop"], ["c_out"]),
         helper.make_node("Less", ["i", "one"], ["first"]),
         helper.make_node("If", ["first"], ["picked"], then_branch=then, else_branch=other)],
        "body",
        [_info("i", T.INT64, []), _info("c_in", T.BOOL, []), _info("v_in", f32, [2, 3])],
        [_info("c_out", T.BOOL, []), _info("v_out", f32, [2, 3]), _info("scaled", f32, [2, 3]),
         _info("picked", f32, [2, 3])],
    )
    return _model(
        [helper.make_node("Mul", ["x", "half"], ["a"]),
         helper.make_node("Loop", ["M", "cond", "x"], ["v", "scaled_all", "picked_all"],
                          body=body)],
        [_info("M", T.INT64, []), _info("cond", T.BOOL, []), _info("x", f32, [2, 3])],
        [_info("v", f32), _info("scaled_all", f32), _info("picked_all", f32)],
        [_const("half", np.float32(0.5)), _const("stop", np.int64(3)), _const("one", np.int64(1))],
    )


@pytest.mark.parametrize("trip", [5, 2, 0], ids=["cond-ends-it", "M-ends-it", "no-iteration"])
def test_loop_with_scan_outputs_reads_the_enclosing_scopes(trip):
    x = np.random.default_rng(seed_of("loop", trip)).normal(size=(2, 3)).astype(np.float32)
    feed = {"M": np.array(trip, np.int64), "cond": np.array(True), "x": x}
    got = _both(_loop_model(), feed, atol=1e-6)
    assert got["scaled_all"].shape == (min(trip, 4), 2, 3)


def test_on_tensor_and_outputs_see_the_main_graph_only():
    from dlinfer.verification import reference

    feed = {"M": np.array(3, np.int64), "cond": np.array(True), "x": np.ones((2, 3), np.float32)}
    seen = []
    reference.run(_loop_model(), feed, on_tensor=lambda name, _: seen.append(name))
    assert seen == ["a", "v", "scaled_all", "picked_all"]
    only = reference.run(_loop_model(), feed, outputs=["a", "picked_all"])
    assert list(only) == ["a", "picked_all"]
    assert_close(only["picked_all"][0], only["a"])


def test_scan_directions_and_axes():
    from onnx import TensorProto as T
    from onnx import helper

    f32 = T.FLOAT
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Mul", ["y_t", "w"], ["wy"]),
         helper.make_node("Add", ["wy", "s_out"], ["out"])],
        "body", [_info("s_in", f32, [3]), _info("x_t", f32, [3]), _info("y_t", f32, [3])],
        [_info("s_out", f32, [3]), _info("out", f32, [3])],
    )
    model = _model(
        [helper.make_node("Mul", ["s0", "s0"], ["w"]),
         helper.make_node("Scan", ["s0", "x", "y"], ["s", "outs"], body=body, num_scan_inputs=2,
                          scan_input_directions=[0, 1], scan_input_axes=[0, -1],
                          scan_output_directions=[1], scan_output_axes=[1])],
        [_info("s0", f32, [3]), _info("x", f32, [4, 3]), _info("y", f32, [3, 4])],
        [_info("s", f32), _info("outs", f32)],
    )
    rng = np.random.default_rng(seed_of("scan"))
    feed = {"s0": rng.normal(size=3), "x": rng.normal(size=(4, 3)), "y": rng.normal(size=(3, 4))}
    _both(model, {k: v.astype(np.float32) for k, v in feed.items()}, atol=1e-6)


@pytest.mark.parametrize("flag", [True, False])
def test_if_branches_read_the_enclosing_graph(flag):
    from onnx import TensorProto as T
    from onnx import helper

    f32 = T.FLOAT
    then = helper.make_graph([helper.make_node("Add", ["d", "x"], ["t"])], "then", [],
                             [_info("t", f32, [4])])
    other = helper.make_graph([helper.make_node("Neg", ["d"], ["e"])], "else", [],
                              [_info("e", f32, [4])])
    model = _model(
        [helper.make_node("Mul", ["x", "x"], ["d"]),
         helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)],
        [_info("flag", T.BOOL, []), _info("x", f32, [4])], [_info("y", f32)],
    )
    _both(model, {"flag": np.array(flag), "x": np.arange(4, dtype=np.float32)})


GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
RECURRENT = [("LSTM", {}), ("GRU", {}), ("GRU", {"linear_before_reset": 1}), ("RNN", {})]


def _recurrent(op, direction, attrs, seq=6, batch=3, size=4, hidden=5, lens=(6, 2, 4)):
    """An ``op`` node with every input given (bias, sequence_lens, initial states, peepholes)."""
    from onnx import TensorProto as T
    from onnx import helper

    dirs = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(seed_of(op, direction, attrs))
    g = GATES[op]
    feed = {
        "X": rng.normal(size=(seq, batch, size)),
        "W": rng.normal(0, 0.5, size=(dirs, g * hidden, size)),
        "R": rng.normal(0, 0.5, size=(dirs, g * hidden, hidden)),
        "B": rng.normal(0, 0.5, size=(dirs, 2 * g * hidden)),
        "L": np.array(lens, np.int32),
        "H": rng.normal(size=(dirs, batch, hidden)),
    }
    if op == "LSTM":
        feed |= {"C": rng.normal(size=(dirs, batch, hidden)),
                 "P": rng.normal(0, 0.5, size=(dirs, 3 * hidden))}
    feed = {k: v if k == "L" else v.astype(np.float32) for k, v in feed.items()}
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, list(feed), outs, hidden_size=hidden, direction=direction,
                            **attrs)
    model = _model([node], [_info(k, T.INT32 if k == "L" else T.FLOAT) for k in feed],
                   [_info(o, T.FLOAT) for o in outs])
    return model, feed


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(("op", "attrs"), RECURRENT,
                         ids=["LSTM", "GRU", "GRU-linear-before-reset", "RNN"])
def test_recurrent_op_with_ragged_sequence_lens(op, attrs, direction):
    model, feed = _recurrent(op, direction, attrs)
    got = _both(model, feed, atol=CLOSE, rtol=CLOSE)
    assert not got["Y"][2:, :, 1].any() and got["Y"][:2, :, 1].all()  # row 1 ends after 2 steps


def test_reverse_sequence_both_layouts():
    from onnx import TensorProto as T
    from onnx import helper

    x = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    for batch_axis, lens in ((1, [4, 0, 2]), (0, [1, 3, 2, 0])):
        model = _model(
            [helper.make_node("ReverseSequence", ["x", "lens"], ["y"], batch_axis=batch_axis,
                              time_axis=1 - batch_axis)],
            [_info("x", T.FLOAT), _info("lens", T.INT64)], [_info("y", T.FLOAT)],
        )
        _both(model, {"x": x, "lens": np.array(lens, np.int64)})


# ---- refused by name -----------------------------------------------------------

def _refusal(model, feed=None) -> str:
    from dlinfer.verification import reference

    with pytest.raises(reference.UnsupportedOpError) as info:
        graph = reference.Graph(model)
        graph.run(feed)
    return str(info.value)


@pytest.mark.parametrize(("attrs", "what"), [
    ({"clip": 3.0}, "clip"),
    ({"activations": ["Relu", "Tanh", "Tanh"]}, "activations"),
    ({"input_forget": 1}, "input_forget=1"),
    ({"layout": 2}, "layout=2"),
], ids=["clip", "activations", "input_forget", "layout"])
def test_recurrent_refuses_what_it_does_not_compute(attrs, what):
    model, feed = _recurrent("LSTM", "forward", attrs)
    message = _refusal(model, feed)
    assert "LSTM node 'Y'" in message and what in message


def test_recurrent_refuses_an_empty_sequence():
    model, feed = _recurrent("GRU", "forward", {}, lens=(6, 0, 4))
    assert "sequence_lens value of 0" in _refusal(model, feed)


def test_loop_refuses_what_the_runtimes_disagree_on():
    model = _loop_model()
    model.graph.node[1].input[1] = ""  # no cond: the spec ignores the body's, onnxruntime stops
    feed = {"M": np.array(5, np.int64), "cond": np.array(True), "x": np.ones((2, 3), np.float32)}
    assert "turning false in a Loop without a cond input" in _refusal(model, feed)
    model.graph.node[1].input[0] = ""
    assert "neither a trip count M nor cond" in _refusal(model, feed)


def test_an_unsupported_op_deep_in_a_subgraph_is_refused_before_running():
    model = _loop_model()
    if_node = model.graph.node[1].attribute[0].g.node[5]  # in the Loop body
    branch = next(a.g for a in if_node.attribute if a.name == "then_branch")
    branch.node[0].op_type = "NoSuchOp"
    from dlinfer.verification import reference

    with pytest.raises(reference.UnsupportedOpError, match=r"'NoSuchOp' \(node 't', in the "
                       r"then_branch graph of If 'picked', in the body graph of Loop 'v'\)"):
        reference.Graph(model)


# ---- Keras recurrent models exported by dlinfer -----------------------------------

def _export(build, tmp_path, name):
    from dlinfer.export import to_onnx

    from training._tf import keras

    keras.utils.set_random_seed(seed_of(name))
    path = tmp_path / f"{name}.onnx"
    to_onnx(build(keras.layers, keras), path)
    return path


def _against_onnxruntime(path):
    import dlinfer
    import onnx
    from dlinfer.verification.samples import random_samples

    feed = random_samples(dlinfer.Model(path).spec.inputs, 8, seed_of(path.name))[0]
    _both(onnx.load(path), feed, atol=CLOSE, rtol=CLOSE)
    return _ops(onnx.load(path).graph)


@tensorflow
def test_masked_bidirectional_lstm_gru_export(tmp_path):
    def build(L, keras):
        tokens = keras.Input((10,), dtype="int32")
        x = L.Embedding(30, 6, mask_zero=True)(tokens)
        x = L.Bidirectional(L.LSTM(5, return_sequences=True))(x)
        x = L.Bidirectional(L.GRU(4))(x)
        return keras.Model(tokens, L.Dense(3, activation="softmax")(x))

    assert "Loop" in _against_onnxruntime(_export(build, tmp_path, "masked_birnn"))


@tensorflow
def test_unmasked_lstm_export_uses_the_onnx_lstm_op(tmp_path):
    def build(L, keras):
        series = keras.Input((7, 3))
        x = L.LSTM(4, return_sequences=True)(series)
        x = L.Bidirectional(L.LSTM(3))(x)
        return keras.Model(series, L.Dense(2)(x))

    assert "LSTM" in _against_onnxruntime(_export(build, tmp_path, "lstm"))
