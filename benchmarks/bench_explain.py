"""Grad-CAM: dlinfer (the ONNX file alone) against tf.GradientTape on the same Keras model.

    .venv/bin/python benchmarks/bench_explain.py               # 4 zoo CNNs, ~15 min on 2 busy cores
    .venv/bin/python benchmarks/bench_explain.py --only mnist_cnn --rounds 1
    .venv/bin/python benchmarks/bench_explain.py --threads 1    # both libraries on one thread

For every zoo CNN (random weights: speed does not depend on them), exported by
``bench_zoo.prepare`` into ``--zoo``, at the zoo's own input sizes:

- **dlinfer**: ``Classifier.explain(batch, layer=LAST_CONV)``: a forward pass for the
  predicted class, then one onnxruntime run of the forward + backward graph
  (:func:`dlinfer.explain.value_and_gradient`), the weights, the map and the heatmap
  resized to the image;
- **Keras**: the Keras Grad-CAM recipe (keras.io "Grad-CAM class activation
  visualization"): a model returning the layer's output and the logits, one
  ``tf.GradientTape`` pass compiled with ``tf.function``, the predicted class, the
  gradient, the weights and the map (no resize);
- **Keras eager** (``--eager``): the same recipe without ``tf.function``, as the
  tutorial runs it.

dlinfer gets the uint8 pixels (it preprocesses them), Keras the same batch preprocessed.
Timing: the contenders take turns, each turn one untimed call (its worker threads wake)
and three timed calls back to back, for ``--rounds`` x ``--seconds`` per batch size (at
least two turns each); the figure is each contender's median call.  On a shared
machine whose load comes and goes this gives every contender the same load.
Threads: each library's default (all cores) unless ``--threads N`` gives both N
(onnxruntime intra-op; TensorFlow intra- and inter-op).  The table goes to
stdout and, as JSON, to ``results/explain.cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    """``n`` float images in the model's pixel range (seeded), and their model input."""
    spec = clf.preprocessing
    h, w = spec.size
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, h, w, spec.channels), dtype=np.uint8)
    return pixels


def _keras_gradcam(model: Any, layer_name: str, compiled: bool) -> Callable[[np.ndarray], Any]:
    """The keras.io recipe: grad model -> tape -> argmax logit -> pooled grads -> map."""
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

    def gradcam(images: Any) -> Any:
        with tf.GradientTape() as tape:
            conv, logits = grad_model(images, training=False)
            # The predicted class's logit; one sigmoid unit z: z for class 1, -z for 0.
            score = (tf.abs(logits[:, 0]) if logits.shape[1] == 1
                     else tf.reduce_max(logits, axis=1))
        grads = tape.gradient(score, conv)
        pooled = tf.reduce_mean(grads, axis=(1, 2))
        return tf.nn.relu(tf.einsum("nc,nhwc->nhw", pooled, conv))

    return tf.function(gradcam) if compiled else gradcam


# Each turn: one untimed call (the library's worker threads wake up), then this many
# timed calls back to back (its threads hot, as in a loop over batches).
_TIMED_PER_TURN = 3


def interleaved(calls: dict[str, Callable[[], Any]], seconds: float) -> dict[str, float]:
    """Median seconds per call of each contender, the contenders taking turns (a warm-up
    call, then :data:`_TIMED_PER_TURN` timed calls) for ``seconds`` in all and at least
    two turns each: on a shared machine whose load comes and goes, every contender meets
    the same load, and none runs into the other's spinning threads untimed."""
    times: dict[str, list[float]] = {n: [] for n in calls}
    end = time.perf_counter() + seconds
    turns = 0
    while time.perf_counter() < end or turns < 2:
        for n, call in calls.items():
            call()
            for _ in range(_TIMED_PER_TURN):
                start = time.perf_counter()
                call()
                times[n].append(time.perf_counter() - start)
        turns += 1
    return {n: float(np.median(t)) for n, t in times.items()}


def bench_model(name: str, onnx_path: str, keras_path: str, rounds: int,
                seconds: float, eager: bool = False, threads: int | None = None
                ) -> dict[str, Any]:
    import dlinfer
    import keras
    from explain_keras import last_conv2d

    clf = dlinfer.Classifier(onnx_path, threads=threads)
    model = keras.models.load_model(keras_path, compile=False)
    layer = last_conv2d(model)
    keras_fn = _keras_gradcam(model, layer, compiled=True)
    eager_fn = _keras_gradcam(model, layer, compiled=False)
    result: dict[str, Any] = {"layer": layer, "seconds": {}}
    for batch in BATCHES:
        pixels = _batch(clf, batch)
        x = clf.preprocess(pixels)
        # Same map on both sides, checked before timing (the parity test's bound).
        ours = np.stack([e.raw for e in clf.explain(pixels, layer=layer)])
        theirs = np.asarray(keras_fn(x))
        err = float(np.abs(ours - theirs).max() / max(theirs.max(), 1e-30))
        calls = {"dlinfer": lambda p=pixels, b=batch: clf.explain(p, layer=layer, batch_size=b),
                 "keras_tf_function": lambda x=x: keras_fn(x)}
        if eager:
            calls["keras_eager"] = lambda x=x: eager_fn(x)
        result["seconds"][batch] = interleaved(calls, rounds * seconds)
        result.setdefault("parity", {})[batch] = err
        s = result["seconds"][batch]
        print(f"  [{name}] batch {batch}: " + ", ".join(
            f"{n} {v * 1e3:.1f} ms" for n, v in s.items()) + f"; map difference {err:.1e} "
            "of the max", flush=True)
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | layer | batch | dlinfer ms | Keras tf.function ms | Keras eager ms "
             "| dlinfer speed-up vs tf.function | map difference / max |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        for batch, s in r["seconds"].items():
            eager = f"{s['keras_eager'] * 1e3:.1f}" if "keras_eager" in s else "-"
            lines.append(
                f"| {name} | `{r['layer']}` | {batch} | {s['dlinfer'] * 1e3:.1f} | "
                f"{s['keras_tf_function'] * 1e3:.1f} | {eager} | "
                f"{s['keras_tf_function'] / s['dlinfer']:.2f}x | {r['parity'][batch]:.1e} |")
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
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both (TensorFlow intra- and inter-op, onnxruntime "
                        "intra-op); default 0: each library's own default, all cores")
    parser.add_argument("--eager", action="store_true",
                        help="also time the tutorial's eager GradientTape (slow)")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "explain.cpu.json"))
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    if args.threads:  # before TensorFlow starts its thread pools
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    ready, skipped = prepare(args.zoo, only)
    results = {}
    for name in only:
        if name in ready:
            results[name] = bench_model(name, *ready[name], args.rounds, args.seconds,
                                        args.eager, args.threads or None)
    print(table(results))
    for name, why in skipped.items():
        print(f"not benchmarked: {name}: {why}")
    with open(args.json, "w") as f:
        json.dump({"cores": os.cpu_count(), "threads": args.threads or "default",
                   "rounds": args.rounds, "results": results},
                  f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
