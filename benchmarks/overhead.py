"""Per-call overhead of dlinfer.Model.run against a bare onnxruntime session, batch 1.

    .venv/bin/python benchmarks/overhead.py [--iterations 20000] [--out benchmarks/results]

Contenders, all on the same onnxruntime sessions so that only the Python around
``run`` differs, called once each per iteration in a rotating order (see ``measure``):

- ``ort.run``:        ``session.run([out], {name: x})``, the bare public API, on the
  session of the plain Model (``ort.run.b``: the same on the IOBinding Model's session,
  the reference for the IOBinding contenders);
- ``dlinfer.run``:     ``Model.run(x)``, with every input check;
- ``ort.iobinding``:   bare IOBinding: ``bind_cpu_input``, ``bind_output`` into a
  preallocated array, ``run_with_iobinding``;
- ``dlinfer.out``:     ``Model(io_binding=True).run(x, out=out)``, the same ``x`` each
  call (dlinfer then skips rebinding it: the binding is zero-copy);
- ``dlinfer.out.newx``: the same, alternating between two input arrays, as when each
  call brings a new batch (small inputs are copied into a buffer that stays bound,
  larger ones bound anew).

Targets (issue 6): ``dlinfer.run`` within 5 us of ``ort.run``; ``dlinfer.out`` faster
than ``ort.run``.

Models: the workshop MNIST MLP (Dense 512 relu on 784 -> Dense 10 softmax) and the
MNIST CNN, with random weights (timing does not depend on the weights), exported with
``dlinfer.export.to_onnx``; plus a 1-node Relu model, whose time is pure call
overhead.  onnxruntime runs with 1 intra-op thread, so the shared machine's other
load disturbs the figures less; overhead does not depend on the thread count.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # training/ lives at the repository root

import dlinfer  # noqa: E402
from dlinfer.tools.doctor import probe_model_bytes  # noqa: E402


def build_models(folder: str) -> dict[str, str]:
    """The MLP and CNN as ONNX files with random weights (cached in ``folder``)."""
    paths = {"mnist_mlp": os.path.join(folder, "mnist_mlp.onnx"),
             "mnist_cnn": os.path.join(folder, "mnist_cnn.onnx")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(folder, exist_ok=True)
    from dlinfer.export import to_onnx

    from training._tf import keras
    from training.zoo import mnist_cnn

    keras.utils.set_random_seed(0)
    to_onnx(workshop_mlp(keras), paths["mnist_mlp"], name="mnist_mlp", input_kind="features",
            labels=[str(i) for i in range(10)])
    to_onnx(mnist_cnn(), paths["mnist_cnn"], name="mnist_cnn", labels=[str(i) for i in range(10)])
    return paths


def workshop_mlp(keras):  # noqa: ANN001, ANN201
    """The workshop MLP: 407,050 parameters."""
    return keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
         keras.layers.Dense(10, activation="softmax")],
        name="mnist_mlp",
    )


def contenders(path: str) -> dict[str, callable]:
    plain = dlinfer.Model(path, threads=1)
    bound = dlinfer.Model(path, threads=1, io_binding=True)
    info, out_info = plain.inputs[0], plain.outputs[0]
    shape = [1 if d is None else d for d in info.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float64).astype(info.dtype)
    xs = [x.copy(), x.copy()]
    turn = [0]
    out_shape = plain.output_shape(1)[0]
    out = np.empty(out_shape, out_info.dtype)
    out2 = np.empty(out_shape, out_info.dtype)
    session, bsession = plain.session, bound.session
    names, feed_name = [out_info.name], info.name
    binding = bsession.io_binding()

    def ort_run() -> None:
        session.run(names, {feed_name: x})

    def ort_run_b() -> None:
        bsession.run(names, {feed_name: x})

    def ort_iobinding() -> None:
        binding.bind_cpu_input(feed_name, x)
        binding.bind_output(out_info.name, "cpu", 0, out_info.dtype, out_shape, out2.ctypes.data)
        bsession.run_with_iobinding(binding)

    # the same answer from every contender, before timing anything
    want = session.run(names, {feed_name: x})[0]
    ort_iobinding()
    for got in (plain.run(x), bound.run(x, out=out), out2):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    return {
        "ort.run": ort_run,
        "dlinfer.run": lambda: plain.run(x),
        "ort.run.b": ort_run_b,
        "ort.iobinding": ort_iobinding,
        "dlinfer.out": lambda: bound.run(x, out=out),
        "dlinfer.out.newx": lambda: bound.run(xs[turn.__setitem__(0, 1 - turn[0]) or turn[0]],
                                              out=out),
    }


def measure(path: str, iterations: int) -> dict[str, dict[str, float]]:
    """Time every contender once per iteration, in a random order, call by call.

    Calls of one iteration run within a few hundred microseconds of each other, so
    they share the machine's load; the median over iterations of each call's
    difference to the same iteration's bare ``run`` on the same session is then a
    robust estimate of the overhead difference, even when the compute is disturbed.
    The order is random because a call right after another session's call finds that
    session's weights in the cache and its own not: a fixed order would bias the
    differences by tens of microseconds for the MLP's 1.6 MB of weights.
    """
    fns = contenders(path)
    names = list(fns)
    calls = [fns[n] for n in names]
    for fn in calls:  # warm up
        for _ in range(300):
            fn()
    pc = time.perf_counter_ns
    times = np.empty((iterations, len(calls)), dtype=np.int64)
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(calls)).tolist() for _ in range(256)]
    gc.disable()
    try:
        for it in range(iterations):
            for j in orders[it % 256]:
                fn = calls[j]
                t0 = pc()
                fn()
                times[it, j] = pc() - t0
    finally:
        gc.enable()
    us = times / 1e3
    results = {}
    for j, name in enumerate(names):
        ref = "ort.run" if name in ("ort.run", "dlinfer.run") else "ort.run.b"
        results[name] = {
            "session": "plain" if ref == "ort.run" else "io_binding",
            "us_per_call_median": float(np.median(us[:, j])),
            "us_per_call_p10": float(np.percentile(us[:, j], 10)),
            "minus_bare_run_us_median": float(np.median(us[:, j] - us[:, names.index(ref)])),
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--models", default=os.path.join(HERE, "..", "artifacts", "bench"))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--readme", default=os.path.join(HERE, "README.md"))
    args = parser.parse_args()

    paths = build_models(args.models)
    relu = os.path.join(args.models, "relu_probe.onnx")
    with open(relu, "wb") as f:
        f.write(probe_model_bytes())
    paths = {"relu (1 node)": relu, **paths}
    load = os.getloadavg()[0]
    results = {}
    for name, path in paths.items():
        results[name] = measure(path, args.iterations)
    lines = [
        f"Measured by `python benchmarks/overhead.py --iterations {args.iterations}`: batch 1, "
        f"1 intra-op thread, onnxruntime {__import__('onnxruntime').__version__}, "
        f"{os.cpu_count()} cores, 1-minute load average {load:.1f} at the start (shared "
        "machine). Each iteration calls every contender once, in a random order, timing "
        "each call. **minus bare run** is the median over iterations of the call's time "
        "minus the same iteration's bare `session.run` on the same session (`ort.run` for "
        "the plain session, `ort.run.b` for the session with IOBinding), which cancels "
        "most of the other load.",
        "",
        "| model | contender | session | median us/call | p10 us/call "
        "| minus bare run (median) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for model, rows in results.items():
        for name, r in rows.items():
            lines.append(f"| {model} | `{name}` | {r['session']} | {r['us_per_call_median']:.2f} "
                         f"| {r['us_per_call_p10']:.2f} | {r['minus_bare_run_us_median']:+.2f} |")
    print("\n".join(lines))
    verdict = {}
    for model in ("mnist_mlp", "mnist_cnn"):
        rows = results[model]
        verdict[model] = {
            "dlinfer.run within 5 us of ort.run":
                rows["dlinfer.run"]["minus_bare_run_us_median"] <= 5,
            "dlinfer.out faster than ort.run": rows["dlinfer.out"]["minus_bare_run_us_median"] < 0,
            "dlinfer.out.newx faster than ort.run":
                rows["dlinfer.out.newx"]["minus_bare_run_us_median"] < 0,
        }
    print(json.dumps(verdict, indent=2))
    from bench_zoo import write_readme

    lines += ["", "Targets: " + "; ".join(
        f"{model}: " + ", ".join(f"{k} **{'met' if ok else 'missed'}**" for k, ok in v.items())
        for model, v in verdict.items())]
    write_readme(args.readme, "overhead", "\n".join(lines))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "overhead.json"), "w") as f:
        json.dump({
            "load_average_1min_at_start": load, "iterations": args.iterations, "threads": 1,
            "batch_size": 1, "cpu": dlinfer.diagnose(probe=False)["cpu"],
            "onnxruntime": __import__("onnxruntime").__version__,
            "python": platform.python_version(), "results": results, "targets_met": verdict,
        }, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
