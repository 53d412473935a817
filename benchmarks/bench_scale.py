"""Ray Data against predict_folder on the same cores, and what one actor costs.

    python benchmarks/bench_scale.py [artifacts/mnist_cnn.onnx] [--images 5000] [--repeats 3]

Writes ``--images`` JPEGs (MNIST digits scaled up to ``--size`` pixels, so that decoding
is real work) into a temporary folder, starts one local Ray cluster with as many CPUs as
the machine (``ray.init(num_cpus=N)``), then times, alternating, ``--repeats`` times:

- ``predict_folder``: ``Classifier.predict_folder(batch_size=64)`` on every core, the
  one-machine baseline;
- Ray Data over file paths (``from_items``, actors read the files) with 1 actor and
  with N actors (one CPU and one onnxruntime thread each), ``--batch-size`` rows per call;
- Ray Data over bytes (``read_binary_files``, read tasks ship the bytes through the
  object store) with N actors;
- Ray Data over paths with N actors at batch 64, predict_folder's batch: Ray's cost per
  call.

Each Ray job is timed whole (actors start, every row computed and materialized), and
again on 64 images: that small job is the fixed cost (actor start, model load,
scheduling), and (whole - fixed) / images the steady per-image cost.  Decoding and the
model alone are timed on one thread too, so the table says where the time goes.  Every
job's rows are checked against ``predict_folder``'s labels.  Medians of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def write_jpegs(folder: str, n: int, size: int) -> list[str]:
    from PIL import Image

    try:
        from training.data import load_mnist

        digits = load_mnist().x_train
    except Exception as exc:  # still a decode-and-classify workload
        print(f"(MNIST digits unavailable: {exc}; using random pixels)")
        digits = np.random.default_rng(0).integers(0, 256, (1000, 28, 28), dtype=np.uint8)
    paths = []
    for i in range(n):
        img = Image.fromarray(digits[i % len(digits)]).resize((size, size), Image.BILINEAR)
        path = os.path.join(folder, f"{i // 1000:02d}", f"img_{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        img.save(path, quality=90)
        paths.append(path)
    return paths


def time_predict_folder(clf: Any, folder: str) -> tuple[float, dict[str, str]]:
    started = time.perf_counter()
    labels = {p: pred.label for p, pred in clf.predict_folder(folder, 64, progress=False)}
    return time.perf_counter() - started, labels


def time_ray(ray: Any, model: str, paths: list[str], actors: int, read: str,
             batch_size: int) -> tuple[float, Any]:
    from dlinfer.serving.ray import IO_TASK_CPUS, predict_dataset, read_folder

    started = time.perf_counter()
    ds = read_folder(paths, batch_size, read)
    out = predict_dataset(ds, model, batch_size=batch_size, concurrency=actors,
                          threads=1, io_cpus=IO_TASK_CPUS).materialize()
    return time.perf_counter() - started, out


def check(out: Any, want: dict[str, str], read: str) -> None:
    rows = out.select_columns(["path", "label", "error"]).take_all()
    got = {("/" + r["path"].lstrip("/")) if read == "bytes" else r["path"]: r for r in rows}
    assert len(got) == len(rows), "duplicate rows"
    bad = [p for p, r in got.items() if r["error"] is not None or r["label"] != want[p]]
    assert not bad and set(got) <= set(want), f"{len(bad)} rows differ, e.g. {bad[:2]}"


def component_costs(clf: Any, paths: list[str], n: int = 512) -> dict[str, float]:
    """Milliseconds per image, one thread: decode+resize (native pass), and the model."""
    spec = clf.preprocessing
    sample = paths[:n]
    started = time.perf_counter()
    pixels = [spec.pixels([p], 1)[0] for p in sample]
    decode = time.perf_counter() - started
    started = time.perf_counter()
    batch = spec([px for px, _ in pixels], threads=1)
    prep = time.perf_counter() - started
    clf.run_batch(batch[:64])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(batch), 64):
        clf.run_batch(batch[i:i + 64])
    model = time.perf_counter() - started
    return {"decode_ms": decode / n * 1e3, "preprocess_ms": prep / n * 1e3,
            "model_ms": model / n * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="artifacts/mnist_cnn.onnx")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--size", type=int, default=112, help="JPEG side in pixels")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=512, help="Ray's rows per actor call")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args()

    import dlinfer
    import ray

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dlinfer-scale-") as folder:
        paths = sorted(write_jpegs(folder, args.images, args.size))
        clf = dlinfer.Classifier(args.model)
        costs = component_costs(dlinfer.Classifier(args.model, threads=1), paths)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        n = args.cpus
        b = args.batch_size
        jobs = [("predict_folder", None, None, 64),
                (f"ray paths, 1 actor, batch {b}", 1, "paths", b),
                (f"ray paths, {n} actors, batch {b}", n, "paths", b),
                (f"ray bytes, {n} actors, batch {b}", n, "bytes", b),
                (f"ray paths, {n} actors, batch 64", n, "paths", 64)]
        times: dict[str, list[float]] = {name: [] for name, *_ in jobs}
        fixed: dict[str, list[float]] = {name: [] for name, *_ in jobs[1:]}
        want: dict[str, str] = {}
        for rep in range(args.repeats):
            for name, actors, read, size in jobs:
                if actors is None:
                    seconds, want = time_predict_folder(clf, folder)
                    assert len(want) == args.images
                else:
                    seconds, out = time_ray(ray, args.model, paths, actors, read, size)
                    check(out, want, read)
                    del out
                    small = paths[:64]
                    fixed[name].append(time_ray(ray, args.model, small, actors, read, size)[0])
                times[name].append(seconds)
                print(f"  repeat {rep + 1}: {name:<34} {seconds:6.2f} s", file=sys.stderr)
        ray.shutdown()
    load_after = os.getloadavg()

    base = statistics.median(times["predict_folder"])
    rows = []
    for name, actors, *_ in jobs:
        t = statistics.median(times[name])
        row = {"job": name, "seconds": t, "images_per_s": args.images / t,
               "vs_predict_folder": base / t}
        if actors is not None:
            f = statistics.median(fixed[name])
            steady = max(t - f, 1e-9)
            row.update(fixed_s=f, steady_images_per_s=args.images / steady,
                       per_actor_ms_per_image=steady / args.images * actors * 1e3)
        rows.append(row)
    result = {"images": args.images, "size": args.size, "cpus": args.cpus,
              "repeats": args.repeats, "model": args.model, "one_thread_costs": costs,
              "load_before": load_before, "load_after": load_after, "rows": rows}
    print("| job | images/s | vs predict_folder | fixed cost (s) | steady images/s | "
          "actor ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        extra = (f"{r['fixed_s']:.2f} | {r['steady_images_per_s']:.0f} | "
                 f"{r['per_actor_ms_per_image']:.3f}" if "fixed_s" in r else "- | - | -")
        print(f"| {r['job']} | {r['images_per_s']:.0f} | {r['vs_predict_folder']:.2f}x | "
              f"{extra} |")
    print(f"one thread, ms/image: decode {costs['decode_ms']:.3f}, native preprocess "
          f"{costs['preprocess_ms']:.3f}, model {costs['model_ms']:.3f}")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
