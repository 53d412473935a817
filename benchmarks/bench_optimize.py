"""`dlinfer optimize` on the zoo: size, test metric and CPU speed against float32 and Keras.

    .venv/bin/python benchmarks/bench_optimize.py              # everything, ~15 min on 2 cores
    .venv/bin/python benchmarks/bench_optimize.py --only mnist_cnn,dcgan_mnist --rounds 1

Two tables, written between the ``<!-- zoo:optimize -->`` markers of
``benchmarks/README.md`` and as JSON in ``results/optimize.cpu.json``:

1. **The trained CNNs** (``mnist_cnn``, ``fashion_cnn``, ``small_convnet``,
   ``vgg16_transfer``), each trained once by ``python -m training train NAME --optimize
   int8`` into ``--trained`` (done here when the files are missing, with the recipes in
   ``TRAINING``), which leaves the real held-out split (``NAME.heldout.npz``) and the
   calibration images (``NAME.calibration.npy``) beside the model.  This script then runs
   ``dlinfer.optimize`` afresh, int8 and graph, gated on that held-out split, and times
   float32, graph, int8 and Keras ``tf.function`` side by side.
2. **Every zoo model after optimize** against Keras ``tf.function``: the CNNs above as
   int8, the generators (latent inputs: random latents are their real input
   distribution) as int8 gated on the images' relative RMS error, the others in graph
   mode; with random weights (``bench_zoo.prepare`` into ``--zoo``; speed does not
   depend on the weights).

Timing: for each batch size, a burn-in round and then ``--rounds`` rounds; in each round
every contender runs for ``--seconds`` after a 0.1 s pause and one warm-up call, and the
round's figure is the median call.  A
contender's figure is the median over rounds, so all contenders share whatever else the
machine is doing.  Batch 1 reports the p50 latency, larger batches items/s.  Threads: all
cores for onnxruntime and TensorFlow alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

BATCHES = (1, 32, 128)
CNNS = ("mnist_cnn", "fashion_cnn", "small_convnet", "vgg16_transfer")
# How each trained CNN is made when --trained lacks it: the zoo's recipe, shortened where
# the default takes more than a few minutes on 2 cores (docs/training.md has the full runs).
TRAINING = {
    "mnist_cnn": [],
    "fashion_cnn": ["--epochs", "3"],
    "small_convnet": ["--samples", "300", "--epochs", "6"],
    "vgg16_transfer": ["--samples", "300", "--weights", "none", "--epochs", "2",
                       "--fine-tune-epochs", "0"],
}


def _train(name: str, folder: str) -> None:
    cmd = [sys.executable, "-m", "training", "train", name, "--out", folder,
           "--optimize", "int8", *TRAINING[name]]
    print(f"[{name}] training: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


# Idle time before each contender: onnxruntime's and TensorFlow's worker threads spin
# for a while after a call, and must not run into the next contender's timing.
_SETTLE_SECONDS = 0.1


def _median_call(call: Callable[[], Any], seconds: float) -> float:
    """Median seconds per call over ``seconds`` (at least 3 calls), after one warm-up."""
    time.sleep(_SETTLE_SECONDS)
    call()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _keras_call(keras_file: str, x: np.ndarray) -> Callable[[], Any]:
    from dlinfer.tools.keras_baseline import KerasBaseline

    return KerasBaseline(keras_file, x[:1]).steps(x)["keras.tf_function"]


def time_contenders(contenders: dict[str, Callable[[np.ndarray], Callable[[], Any]]],
                    batch_of: Callable[[int], np.ndarray], rounds: int, seconds: float,
                    batches: tuple[int, ...] = BATCHES) -> dict[str, dict[int, float]]:
    """{contender: {batch: median seconds per call}}, contenders interleaved per round.

    The one timing loop of bench_optimize and bench_backends.  Round 0 is a burn-in and is
    dropped: on the development VM the first seconds of a run measured up to 1.5x slower
    than the rest (clock and cache warm-up).  Each round starts one place further on, so
    every contender takes early and late places: in a fixed order the first ones (plain
    onnxruntime and OpenVINO in bench_backends) measured up to 2.4x slower than the same
    configuration later in the round, and alone.
    """
    result: dict[str, dict[int, float]] = {name: {} for name in contenders}
    for batch in batches:
        x = batch_of(batch)
        calls = {name: make(x) for name, make in contenders.items()}
        per_round: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(calls)
        for round_ in range(rounds + 1):
            start = round_ * len(names) // (rounds + 1)
            for name in names[start:] + names[:start]:
                took = _median_call(calls[name], seconds)
                if round_:
                    per_round[name].append(took)
        for name, values in per_round.items():
            result[name][batch] = float(np.median(values))
        print(f"    batch {batch}: " + ", ".join(
            f"{n} {batch / result[n][batch]:,.0f}/s" for n in contenders), flush=True)
    return result


def _onnx_call(path: str) -> Callable[[np.ndarray], Callable[[], Any]]:
    import dlinfer

    model = dlinfer.Model(path)
    return lambda x: (lambda: model.run(x))


def _figures(times: dict[int, float]) -> dict[str, float]:
    return {"p50_ms_b1": times[1] * 1e3,
            **{f"items_per_s_b{b}": b / times[b] for b in BATCHES if b > 1}}


def trained_cnn(name: str, folder: str, rounds: int, seconds: float) -> dict[str, Any]:
    from dlinfer.optimize import optimize

    stem = os.path.join(folder, name)
    needed = [f"{stem}.{ext}" for ext in ("onnx", "keras", "heldout.npz", "calibration.npy")]
    if not all(os.path.exists(p) for p in needed):
        _train(name, folder)
    reports = {}
    for mode in ("int8", "graph"):
        report = optimize(f"{stem}.onnx", f"{stem}.{mode}.onnx", mode,
                          calibrate=f"{stem}.calibration.npy" if mode == "int8" else None,
                          eval=f"{stem}.heldout.npz", max_drop=100)
        reports[mode] = report.to_dict()
        print(f"[{name}] {mode}:\n    " + report.format().replace("\n", "\n    "), flush=True)
    with np.load(f"{stem}.heldout.npz") as held:
        x_all = held[next(k for k in held.files if k != "labels")]
    contenders = {"float32": _onnx_call(f"{stem}.onnx"), "graph": _onnx_call(f"{stem}.graph.onnx"),
                  "int8": _onnx_call(f"{stem}.int8.onnx"),
                  "tf.function": lambda x: _keras_call(f"{stem}.keras", x)}
    print(f"[{name}] timing", flush=True)
    times = time_contenders(contenders, lambda b: np.resize(x_all, (b, *x_all.shape[1:])),
                            rounds, seconds)
    metrics = reports["int8"]["metrics"]
    accuracy = {"float32": metrics["accuracy_float32"], "int8": metrics["accuracy"],
                "graph": reports["graph"]["metrics"]["accuracy"]}
    sizes = {"float32": reports["int8"]["source_bytes"], "int8": reports["int8"]["out_bytes"],
             "graph": reports["graph"]["out_bytes"]}
    return {"name": name, "samples": metrics["samples"], "accuracy": accuracy, "sizes": sizes,
            "times": times, "reports": reports}


def zoo_model(name: str, onnx_path: str, keras_path: str, rounds: int, seconds: float
              ) -> dict[str, Any]:
    import dlinfer
    from dlinfer.optimize import optimize
    from dlinfer.verification.samples import random_samples

    stem = onnx_path[: -len(".onnx")]
    report = optimize(onnx_path, f"{stem}.graph.onnx", "graph", max_drop=100)
    spec = dlinfer.Model(onnx_path).spec
    contenders = {"float32": _onnx_call(onnx_path), "graph": _onnx_call(f"{stem}.graph.onnx"),
                  "tf.function": lambda x: _keras_call(keras_path, x)}
    mode = "graph"
    if all(i.kind == "latent" for i in spec.inputs):
        # A generator's inputs are its latent distribution: random latents are real
        # calibration data, and the gate (relative RMS error of the images) is the default.
        latents = random_samples(spec.inputs, 512, seed=1)[0]
        try:
            report = optimize(onnx_path, f"{stem}.int8.onnx", "int8", calibrate=latents,
                              eval=random_samples(spec.inputs, 512, seed=2)[0])
        except dlinfer.OptimizeError as refusal:  # the gate said no: graph mode it is
            print(f"[{name}] {refusal}", flush=True)
        else:
            print(f"[{name}] int8:\n    " + report.format().replace("\n", "\n    "),
                  flush=True)
            contenders["int8"] = _onnx_call(f"{stem}.int8.onnx")
            mode = "int8"
    print(f"[{name}] timing (rewrites: {report.settings.get('rewrites', {})})", flush=True)

    def batch_of(b: int) -> np.ndarray:
        return next(iter(random_samples(spec.inputs, b, seed=0)[0].values()))

    return {"name": name, "mode": mode,
            "times": time_contenders(contenders, batch_of, rounds, seconds),
            "rewrites": report.settings.get("rewrites", {}),
            "drop": report.drop_points, "metric": report.metrics["metric"]}


def _ratio_cells(times: dict[str, dict[int, float]], mine: str, theirs: str) -> list[str]:
    return [f"{times[theirs][b] / times[mine][b]:.2f}x" for b in BATCHES]


def _header(columns: str, align: str) -> list[str]:
    """A markdown table's first two lines: ``columns`` split on ``;``, ``align`` l or r each."""
    names = [c.strip() for c in columns.split(";")]
    return ["| " + " | ".join(names) + " |",
            "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]


def cnn_table(rows: list[dict[str, Any]]) -> str:
    lines = _header("model; variant; size; test accuracy; p50 ms, batch 1; items/s, batch 32;"
                    "items/s, batch 128; vs float32 at 32; vs tf.function at 1 / 32 / 128",
                    "llrrrrrrl")
    for row in rows:
        t = row["times"]
        for variant in ("float32", "graph", "int8"):
            f = _figures(t[variant])
            size = row["sizes"][variant]
            share = size / row["sizes"]["float32"]
            lines.append(
                f"| {row['name']} | {variant} | {size / 1e6:.2f} MB ({share:.1%}) | "
                f"{row['accuracy'][variant]:.2%} | {f['p50_ms_b1']:.3f} | "
                f"{f['items_per_s_b32']:,.0f} | {f['items_per_s_b128']:,.0f} | "
                f"{t['float32'][32] / t[variant][32]:.2f}x | "
                f"{' / '.join(_ratio_cells(t, variant, 'tf.function'))} |")
    return "\n".join(lines)


def zoo_table(rows: list[dict[str, Any]]) -> str:
    lines = _header("model; optimized as; rewrites; float32 vs tf.function at 1 / 32 / 128;"
                    "optimized vs tf.function at 1 / 32 / 128; at least as fast at every batch",
                    "llllll")
    for row in rows:
        t, mode = row["times"], row["mode"]
        meets = all(t[mode][b] <= t["tf.function"][b] for b in BATCHES)
        rewrites = ", ".join(f"{k} x{v}" for k, v in row.get("rewrites", {}).items()) or "-"
        lines.append(f"| {row['name']} | {mode} | {rewrites} | "
                     f"{' / '.join(_ratio_cells(t, 'float32', 'tf.function'))} | "
                     f"{' / '.join(_ratio_cells(t, mode, 'tf.function'))} | "
                     f"{'yes' if meets else '**no**'} |")
    return "\n".join(lines)


def main() -> int:
    import bench_zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trained", default=os.path.join(ROOT, "artifacts", "optimize"))
    parser.add_argument("--zoo", default=os.path.join(ROOT, "artifacts", "bench"))
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.5, help="per contender per round")
    parser.add_argument("--readme", default=os.path.join(HERE, "README.md"))
    parser.add_argument("--no-readme", action="store_true", help="print the tables only")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    if args.rounds < 1 or not args.seconds > 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")
    only = [n for n in args.only.split(",") if n]
    os.makedirs(args.trained, exist_ok=True)
    started = time.time()

    cnns = [trained_cnn(n, args.trained, args.rounds, args.seconds)
            for n in CNNS if not only or n in only]
    ready, skipped = bench_zoo.prepare(args.zoo, [n for n in only if n not in CNNS] or None)
    zoo = [zoo_model(n, o, k, args.rounds, args.seconds)
           for n, (o, k) in ready.items() if n not in CNNS and (not only or n in only)]
    # The trained CNNs answer the zoo table too, deployed as int8 (the rewrites are int8's).
    zoo += [{"name": r["name"], "mode": "int8", "times": r["times"],
             "rewrites": r["reports"]["int8"]["settings"].get("rewrites", {})} for r in cnns]
    zoo.sort(key=lambda r: r["name"])

    from dlinfer.tools.doctor import cpu_info

    cpu = cpu_info()
    header = (f"Measured {time.strftime('%Y-%m-%d')} in one run of "
              f"`benchmarks/bench_optimize.py --rounds {args.rounds} --seconds {args.seconds}` "
              f"({(time.time() - started) / 60:.0f} min) on {cpu.get('model')}, "
              f"{os.cpu_count()} cores.")
    body = "\n\n".join(part for part in (header, cnns and cnn_table(cnns), zoo_table(zoo)) if part)
    print(body)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "optimize.cpu.json"), "w") as f:
        json.dump({"cnns": cnns, "zoo": zoo, "skipped": skipped}, f, indent=1, default=str)
    if not args.no_readme:
        bench_zoo.write_readme(args.readme, "optimize", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
