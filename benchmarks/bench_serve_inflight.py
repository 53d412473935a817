"""Served throughput on OpenVINO with batches in flight and without, side by side.

    python benchmarks/bench_serve_inflight.py [--models mnist_cnn,vgg16_transfer]
        [--in-flight 1,2,3] [--clients 64] [--max-batch-size 32] [--rounds 5] [--seconds 3]
        [--json benchmarks/results/serve_inflight.cpu.json]
    python benchmarks/bench_serve_inflight.py --raw-hints [--models mnist_cnn]

For each zoo model (artifacts/bench_zoo/<name>.onnx; `python benchmarks/bench_zoo.py`
writes them), one ``Classifier(backend="openvino")`` is served by one
:class:`~dlinfer.Batcher` per ``in_flight`` setting: 1 is the worker running one batch
at a time (onnxruntime's path, and OpenVINO's before), 2 is the default on OpenVINO
(the next batch preprocessed and started while the last one runs).  C coroutine
clients on one event loop each await ``batcher.predict(uint8 image)`` in a loop, as
`dlinfer serve`'s handlers do, for ``--seconds`` per contender.  ``--http`` instead
runs one ``dlinfer serve --backend openvino --in-flight N`` per setting and C HTTP
clients posting PNGs (bench_serve.py's client).  ``--raw-hints`` asks how many
requests to keep in flight without dlinfer: a raw OpenVINO loop at 1, 2 and 4 in
flight, the model compiled with the LATENCY hint (dlinfer's) and with THROUGHPUT.

Rounds are interleaved, each starting one contender further on; round 0 is a burn-in
and is dropped (bench_optimize.time_contenders' rule).  The table gives medians over
rounds: items per second, its ratio to ``in_flight=1`` (the median of the per-round
ratios), and p50/p99 request latency.  Every answer is checked
against ``Classifier.predict`` of the same image; a lost or mismatched answer fails
the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import dlinfer
import numpy as np
from bench_serve import Checker, ServerProcess, load_pool, pct, png_bodies, run_async, run_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "artifacts", "bench_zoo")
MODELS = ("mnist_cnn", "fashion_cnn", "small_convnet", "vgg16_transfer")
POOL = 256  # distinct images per model, cycled


def images_for(clf: dlinfer.Classifier, n: int) -> np.ndarray:
    """uint8 images of the model's input size: held-out MNIST digits for 28x28 gray,
    seeded random pixels otherwise (the timing does not depend on their content)."""
    _, height, width, channels = clf.model.inputs[0].shape
    if (height, width, channels) == (28, 28, 1):
        return load_pool(n)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, height, width, channels), dtype=np.uint8)


def serve_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    path = os.path.join(ZOO, f"{name}.onnx")
    clf = dlinfer.Classifier(path, backend="openvino", threads=args.threads)
    pool = images_for(clf, POOL)
    checker = Checker(clf.predict(list(pool)))
    settings = [int(s) for s in args.in_flight.split(",")]
    if args.http:  # one `dlinfer serve` per setting, PNG bodies over keep-alive connections
        bodies = png_bodies(pool[..., 0] if pool.shape[-1] == 1 else pool)
        servers = {n: ServerProcess(path, args.max_batch_size, args.max_delay_ms, extra=(
            "--backend", "openvino", "--in-flight", str(n), *(
                ("--threads", str(args.threads)) if args.threads else ())))
                   for n in settings}
        serve = {n: (lambda s=s: run_http(s.port, "bench", bodies, args.clients, 10**9,
                                          args.seconds, checker)) for n, s in servers.items()}
        close = [s.stop for s in servers.values()]
    else:  # in process: coroutines awaiting Batcher.predict
        batchers = {n: dlinfer.Batcher(clf, args.max_batch_size, args.max_delay_ms,
                                       max_queue=4 * args.clients, in_flight=n,
                                       name=f"{name}-{n}") for n in settings}
        serve = {n: (lambda b=b: run_async(args.clients, 10**9, args.seconds, b, pool, checker))
                 for n, b in batchers.items()}
        close = [b.close for b in batchers.values()]
    rows: dict[int, dict[str, list[float]]] = {
        n: {"rps": [], "p50": [], "p99": []} for n in settings}
    lost = 0
    try:
        for round_ in range(args.rounds + 1):
            start = round_ * len(settings) // (args.rounds + 1)
            for n in settings[start:] + settings[:start]:
                time.sleep(0.1)  # OpenVINO's threads settle before the next contender
                got = serve[n]()
                lost += got["sent"] - got["n"]
                if not round_:
                    continue  # burn-in
                p50, p99 = pct(got["lat"])
                row = rows[n]
                row["rps"].append(got["rps"])
                row["p50"].append(p50)
                row["p99"].append(p99)
            if round_:
                print(f"  [{name}] round {round_}: " + ", ".join(
                    f"in_flight={n} {rows[n]['rps'][-1]:,.0f}/s" for n in settings), flush=True)
    finally:
        for stop in close:
            stop()
    if lost or checker.bad:
        raise SystemExit(f"{name}: {lost} lost and {checker.bad} mismatched answers")
    base = np.array(rows[settings[0]]["rps"])
    return {n: {"items_per_s": float(np.median(r["rps"])),
                "ratio": float(np.median(np.array(r["rps"]) / base)),
                "ratio_range": [float(min(np.array(r["rps"]) / base)),
                                float(max(np.array(r["rps"]) / base))],
                "p50_ms": float(np.median(r["p50"])), "p99_ms": float(np.median(r["p99"]))}
            for n, r in rows.items()}


def raw_hints(name: str, args: argparse.Namespace) -> None:
    """The sizing question without dlinfer: a raw OpenVINO loop keeping k requests of
    batch ``--max-batch-size`` in flight, on the model compiled with the LATENCY hint
    (dlinfer's: one stream) and with THROUGHPUT (several streams)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(os.path.join(ZOO, f"{name}.onnx"))
    shape = [args.max_batch_size, *model.inputs[0].get_partial_shape()[1:].to_shape()]
    model.reshape({model.inputs[0].any_name: shape})
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    threads = args.threads or os.cpu_count()
    compiled = {hint: core.compile_model(model, "CPU", {
        "PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False})
        for hint in ("LATENCY", "THROUGHPUT")}

    def rate(cm: Any, k: int) -> float:
        requests = [cm.create_infer_request() for _ in range(k)]
        for r in requests:
            r.set_input_tensor(ov.Tensor(x, shared_memory=True))
            r.start_async()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            r = requests[done % k]
            r.wait()
            r.start_async()
            done += 1
        for r in requests:
            r.wait()
        return done * args.max_batch_size / (time.perf_counter() - start)

    cells = [(hint, k) for hint in compiled for k in (1, 2, 4)]
    got: dict[tuple[str, int], list[float]] = {c: [] for c in cells}
    for round_ in range(args.rounds + 1):  # interleaved; round 0 is a burn-in
        for hint, k in cells[round_ % len(cells):] + cells[:round_ % len(cells)]:
            value = rate(compiled[hint], k)
            if round_:
                got[(hint, k)].append(value)
    for hint, cm in compiled.items():
        print(f"[{name}] {hint} ({cm.get_property('NUM_STREAMS')} streams, optimal "
              f"{cm.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS')} requests): " + ", ".join(
                  f"{k} in flight {np.median(got[(hint, k)]):,.0f}/s" for k in (1, 2, 4)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--in-flight", default="1,2,3",
                    help="in_flight settings, the first one the ratio's base")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-delay-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=None, help="OpenVINO threads (all cores)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--http", action="store_true",
                    help="through `dlinfer serve --in-flight N` subprocesses over HTTP")
    ap.add_argument("--raw-hints", action="store_true",
                    help="only raw OpenVINO: LATENCY vs THROUGHPUT hint, 1/2/4 in flight")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.raw_hints:
        for name in args.models.split(","):
            raw_hints(name, args)
        return 0
    results = {}
    for name in args.models.split(","):
        if not os.path.exists(os.path.join(ZOO, f"{name}.onnx")):
            print(f"[{name}] skipped: {ZOO}/{name}.onnx is missing (benchmarks/bench_zoo.py)")
            continue
        results[name] = serve_model(name, args)
    print(f"\n{args.clients} {'HTTP' if args.http else 'asyncio'} clients, "
          f"max batch {args.max_batch_size}, max delay {args.max_delay_ms:g} ms, "
          f"OpenVINO {_openvino_version()}, "
          f"{os.cpu_count()} cores; medians of {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s\n")
    print("| model | in_flight | items/s | vs in_flight=1 (range) | p50 ms | p99 ms |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name, by_n in results.items():
        for n, r in by_n.items():
            low, high = r["ratio_range"]
            print(f"| {name} | {n} | {r['items_per_s']:,.0f} | {r['ratio']:.2f}x "
                  f"({low:.2f}-{high:.2f}) | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "machine": platform.processor() or
                       platform.machine(), "cores": os.cpu_count(),
                       "openvino": _openvino_version(), "results": results}, f, indent=1)
    return 0


def _openvino_version() -> str:
    import openvino

    return openvino.__version__.split("-")[0]


if __name__ == "__main__":
    sys.exit(main())
