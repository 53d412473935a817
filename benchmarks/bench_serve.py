"""Load test: the in-process Batcher and `dlinfer serve`, batching on and off.

    python benchmarks/bench_serve.py [artifacts/mnist_cnn.onnx] [--requests N] [--seconds S]
    python benchmarks/bench_serve.py --soak S [--clients 64] [--bad-fraction 0.05] [--workers N]
    python benchmarks/bench_serve.py --hostile
    python benchmarks/bench_serve.py --drain S [--clients 64]

Load goes only to 127.0.0.1, and every cell is bounded by a request count and a
time limit.  Contenders run side by side in one process run, so ratios compare
like with like on a shared machine:

- bare onnxruntime ``session.run`` on ready float32 batches of 1, 16 and 64 (the
  ceiling: the model's own batched speed);
- C concurrent clients (threads) calling ``Classifier.predict`` on one image each,
  with no batcher;
- C concurrent clients submitting to a ``Batcher``, batching on (max batch 64,
  ``--max-delay-ms``) and off (max batch 1);
- C concurrent HTTP clients (keep-alive connections, raw PNG bodies) against a
  ``dlinfer serve`` subprocess, batching on and off.

Every response is checked against a direct ``Classifier.predict`` of the same
input: same label and top index, probability within 1e-5.  Lost or mismatched
responses are counted and make the run fail.

``--soak S`` instead runs one server under C HTTP clients for S seconds, a fraction
of the requests bad, and checks /metrics against what was sent (serve_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import dlinfer
import numpy as np
from dlinfer.runtime.session import batching_session_options

CLIENTS = (1, 4, 16, 64)
FULL_BATCH = 64


def load_pool(n: int) -> np.ndarray:
    """Held-out MNIST digits as uint8 (n, 28, 28); random pixels if the data is missing."""
    try:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
        from training.data import load_mnist

        return load_mnist().x_test[:n]
    except Exception as exc:  # the benchmark still verifies mapping on random inputs
        print(f"(MNIST test digits unavailable: {exc}; using random pixels)")
        return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def pct(lat: list[float]) -> tuple[float, float]:
    if not lat:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(np.array(lat) * 1000.0, [50, 99])
    return float(p50), float(p99)


class Checker:
    """Compares answers with direct predictions of the same pool item."""

    def __init__(self, expected: list[dlinfer.Prediction]) -> None:
        self.expected = expected
        self.bad = 0

    def check(self, i: int, label: str, index: int, probability: float) -> None:
        want = self.expected[i % len(self.expected)]
        if (label != want.label or index != want.index
                or abs(probability - want.probability) > 1e-5 * max(1.0, abs(want.probability))):
            self.bad += 1


# -- closed-loop clients -----------------------------------------------------------------------

def run_threads(n_clients: int, n_requests: int, seconds: float,
                request: Callable[[int], Any], checker: Checker) -> dict[str, Any]:
    counter = itertools.count()
    stop_at = time.perf_counter() + seconds
    lat: list[list[float]] = [[] for _ in range(n_clients)]
    done = [0] * n_clients
    errors: list[BaseException] = []
    start = threading.Barrier(n_clients + 1)

    def client(c: int) -> None:
        start.wait()
        while time.perf_counter() < stop_at:
            i = next(counter)
            if i >= n_requests:
                return
            t0 = time.perf_counter()
            try:
                pred = request(i)
            except BaseException as exc:  # counted as lost
                errors.append(exc)
                continue
            lat[c].append(time.perf_counter() - t0)
            checker.check(i, pred.label, pred.index, pred.probability)
            done[c] += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    all_lat = [x for per in lat for x in per]
    return {"n": sum(done), "sent": sum(done) + len(errors), "errors": errors,
            "rps": sum(done) / elapsed, "lat": all_lat}


def run_async(n_clients: int, n_requests: int, seconds: float, batcher: dlinfer.Batcher,
              pool: np.ndarray, checker: Checker) -> dict[str, Any]:
    """C coroutines on one event loop, each awaiting ``batcher.predict`` in a loop."""
    counter = itertools.count()
    lat: list[float] = []
    errors: list[BaseException] = []

    async def client(stop_at: float) -> int:
        done = 0
        while time.perf_counter() < stop_at:
            i = next(counter)
            if i >= n_requests:
                break
            t0 = time.perf_counter()
            try:
                pred = await batcher.predict(pool[i % len(pool)])
            except Exception as exc:  # counted as lost
                errors.append(exc)
                continue
            lat.append(time.perf_counter() - t0)
            checker.check(i, pred.label, pred.index, pred.probability)
            done += 1
        return done

    async def main() -> tuple[int, float]:
        stop_at = time.perf_counter() + seconds
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(client(stop_at) for _ in range(n_clients)))
        return sum(counts), time.perf_counter() - t0

    n, elapsed = asyncio.run(main())
    return {"n": n, "sent": n + len(errors), "errors": errors, "rps": n / elapsed, "lat": lat}


async def _http_client(port: int, bodies: list[bytes], name: str, counter: Any, n_requests: int,
                       stop_at: float, lat: list[float], checker: Checker,
                       errors: list[BaseException]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while time.perf_counter() < stop_at:
            i = next(counter)
            if i >= n_requests:
                break
            body = bodies[i % len(bodies)]
            head = (f"POST /v1/models/{name}/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            t0 = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                key, _, value = line.decode().partition(":")
                if key.lower() == "content-length":
                    length = int(value)
            data = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if b" 200 " not in status_line:
                errors.append(RuntimeError(f"{status_line!r} {data[:200]!r}"))
                continue
            p = json.loads(data)["predictions"][0]
            checker.check(i, p["label"], p["index"], p["probability"])
            done += 1
    finally:
        writer.close()
    return done


def run_http(port: int, name: str, bodies: list[bytes], n_clients: int, n_requests: int,
             seconds: float, checker: Checker) -> dict[str, Any]:
    counter = itertools.count()
    lat: list[float] = []
    errors: list[BaseException] = []

    async def main() -> tuple[int, float]:
        stop_at = time.perf_counter() + seconds
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(
            _http_client(port, bodies, name, counter, n_requests, stop_at, lat, checker, errors)
            for _ in range(n_clients)))
        return sum(counts), time.perf_counter() - t0

    n, elapsed = asyncio.run(main())
    return {"n": n, "sent": n + len(errors), "errors": errors, "rps": n / elapsed, "lat": lat}


def png_bodies(pool: np.ndarray) -> list[bytes]:
    from PIL import Image

    bodies = []
    for img in pool:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        bodies.append(buf.getvalue())
    return bodies


# -- the server --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model: str, max_batch: int, max_delay_ms: float, workers: int = 1,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dlinfer", "serve", f"bench={model}", "--port", str(self.port),
             "--max-batch-size", str(max_batch), "--max-delay-ms", str(max_delay_ms),
             "--max-queue", "4096", "--log-level", "warning", "--workers", str(workers),
             *extra],
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("dlinfer serve did not start") from None
                time.sleep(0.2)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


# -- main --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="artifacts/mnist_cnn.onnx")
    ap.add_argument("--requests", type=int, default=6000, help="per cell, at most")
    ap.add_argument("--seconds", type=float, default=3.0, help="per cell, at most")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    # Short against the model's 3 ms batch-64 run: 16 closed-loop clients never fill
    # a batch of 64, so every one of their batches waits out the whole delay (at
    # 1 ms, 16 clients got 1.5x the unbatched rate; at 0.25 ms, 2.6x).
    ap.add_argument("--max-delay-ms", type=float, default=0.25)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--spin", action="store_true",
                    help="leave onnxruntime's intra-op spinning on (dlinfer serve turns it off)")
    ap.add_argument("--soak", type=float, metavar="S",
                    help="only a soak: --clients HTTP clients for S seconds against one server")
    ap.add_argument("--clients", type=int, default=64, help="soak: concurrent clients")
    ap.add_argument("--bad-fraction", type=float, default=0.05, help="soak: bad requests")
    ap.add_argument("--workers", type=int, default=1, help="soak: server processes")
    ap.add_argument("--drain", type=float, metavar="S",
                    help="only a drain: SIGTERM after S seconds under --clients clients")
    ap.add_argument("--hostile", action="store_true",
                    help="only the memory cases: a 13000x13000 PNG bomb, eight large PNGs")
    args = ap.parse_args()

    # Every contender shares this session, configured as `dlinfer serve` configures its own.
    options = None if args.spin else batching_session_options()
    clf = dlinfer.Classifier(args.model, device=args.device, session_options=options)
    pool = load_pool(1000)
    # Expected answers from direct Classifier.predict calls on each single input.
    expected = [clf.predict(img)[0] for img in pool]
    print(f"model {args.model} on {clf.model.device} ({clf.model.providers[0]}), "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}, "
          f"intra-op spinning {'on' if args.spin else 'off'}")
    print(f"cells: {args.rounds} interleaved rounds of at most {args.requests} requests or "
          f"{args.seconds / args.rounds:g} s each; "
          f"batching on = max batch {FULL_BATCH}, max delay {args.max_delay_ms:g} ms")

    if args.drain:
        from serve_soak import drain

        server = ServerProcess(args.model, FULL_BATCH, args.max_delay_ms)
        return drain(server, "bench", png_bodies(pool), args.clients, args.drain)
    if args.hostile:
        from serve_soak import hostile

        server = ServerProcess(args.model, FULL_BATCH, args.max_delay_ms)
        try:
            code = hostile(server, "bench")
        finally:
            stopped = server.stop()
        return code or (1 if stopped else 0)
    if args.soak:
        from serve_soak import soak

        own_dir = None
        if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # A folder of our own, so the soak can also read each worker's own counts.
            own_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-")
        server = ServerProcess(args.model, FULL_BATCH, args.max_delay_ms, args.workers)
        print(f"soak: --workers {args.workers}, bad fraction {args.bad_fraction:g}")
        try:
            code = soak(server, "bench", png_bodies(pool), Checker(expected), args.clients,
                        args.soak, args.bad_fraction)
        finally:
            stopped = server.stop()
            if own_dir:
                shutil.rmtree(own_dir, ignore_errors=True)
        print(f"server exited with {stopped} after SIGTERM")
        return code or (1 if stopped else 0)

    sess, name = clf.model.session, clf.model.inputs[0].name

    def run_bare(batch: int, seconds: float) -> dict[str, Any]:
        """The ceiling: onnxruntime alone, fed ready float32 batches back to back."""
        x = clf.preprocess(pool[:batch])
        sess.run(None, {name: x})
        lat: list[float] = []
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at and len(lat) * batch < args.requests:
            t0 = time.perf_counter()
            sess.run(None, {name: x})
            lat.append(time.perf_counter() - t0)
        return {"n": len(lat) * batch, "sent": 0, "errors": [], "lat": lat,
                "rps": batch / float(np.median(lat))}

    def run_batcher(clients: int, mb: int, kind: str, chk: Checker) -> dict[str, Any]:
        with dlinfer.Batcher(clf, max_batch_size=mb, max_delay_ms=args.max_delay_ms,
                             max_queue=4096) as batcher:
            if kind == "threads":
                res = run_threads(clients, args.requests, cell,
                                  lambda i: batcher.submit(pool[i % len(pool)]).result(), chk)
            else:
                res = run_async(clients, args.requests, cell, batcher, pool, chk)
            res["mean_batch"] = batcher.stats().mean_batch_size
        return res

    cell = args.seconds / args.rounds
    contenders: list[tuple[str, Callable[[int, Checker], dict[str, Any]]]] = [
        ("direct Classifier.predict", lambda c, chk: run_threads(
            c, args.requests, cell, lambda i: clf.predict(pool[i % len(pool)])[0], chk)),
        ("Batcher, batching on", lambda c, chk: run_batcher(c, FULL_BATCH, "threads", chk)),
        ("Batcher, batching off", lambda c, chk: run_batcher(c, 1, "threads", chk)),
        ("Batcher on, asyncio clients", lambda c, chk: run_batcher(c, FULL_BATCH, "asyncio", chk)),
    ]
    servers: dict[str, ServerProcess] = {}
    if not args.no_http:
        bodies = png_bodies(pool)
        for label, mb in (("HTTP serve, batching on", FULL_BATCH), ("HTTP serve, batching off", 1)):
            servers[label] = ServerProcess(args.model, mb, args.max_delay_ms)
            contenders.append((label, lambda c, chk, srv=servers[label]: run_http(
                srv.port, "bench", bodies, c, args.requests, cell, chk)))

    rows: list[tuple[str, int, dict[str, Any]]] = []
    lost = mismatched = 0

    def record(label: str, clients: int, parts: list[dict[str, Any]], bad: int) -> None:
        """Rounds merged: median throughput, latencies pooled, every error counted."""
        nonlocal lost, mismatched
        res = {"n": sum(p["n"] for p in parts), "sent": sum(p["sent"] for p in parts),
               "errors": [e for p in parts for e in p["errors"]],
               "rps": float(np.median([p["rps"] for p in parts])),
               "lat": [x for p in parts for x in p["lat"]], "bad": bad}
        if "mean_batch" in parts[0]:
            res["mean_batch"] = float(np.mean([p["mean_batch"] for p in parts]))
        lost += len(res["errors"])
        mismatched += bad
        rows.append((label, clients, res))
        p50, p99 = pct(res["lat"])
        mean = f", mean batch {res['mean_batch']:.1f}" if "mean_batch" in res else ""
        print(f"{label:<28} {clients:>3} clients: {res['rps']:8.0f} req/s  p50 {p50:6.2f} ms  "
              f"p99 {p99:6.2f} ms  ({res['n']} ok, {len(res['errors'])} lost, {bad} bad"
              f"{mean})", flush=True)
        if res["errors"]:
            print(f"    first error: {res['errors'][0]!r}")

    try:
        for clients in CLIENTS:
            # Rounds interleave the contenders, so a burst of load from elsewhere on
            # the machine hits all of them rather than one.
            parts: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in contenders}
            checkers = {label: Checker(expected) for label, _ in contenders}
            for _ in range(args.rounds):
                if clients == FULL_BATCH:
                    parts.setdefault("bare", []).append(run_bare(FULL_BATCH, cell))
                for label, fn in contenders:
                    parts[label].append(fn(clients, checkers[label]))
            if clients == FULL_BATCH:
                record(f"bare onnxruntime, batch {FULL_BATCH}", 0, parts.pop("bare"), 0)
            for label, _ in contenders:
                record(label, clients, parts[label], checkers[label].bad)
    finally:
        for label, server in servers.items():
            code = server.stop()
            if code != 0:
                print(f"{label}: server exited with {code} after SIGTERM")
                lost += 1

    # -- the targets ---------------------------------------------------------------------------
    by = {(label, c): r for label, c, r in rows}
    bare64 = by[(f"bare onnxruntime, batch {FULL_BATCH}", 0)]
    ceiling = bare64["rps"]
    bound = args.max_delay_ms + 2 * float(np.median(bare64["lat"])) * 1000.0
    direct16 = by[("direct Classifier.predict", 16)]
    print("\n| contender | clients | req/s | p50 ms | p99 ms | mean batch | lost | mismatched |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, c, r in rows:
        p50, p99 = pct(r["lat"])
        mb = f"{r['mean_batch']:.1f}" if "mean_batch" in r else ""
        print(f"| {label} | {c or '-'} | {r['rps']:.0f} | {p50:.2f} | {p99:.2f} | {mb} | "
              f"{len(r['errors'])} | {r['bad']} |")
    print()
    for label in ("Batcher, batching on", "Batcher on, asyncio clients"):
        on64, on16 = by[(label, 64)], by[(label, 16)]
        ratio64, gain16 = on64["rps"] / ceiling, on16["rps"] / direct16["rps"]
        print(f"[{label}] 64 clients: {on64['rps']:.0f} req/s = {ratio64:.0%} of bare onnxruntime "
              f"at batch {FULL_BATCH} ({ceiling:.0f} images/s); target >= 70%: "
              f"{'met' if ratio64 >= 0.7 else 'MISSED'}")
        print(f"[{label}] 16 clients: {on16['rps']:.0f} req/s = {gain16:.2f}x unbatched "
              f"Classifier.predict ({direct16['rps']:.0f} req/s); target >= 2x: "
              f"{'met' if gain16 >= 2 else 'MISSED'}")
        for c in CLIENTS:
            p99 = pct(by[(label, c)]["lat"])[1]
            print(f"[{label}] {c:>2} clients: p99 {p99:.2f} ms vs max_delay + "
                  f"2 x batch-{FULL_BATCH} compute = {bound:.2f} ms: "
                  f"{'met' if p99 < bound else 'MISSED'}")
    print(f"lost responses: {lost}, mismatched: {mismatched} "
          f"over {sum(r['sent'] for _, _, r in rows)} requests")
    print(f"load average after the run: {os.getloadavg()[0]:.2f}")
    return 0 if lost == 0 and mismatched == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
