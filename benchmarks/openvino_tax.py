"""What dlinfer adds on OpenVINO: Classifier.predict_proba on uint8 pixels against raw
OpenVINO on a batch already normalized, side by side (issue 27, "no dlinfer tax").

    .venv/bin/python benchmarks/openvino_tax.py MODEL.onnx [MODEL.onnx ...]
        [--batches 1,32] [--seconds 20] [--threads 2]

MODEL.onnx: a classifier exported by dlinfer (the zoo's mnist_cnn, small_convnet,
vgg16_transfer: ``benchmarks/bench_backends.py`` trains them into its work folder).

Contenders, each called once per round in turn (interleaved, so load on a shared
machine falls on all alike), median time per call:

- ``openvino infer``: ``request.infer({0: x})[0]``, OpenVINO's usual call (it copies
  ``x`` into the request's tensor);
- ``openvino shared``: the same with ``share_inputs=True, share_outputs=True``;
- ``openvino set_tensor``: ``x`` set as a shared ``ov.Tensor``, ``infer()``, the
  output copied out: the least Python a caller can put around the run;
- ``dlinfer run``: ``Model(backend="openvino").run(x)``, every check included;
- ``dlinfer preprocess``: the native pass alone, uint8 pixels to the normalized batch;
- ``dlinfer predict_proba``: ``Classifier.predict_proba(pixels)``: preprocessing,
  the run and the probabilities.

The raw contenders run the model dlinfer compiled for the batch's exact shape (f32,
latency hint, ``threads`` threads, unpinned; runtime/backends/openvino/runner.py), each
from its own infer request, so that only the Python around the run differs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def contenders(path: str, batch: int, threads: int) -> dict[str, callable]:
    import dlinfer
    import openvino as ov

    clf = dlinfer.Classifier(path, threads=threads, backend="openvino")
    pre = clf.preprocessing
    pixels = np.random.default_rng(0).integers(
        0, 256, (batch, *pre.size, pre.channels), dtype=np.uint8)
    x = clf.preprocess(pixels)
    for _ in range(3):  # the 2nd call compiles this exact shape (runner.py)
        clf.model.run(x)
    clf.model._runner.wait_for_compiles()
    # The raw calls run dlinfer's own compiled model (its own infer requests): only the
    # Python around the run differs, and no contender's weights are colder in the caches.
    compiled = clf.model._runner._static[(x.shape,)][0]
    usual, shared, lean = (compiled.create_infer_request() for _ in range(3))

    def set_tensor() -> np.ndarray:
        lean.set_input_tensor(ov.Tensor(x, shared_memory=True))
        lean.infer(share_outputs=True)
        return lean.get_output_tensor().data.copy()

    runs = {
        "openvino infer": lambda: usual.infer({0: x})[0],
        "openvino shared": lambda: shared.infer({0: x}, share_inputs=True,
                                                share_outputs=True)[0],
        "openvino set_tensor": set_tensor,
        "dlinfer run": lambda: clf.model.run(x),
        "dlinfer preprocess": lambda: clf.preprocess(pixels),
        "dlinfer predict_proba": lambda: clf.predict_proba(pixels),
    }
    np.testing.assert_allclose(runs["dlinfer run"](), runs["openvino infer"](), rtol=1e-5,
                               atol=1e-6)  # one answer (float32 both) before any timing
    for run in runs.values():
        run()
    return runs


def measure(runs: dict[str, callable], seconds: float) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    clock = time.perf_counter
    end = clock() + seconds
    while clock() < end or len(times["dlinfer run"]) < 5:
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--seconds", type=float, default=20.0, help="per model and batch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"median ms per call, interleaved; {args.threads} threads; ratio to 'openvino "
          f"shared'; {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    for path in args.models:
        for batch in (int(b) for b in args.batches.split(",")):
            medians = measure(contenders(path, batch, args.threads), args.seconds)
            base = medians["openvino shared"]
            cells = "  ".join(f"{name} {m * 1e3:.3f} ({m / base:.2f}x)"
                              for name, m in medians.items())
            print(f"{os.path.basename(path)} batch {batch}: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
