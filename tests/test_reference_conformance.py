"""The reference executor against ONNX's own conformance cases and light real CNNs.

Every node case that ``onnx.backend.test.case.node.collect_testcases()`` generates,
and every model of the suites the onnx wheel ships under ``backend/test/data/``
(simple, pytorch-converted, pytorch-operator), whose ops all lie in
``reference.SUPPORTED_OPS`` (subgraph ops included) is "claimed".  A claimed case
must pass within the ONNX backend tests' tolerances (rtol 1e-3, atol 1e-7) or be
refused with UnsupportedOpError; a wrong answer or any other exception fails.

The default run checks a seeded subsample; ``-m slow`` checks every case and the
95% pass rate, and prints the figures docs/verify.md quotes (claimed, passed,
refused, per op).  Collecting the node cases costs ~5 s: onnx generates them on
import.
"""

from __future__ import annotations

import glob
import os
import random
import warnings
from collections import Counter
from functools import cache

import numpy as np
import pytest
from optional import requires
from reference import assert_close, seed_of

pytestmark = [
    requires("onnx", "onnxruntime"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

RTOL, ATOL = 1e-3, 1e-7  # onnx/backend/test/runner: the tolerances every backend meets
SAMPLE = 60  # default-run cases: a few seconds beside the ~5 s collection
DATA_SUITES = ("simple", "pytorch-converted", "pytorch-operator")
LIGHT = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
         "shufflenet", "squeezenet", "vgg19", "zfnet512")


def _data_dir() -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def _ops(graph) -> set[str]:
    """Op types of a graph and of every subgraph in its attributes, with their domain."""
    found = set()
    for node in graph.node:
        found.add((node.domain, node.op_type))
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found |= _ops(sub)
    return found


def _read_pb(path: str):
    import onnx
    from onnx import numpy_helper

    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def _data_case(model_dir: str):
    import onnx

    data_sets = []
    for folder in sorted(glob.glob(os.path.join(model_dir, "test_data_set_*"))):
        def load(kind, folder=folder):
            return [_read_pb(p) for p in sorted(glob.glob(os.path.join(folder, f"{kind}_*.pb")),
                                                key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
        data_sets.append((load("input"), load("output")))
    return onnx.load(os.path.join(model_dir, "model.onnx")), data_sets


@cache
def all_cases() -> tuple[tuple[str, object, list], ...]:
    """(name, model, data sets) for every node case and every shipped data-suite model."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [(c.name, c.model, c.data_sets) for c in collect_testcases() if c.model]
    for suite in DATA_SUITES:
        for model_dir in sorted(glob.glob(os.path.join(_data_dir(), suite, "*"))):
            if os.path.exists(os.path.join(model_dir, "model.onnx")):
                model, data = _data_case(model_dir)
                cases.append((f"{suite}/{os.path.basename(model_dir)}", model, data))
    return tuple(cases)


def claimed_cases() -> list[tuple[str, object, list]]:
    from dlinfer.verification import reference

    supported = set(reference.SUPPORTED_OPS)
    return [c for c in all_cases()
            if all(d in ("", "ai.onnx") and o in supported for d, o in _ops(c[1].graph))]


def _assert_same(got: np.ndarray, want: np.ndarray, context: str) -> None:
    """assert_close, with NaN and infinities required at the same places (as ONNX's runner)."""
    got, want = np.asarray(got), np.asarray(want)
    if want.dtype.kind == "V" and got.dtype == want.dtype:  # ml_dtypes: bfloat16, float8 ...
        got, want = got.astype(np.float32), want.astype(np.float32)
    if want.dtype.kind in "fc" and got.shape == want.shape:
        special = ~np.isfinite(want)
        same = np.isnan(got) == np.isnan(want)
        same &= np.where(np.isinf(want), got == want, True)
        assert same.all(), f"{context}: NaN/inf at different places"
        if special.any():
            got, want = np.where(special, 0, got).astype(got.dtype), np.where(special, 0, want)
    assert_close(got, want, rtol=RTOL, atol=ATOL, context=context)


def _array(value):
    """Cases of types NumPy lacks (bfloat16, float8, int4) hold TensorProtos."""
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else value


def run_case(name: str, model, data_sets) -> str:
    """'pass' or 'refused'; raises AssertionError on a wrong answer, anything else as is."""
    from dlinfer.verification import reference

    init = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init]
    outputs = [o.name for o in model.graph.output]
    try:
        graph = reference.Graph(model)
        for k, (inputs, expected) in enumerate(data_sets):
            feed = {n: _array(v) for n, v in zip(names, inputs, strict=False)}
            got = graph.run(feed)
            for out in outputs[: len(expected)]:
                _assert_same(got[out], _array(expected[outputs.index(out)]), f"{name}[{k}] {out}")
    except reference.UnsupportedOpError:
        return "refused"
    return "pass"


def evaluate(cases) -> tuple[Counter, dict[str, str], Counter]:
    """Outcome counts, the failures (name -> why) and per-op pass counts."""
    from onnx.backend.test.case.node import collect_testcases  # noqa: F401 - warm import

    counts: Counter = Counter()
    failures: dict[str, str] = {}
    per_op: Counter = Counter()
    for name, model, data_sets in cases:
        try:
            outcome = run_case(name, model, data_sets)
        except AssertionError as exc:
            outcome, failures[name] = "wrong", str(exc)[:300]
        except Exception as exc:  # an unclear error is a bug: report, don't stop
            outcome, failures[name] = "error", f"{type(exc).__name__}: {exc}"[:300]
        counts[outcome] += 1
        for _, op_type in _ops(model.graph):
            per_op[op_type, outcome] += 1
    return counts, failures, per_op


def _report(counts: Counter, failures: dict[str, str], per_op: Counter, total: int) -> str:
    claimed = sum(counts.values())
    lines = [f"ONNX conformance: {claimed} claimed of {total} cases; {counts['pass']} pass, "
             f"{counts['refused']} refused, {counts['wrong']} wrong, {counts['error']} errors"]
    for op_type in sorted({o for o, _ in per_op}):
        p, r = per_op[op_type, "pass"], per_op[op_type, "refused"]
        bad = per_op[op_type, "wrong"] + per_op[op_type, "error"]
        flag = f"  BAD {bad}" if bad else ""
        lines.append(f"  {op_type:24s} pass {p:3d}  refused {r:3d}{flag}")
    lines += [f"  FAIL {k}: {v}" for k, v in failures.items()]
    return "\n".join(lines)


def test_conformance_sample():
    """A seeded subsample of the claimed cases: none wrong, none unclear."""
    claimed = claimed_cases()
    rng = random.Random(seed_of("conformance", len(claimed)))
    sample = rng.sample(claimed, min(SAMPLE, len(claimed)))
    counts, failures, per_op = evaluate(sample)
    print(_report(counts, failures, per_op, len(all_cases())))
    assert not failures, _report(counts, failures, per_op, len(all_cases()))


@pytest.mark.slow
def test_conformance_all():
    """Every claimed case: 0 wrong, 0 unclear, >= 95% pass.  Prints the figures for the docs."""
    claimed = claimed_cases()
    counts, failures, per_op = evaluate(claimed)
    report = _report(counts, failures, per_op, len(all_cases()))
    print(report)
    assert not failures, report
    assert counts["pass"] >= 0.95 * len(claimed), report


# ---- light real CNNs --------------------------------------------------------
# Rule: |ref - ort| <= 1e-4 * max|ort| elementwise.  Relative to the output's scale,
# not to each element: these nets end in logits or softmax where near-zero entries
# would make a per-element relative bound meaningless, and both executors sum in
# float32 in different orders, so a scale-free absolute bound cannot hold either.

def _light_input(model):
    init = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in init)
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed_of("light", inp.name, tuple(shape)))
    return inp.name, rng.uniform(0, 1, shape).astype(np.float32)


def check_light(name: str) -> None:
    import onnx
    import onnxruntime as ort
    from dlinfer.verification import reference

    path = os.path.join(_data_dir(), "light", f"light_{name}.onnx")
    model = onnx.load(path)
    input_name, x = _light_input(model)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = sess.run(None, {input_name: x})
    got = reference.run(model, {input_name: x})
    for (out, g), w in zip(got.items(), want, strict=True):
        scale = float(np.max(np.abs(w)))
        assert_close(g, w, atol=1e-4 * scale, context=f"light {name}: {out}")


def test_light_inception_v1():
    """One light CNN (LRN, concat branches; < 1 s) in the default run."""
    check_light("inception_v1")


@pytest.mark.slow
def test_light_models_match_onnxruntime():
    """At least 8 of the 9 match; none may be wrong (a refusal only counts as a miss)."""
    from dlinfer.verification import reference

    outcome = {}
    for name in LIGHT:
        try:
            check_light(name)
            outcome[name] = "match"
        except reference.UnsupportedOpError as exc:
            outcome[name] = f"refused: {exc}"
    print("light models:", sum(v == "match" for v in outcome.values()), "of", len(LIGHT),
          "match onnxruntime;", outcome)
    assert sum(v == "match" for v in outcome.values()) >= 8, outcome
