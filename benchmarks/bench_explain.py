"""Grad-CAM: dlinfer (the ONNX file alone) against tf.GradientTape on the same Keras model.

    .venv/bin/python benchmarks/bench_explain.py --turns 5     # 4 zoo CNNs, ~8 min on 2 cores
    .venv/bin/python benchmarks/bench_explain.py --only mnist_cnn --rounds 1
    .venv/bin/python benchmarks/bench_explain.py --threads 1    # both libraries on one thread

For every zoo CNN (random weights: speed does not depend on them), exported by
``bench_zoo.prepare`` into ``--zoo``, at the zoo's own input sizes, at the model's last
Conv2D.

Like with like: both sides start from the same batch of uint8 images (N, H, W, C) at the
model's input size, as decoded photos or a camera give them, and end with what a
Grad-CAM user looks at, as NumPy arrays: per image the predicted class and its
probability, the raw map at the layer's resolution (ReLU(sum_k alpha_k A^k)) and the
heatmap resized to the image (bilinear, half-pixel centres) and scaled to [0, 1].  Each
side does it the way its users would:

- **dlinfer**, on each installed backend (``--backends``):
  ``Classifier(path, backend=...).explain(pixels, layer=LAST_CONV)``, the one call that
  does all of it: the file's own preprocessing, one run of the forward + backward graph
  (:func:`dlinfer.explain.value_and_gradient`, the predicted class found inside it), the
  channel weights, the map, the heatmap.  On onnxruntime in float32; on OpenVINO with
  explain's default ``precision="bf16x3"`` (each convolution and dense product as three
  bfloat16 products on AMX, float32 where the CPU has no AMX);
- **Keras**: the keras.io recipe ("Grad-CAM class activation visualization": a model
  returning the layer's output and the logits, one ``tf.GradientTape``, the pooled
  gradients, the map, divided by its maximum), compiled with ``tf.function``, with the
  model's preprocessing in front (the scale and mean it was trained with, the numbers in
  dlinfer's spec) and ``tf.image.resize`` for the heatmap in the same function (the
  recipe resizes one image at a time with PIL for display; a batch in the graph is the
  faster way a Keras user has);
- **Keras eager** (``--eager``): the same without ``tf.function``, as the tutorial runs it.

(Until December 2026 the Keras side started from the preprocessed float batch and
stopped at the raw maps, while dlinfer's call preprocessed and made heatmaps too: about
8 ms of 55 at small_convnet's batch of 32 that only one side did.)

Both maps and both heatmaps are compared before timing (the parity test's bound).
Each dlinfer side is called three times first, and OpenVINO's compiles of the batch's
shape are waited for: its runner compiles a shape it sees twice in the background.
Timing: the contenders take turns, each turn one untimed call (its worker threads wake)
and three timed calls back to back, the order rotating every turn, for ``--rounds`` x
``--seconds`` per batch size (at least ``--turns`` turns, default two).  On a machine
shared with other work whose load comes and goes, one turn's calls meet about the same
load: the speed-up is the median over turns of Keras's median call / dlinfer's, the
milliseconds each contender's median call over all turns.  Threads: ``--threads``
(default: every core) for both, onnxruntime intra-op and TensorFlow intra- and
inter-op.  The table goes to stdout and, as JSON, to ``results/explain.cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

CNNS = ("mnist_cnn", "fashion_cnn", "small_convnet", "vgg16_transfer")
BATCHES = (1, 32)


def _batch(clf: Any, n: int) -> np.ndarray:
    """``n`` seeded uint8 images at the model's input size."""
    spec = clf.preprocessing
    h, w = spec.size
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w, spec.channels), dtype=np.uint8)


def _keras_gradcam(model: Any, layer_name: str, spec: Any, compiled: bool
                   ) -> Callable[[np.ndarray], list[np.ndarray]]:
    """uint8 images -> [raw maps, heatmaps, classes, probabilities]: the keras.io recipe
    (grad model -> tape -> predicted logit -> pooled grads -> map), with the model's
    preprocessing before it and the heatmap resized to the image after it."""
    import keras
    import tensorflow as tf
    from explain_keras import find_layer

    layer = find_layer(model, layer_name)
    head = model.layers[-1]
    # The logits: a copy of the head without its activation, on the same weights.
    logits_head = keras.layers.Dense(head.units, activation=None)
    logits_head.build(head.input.shape)
    logits_head.set_weights(head.get_weights())
    inner = next((top for top in model.layers if hasattr(top, "layers") and layer in top.layers),
                 None)
    base = (keras.Model(inner.inputs, [inner.get_layer(layer_name).output, inner.output])
            if inner is not None else None)
    scale = np.float32(spec.scale)
    mean, std = np.float32(spec.mean), np.float32(spec.std)

    def grad_model(images: Any, training: bool = False) -> tuple[Any, Any]:
        """The zoo CNNs are Sequential: the layers in turn, the layer's output kept."""
        y, conv = images, None
        for top in model.layers[:-1]:
            if top is inner:
                conv, y = base(y, training=training)
            else:
                y = top(y, training=training)
                if top is layer:
                    conv = y
        return conv, logits_head(y)

    def gradcam(pixels: Any) -> tuple[Any, ...]:
        images = (tf.cast(pixels, tf.float32) * scale - mean) / std
        with tf.GradientTape() as tape:
            conv, logits = grad_model(images, training=False)
            if logits.shape[1] == 1:  # one sigmoid unit z: class 1 scores z, class 0 -z
                z = logits[:, 0]
                score, classes, proba = tf.abs(z), tf.cast(z > 0, tf.int64), tf.sigmoid(
                    tf.abs(z))
            else:
                score, classes = tf.reduce_max(logits, axis=1), tf.argmax(logits, axis=1)
                proba = tf.reduce_max(tf.nn.softmax(logits), axis=1)
        grads = tape.gradient(score, conv)
        pooled = tf.reduce_mean(grads, axis=(1, 2))
        raw = tf.nn.relu(tf.einsum("nc,nhwc->nhw", pooled, conv))
        heat = tf.image.resize(raw[..., None], tf.shape(pixels)[1:3])[..., 0]
        heat = tf.math.divide_no_nan(heat, tf.reduce_max(heat, axis=(1, 2), keepdims=True))
        return raw, heat, classes, proba

    fn = tf.function(gradcam) if compiled else gradcam
    return lambda pixels: [t.numpy() for t in fn(pixels)]


# Each turn: one untimed call (the library's worker threads wake up), then this many
# timed calls back to back (its threads hot, as in a loop over batches).
_TIMED_PER_TURN = 3


def interleaved(calls: dict[str, Callable[[], Any]], seconds: float, min_turns: int = 2
                ) -> tuple[dict[str, float], list[dict[str, float]], dict[str, float]]:
    """Each contender's median seconds per call, per turn each one's median call, and
    each one's median process CPU seconds per call (every thread of the process: on a
    loaded machine the work done, where the wall time also counts the waits).

    The contenders take turns (a warm-up call, then :data:`_TIMED_PER_TURN` timed
    calls), each turn starting one place further on, for ``seconds`` in all and at least
    ``min_turns`` turns: on a shared machine whose load comes and goes, the calls of one turn meet
    about the same load, and none runs into the other's spinning threads untimed.
    """
    times: dict[str, list[float]] = {n: [] for n in calls}
    cpu: dict[str, list[float]] = {n: [] for n in calls}
    turns: list[dict[str, float]] = []
    names = list(calls)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(turns) < min_turns:
        first = len(turns) % len(names)
        turn: dict[str, float] = {}
        for n in names[first:] + names[:first]:
            calls[n]()
            took = []
            for _ in range(_TIMED_PER_TURN):
                start, start_cpu = time.perf_counter(), time.process_time()
                calls[n]()
                took.append(time.perf_counter() - start)
                cpu[n].append(time.process_time() - start_cpu)
            times[n].extend(took)
            turn[n] = float(np.median(took))
        turns.append(turn)
    return ({n: float(np.median(t)) for n, t in times.items()}, turns,
            {n: float(np.median(t)) for n, t in cpu.items()})


def _backends() -> list[str]:
    from dlinfer.runtime.backends import available_backends

    return available_backends()  # onnxruntime, and openvino where the extra is installed


def _compiled() -> None:
    """Wait for OpenVINO's background compiles of the shapes just seen (its runner
    compiles a shape it sees twice for that shape alone, in a thread of that name)."""
    while any(t.name == "dlinfer-openvino-compile" for t in threading.enumerate()):
        time.sleep(0.05)


def bench_model(name: str, onnx_path: str, keras_path: str, rounds: int,
                seconds: float, eager: bool = False, threads: int | None = None,
                min_turns: int = 2, backends: list[str] | None = None) -> dict[str, Any]:
    import dlinfer
    import keras
    from explain_keras import last_conv2d

    clfs = {f"dlinfer {b}": dlinfer.Classifier(onnx_path, threads=threads, backend=b)
            for b in (backends or _backends())}
    model = keras.models.load_model(keras_path, compile=False)
    layer = last_conv2d(model)
    spec = next(iter(clfs.values())).preprocessing
    keras_fn = _keras_gradcam(model, layer, spec, compiled=True)
    eager_fn = _keras_gradcam(model, layer, spec, compiled=False)
    result: dict[str, Any] = {"layer": layer, "seconds": {}, "speedup": {}, "turns": {},
                              "parity": {}, "heatmap_parity": {}}
    for batch in BATCHES:
        pixels = _batch(next(iter(clfs.values())), batch)
        # The same end products on both sides, checked before timing: the classes, the
        # maps (the parity test's bound) and the heatmaps.
        raw, heat, classes, _ = keras_fn(pixels)
        calls: dict[str, Callable[[], Any]] = {}
        for who, clf in clfs.items():
            for _ in range(3):  # the graph built, and on OpenVINO this shape compiled
                got = clf.explain(pixels, layer=layer)
            _compiled()
            if [e.target for e in got] != classes.tolist():
                raise SystemExit(f"{name}: {who} and Keras chose different classes")
            err = float(np.abs(np.stack([e.raw for e in got]) - raw).max()
                        / max(raw.max(), 1e-30))
            heat_err = float(np.abs(np.stack([e.heatmap for e in got]) - heat).max())
            result["parity"].setdefault(batch, {})[who] = err
            result["heatmap_parity"].setdefault(batch, {})[who] = heat_err
            calls[who] = lambda p=pixels, c=clf: c.explain(p, layer=layer)
        calls["keras_tf_function"] = lambda p=pixels: keras_fn(p)
        if eager:
            calls["keras_eager"] = lambda p=pixels: eager_fn(p)
        medians, turns, cpu = interleaved(calls, rounds * seconds, min_turns)
        result["seconds"][batch] = medians
        result["turns"][batch] = len(turns)
        result.setdefault("cpu_seconds", {})[batch] = cpu
        for who in clfs:
            ratios = [t["keras_tf_function"] / t[who] for t in turns]
            result["speedup"].setdefault(batch, {})[who] = float(np.median(ratios))
            result.setdefault("turn_speedups", {}).setdefault(batch, {})[who] = [
                round(r, 3) for r in ratios]
        print(f"  [{name}] batch {batch}: " + ", ".join(
            f"{n} {v * 1e3:.1f} ms" for n, v in medians.items()) + "; speed-up "
            + ", ".join(f"{who} {x:.2f}x" for who, x in result["speedup"][batch].items())
            + f" (median of {len(turns)} turns); CPU "
            + ", ".join(f"{n} {v * 1e3:.1f} ms" for n, v in cpu.items()) + "; map difference "
            + ", ".join(f"{who} {e:.1e}" for who, e in result["parity"][batch].items())
            + " of the max", flush=True)
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | layer | batch | dlinfer on | dlinfer ms | Keras tf.function ms "
             "| Keras eager ms | dlinfer speed-up vs tf.function | CPU ms dlinfer / Keras "
             "| map difference / max | heatmap difference |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        for batch, s in r["seconds"].items():
            eager = f"{s['keras_eager'] * 1e3:.1f}" if "keras_eager" in s else "-"
            cpu = r["cpu_seconds"][batch]
            for who, speedup in r["speedup"][batch].items():
                lines.append(
                    f"| {name} | `{r['layer']}` | {batch} | {who.split()[-1]} | "
                    f"{s[who] * 1e3:.1f} | {s['keras_tf_function'] * 1e3:.1f} | {eager} | "
                    f"{speedup:.2f}x | {cpu[who] * 1e3:.1f} / "
                    f"{cpu['keras_tf_function'] * 1e3:.1f} | {r['parity'][batch][who]:.1e} | "
                    f"{r['heatmap_parity'][batch][who]:.1e} |")
    return "\n".join(lines)


def main() -> int:
    from bench_zoo import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default=os.path.join(ROOT, "artifacts", "bench_zoo"),
                        help="where the zoo models are exported (reused when present)")
    parser.add_argument("--only", default=",".join(CNNS), help="comma-separated zoo CNNs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="timed seconds per contender per round (at least 3 calls)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for both (TensorFlow intra- and inter-op, onnxruntime "
                        "intra-op); default: every core")
    parser.add_argument("--turns", type=int, default=2,
                        help="at least this many turns per batch size (VGG16's batch of 32 "
                        "takes 40 s a turn on 2 cores: more than --rounds x --seconds)")
    parser.add_argument("--backends", default=",".join(_backends()),
                        help="dlinfer's backends to time (default: every one installed)")
    parser.add_argument("--eager", action="store_true",
                        help="also time the tutorial's eager GradientTape (slow)")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "explain.cpu.json"))
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    import tensorflow as tf  # its thread pools set before it starts them

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    ready, skipped = prepare(args.zoo, only)
    results = {}
    for name in only:
        if name in ready:
            results[name] = bench_model(name, *ready[name], args.rounds, args.seconds,
                                        args.eager, args.threads, args.turns,
                                        [b for b in args.backends.split(",") if b])
    print(table(results))
    for name, why in skipped.items():
        print(f"not benchmarked: {name}: {why}")
    with open(args.json, "w") as f:
        json.dump({"cores": os.cpu_count(), "threads": args.threads,
                   "rounds": args.rounds, "results": results},
                  f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
