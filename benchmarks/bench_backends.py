"""dlinfer's deployed configuration against the CPU runtimes a user would pick instead.

    .venv/bin/python benchmarks/bench_backends.py                  # everything, ~60 min on 2 cores
    .venv/bin/python benchmarks/bench_backends.py --quick --only mnist_cnn

One run, all contenders on the same input bytes, 2 threads each, interleaved rounds with
medians (``bench_optimize``'s timing), accuracy on the real held-out sets:

- ``onnxruntime``: plain ``onnxruntime.InferenceSession`` on the float32 file, the baseline
  every figure is a ratio to;
- ``OpenVINO``: the same file compiled by OpenVINO's CPU plugin with its defaults (bfloat16
  on CPUs with AMX), reshaped to each batch size as a user tuning it would;
- ``OpenVINO NNCF int8``: ``nncf.quantize`` of the same file on the same calibration images;
- ``LiteRT int8``: full-integer int8 (``TFLITE_BUILTINS_INT8``, float input and output
  quantized inside the graph) converted by ``TFLiteConverter`` from the Keras model with the
  calibration images as representative dataset, run by ``ai_edge_litert`` (XNNPACK);
- ``tf.function``: the Keras model (``dlinfer.tools.bench``'s baseline);
- ``dlinfer``: the deployed configuration: ``dlinfer optimize`` (int8 by its QDQ gated on
  onnxruntime; where OpenVINO is installed, gated on it: the QDQ with ``--bf16``, NNCF's
  int8 without and with ``--bf16``, and bf16; each gated at 0.5 points on the held-out set),
  each gated file opened with ``Model(path, backend="auto")``; the deployed one at each
  batch size is the file that ran fastest at that size (auto picks for the batch sizes
  the user runs).  Where the time goes: the file auto's rule picks across sizes (lowest
  geometric mean of per-item time at batch 1 and 32) run raw by its backend, against
  dlinfer's ``Model`` on it.

Models: the trained CNNs of ``bench_optimize`` (its recipes, files and held-out splits,
trained into ``--trained`` when missing), and MobileNetV2 and ResNet50 at 224 with random
weights (``weights=None``: no held-out set exists for them, so no accuracy; real photos from
scikit-learn and scikit-image, cropped to 224, calibrate and are timed).

The table goes between the ``<!-- backends -->`` markers of ``benchmarks/README.md``, the
figures to ``results/backends.cpu.json``.  The machine is shared: ratios within one run hold,
absolute times do not.
"""

from __future__ import annotations

import argparse
import json
import math
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

import bench_optimize  # noqa: E402  (the trained CNNs' recipes, files and timing)
from backends_table import BATCHES, load_rows, table, write_readme  # noqa: E402

THREADS = 2
MAX_DROP = 0.5  # the accuracy gate, in points, of every dlinfer candidate
PHOTO_MODELS = ("mobilenet_v2_224", "resnet50_224")

Runner = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------- the contenders

def onnxruntime_runner(path: str, disabled: list[str] | None = None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled or None)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_runner(model: Any, precision: str | None = None) -> Runner:
    """OpenVINO's CPU plugin with its defaults and 2 threads, compiled per batch shape;
    unpinned, as dlinfer compiles it: several pinned models in one process (this script
    holds up to four) or a loaded machine ran up to 6x slower (runtime/backends/openvino)."""
    import openvino as ov

    core = ov.Core()
    requests: dict[tuple[int, ...], Any] = {}

    def run(x: np.ndarray) -> np.ndarray:
        request = requests.get(x.shape)
        if request is None:
            shaped = model.clone()
            shaped.reshape(list(x.shape))
            config = {"INFERENCE_NUM_THREADS": THREADS, "ENABLE_CPU_PINNING": False}
            if precision:  # dlinfer's file as dlinfer runs it (where the time goes)
                config["INFERENCE_PRECISION_HINT"] = precision
            compiled = core.compile_model(shaped, "CPU", config)
            request = requests[x.shape] = compiled.create_infer_request()
        return request.infer({0: x})[0]

    return run


def nncf_int8(onnx_path: str, calibration: np.ndarray) -> Any:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(onnx_path)
    dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    return nncf.quantize(model, dataset, subset_size=len(calibration))


def litert_int8(keras_file: str, calibration: np.ndarray) -> bytes:
    from dlinfer.export._tf import import_tensorflow

    keras, tf = import_tensorflow()
    model = keras.models.load_model(keras_file, compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i:i + 1]]
                                                for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def litert_runner(flatbuffer: bytes) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreters: dict[tuple[int, ...], Any] = {}

    def run(x: np.ndarray) -> np.ndarray:
        interpreter = interpreters.get(x.shape)
        if interpreter is None:
            interpreter = Interpreter(model_content=flatbuffer, num_threads=THREADS)
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                            list(x.shape))
            interpreter.allocate_tensors()
            interpreters[x.shape] = interpreter
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


def keras_runner(keras_file: str, sample: np.ndarray) -> Runner:
    from dlinfer.tools.keras_baseline import KerasBaseline

    fn = KerasBaseline(keras_file, sample).fn
    return lambda x: fn(x).numpy()


def dlinfer_runner(path: str, backend: str) -> tuple[Runner, Any]:
    import dlinfer

    model = dlinfer.Model(path, threads=THREADS, backend=backend)
    return (lambda x: model.run(x)), model


def same_file_runner(model: Any) -> Runner:
    """The backend dlinfer chose, run raw on dlinfer's file: OpenVINO compiled static per
    batch size in the file's precision, or an onnxruntime session with the optimizers the
    file asks to run without (dlinfer.session metadata)."""
    if getattr(model, "backend", "onnxruntime") == "openvino":
        import openvino as ov
        from dlinfer.runtime.backends.openvino.loader import read_onnx

        return openvino_runner(read_onnx(ov, ov.Core(), model.path), model.precision)
    from dlinfer.runtime.session import disabled_optimizers

    return onnxruntime_runner(model.path, disabled_optimizers(model.metadata))


def dlinfer_backend() -> str:
    """What the deployed configuration opens files with: auto where this dlinfer has it."""
    try:
        from dlinfer.runtime.backends import available_backends, parse_backend

        parse_backend("auto")
        return "auto" if "openvino" in available_backends() else "onnxruntime"
    except ImportError:
        return "onnxruntime"


def dlinfer_candidates(onnx_path: str, calibration: np.ndarray, heldout: Any,
                       workdir: str, fresh: bool = False) -> dict[str, str]:
    """{candidate: gated file}: int8 by dlinfer's QDQ gated on onnxruntime (whose kernels
    its rewrites are for), and where OpenVINO is installed, gated on it: dlinfer's QDQ with
    its float parts in bf16, NNCF's int8 without and with them, and bf16.  Those that pass
    the gate; ``backend="auto"`` runs each where it passed."""
    import dlinfer
    from dlinfer.optimize import optimize

    with_openvino = dlinfer_backend() == "auto"
    stem = os.path.join(workdir, os.path.basename(onnx_path)[:-len(".onnx")])
    files = {}
    candidates = {"int8": ("int8", {}, "onnxruntime"),
                  "int8_bf16": ("int8", {"bf16": True}, "openvino"),
                  "int8_nncf": ("int8", {"method": "nncf"}, "openvino"),
                  "int8_nncf_bf16": ("int8", {"method": "nncf", "bf16": True}, "openvino"),
                  "bf16": ("bf16", {}, "openvino")}
    for name, (mode, options, backend) in candidates.items():
        if backend == "openvino" and not with_openvino:
            continue
        out = f"{stem}.deployed.{name}.onnx"
        if (not fresh and os.path.exists(out)
                and os.path.getmtime(out) > os.path.getmtime(onnx_path)
                and _gated_on(out) == backend):
            # gated by an earlier run on this float32 file: its spec holds that report
            print(f"    dlinfer {name}: {out} (gated earlier, --fresh to redo)", flush=True)
            files[name] = out
            continue
        try:
            report = optimize(onnx_path, out, mode, calibrate=calibration, eval=heldout,
                              max_drop=MAX_DROP, backend=backend, **options)
        except dlinfer.DlinferError as refusal:  # refused by the gate, or not this dlinfer's
            print(f"    dlinfer {name}: refused: {refusal}", flush=True)
            continue
        print(f"    dlinfer {name} gated on {backend}: drop {report.drop_points:.2f} points, "
              f"{report.seconds:.0f} s", flush=True)
        files[name] = out
    return files


def _gated_on(path: str) -> str | None:
    import dlinfer

    stored = dlinfer.Model(path, backend="onnxruntime").spec.extra.get("optimize", {})
    return stored.get("gated_on", {}).get("backend")


# ---------------------------------------------------------------- the models

def trained(name: str, folder: str) -> dict[str, Any]:
    stem = os.path.join(folder, name)
    needed = [f"{stem}.{ext}" for ext in ("onnx", "keras", "heldout.npz", "calibration.npy")]
    if not all(os.path.exists(p) for p in needed):
        bench_optimize._train(name, folder)
    with np.load(f"{stem}.heldout.npz") as held:
        x = held[next(k for k in held.files if k != "labels")]
        labels = held["labels"]
    return {"onnx": f"{stem}.onnx", "keras": f"{stem}.keras", "x": x, "labels": labels,
            "calibration": np.load(f"{stem}.calibration.npy"), "heldout": f"{stem}.heldout.npz"}


def photos(count: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """``count`` uint8 crops (N, size, size, 3) of the real photos bundled with scikit-learn
    and scikit-image, at random scales, positions and flips (seeded)."""
    from PIL import Image
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    sources = list(load_sample_images().images)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        image = getattr(skdata, name)()
        if image.ndim == 3 and image.shape[2] == 3:
            sources.append(image)
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        image = sources[i % len(sources)]
        side = int(min(image.shape[:2]) * rng.uniform(0.5, 1.0))
        top = rng.integers(0, image.shape[0] - side + 1)
        left = rng.integers(0, image.shape[1] - side + 1)
        crop = Image.fromarray(image[top:top + side, left:left + side]).resize((size, size))
        out[i] = np.asarray(crop)[:, ::-1] if rng.random() < 0.5 else np.asarray(crop)
    return out


def photo_model(name: str, folder: str) -> dict[str, Any]:
    """MobileNetV2 or ResNet50 at 224, random weights, exported to ONNX by dlinfer."""
    stem = os.path.join(folder, name)
    keras_name = {"mobilenet_v2_224": "mobilenet_v2", "resnet50_224": "resnet50"}[name]
    from dlinfer.export._tf import import_tensorflow

    keras, _ = import_tensorflow()
    module = getattr(keras.applications, keras_name)
    if not os.path.exists(f"{stem}.onnx"):
        from dlinfer.export import to_onnx

        build = {"mobilenet_v2": keras.applications.MobileNetV2,
                 "resnet50": keras.applications.ResNet50}[keras_name]
        keras.utils.set_random_seed(0)
        model = build(weights=None, input_shape=(224, 224, 3))
        model.save(f"{stem}.keras")
        to_onnx(model, f"{stem}.onnx", name=name, input_name="images", input_kind="image",
                labels=[f"class_{i}" for i in range(1000)])
    images = photos(96)
    x = np.asarray(module.preprocess_input(images.astype(np.float32)), np.float32)
    return {"onnx": f"{stem}.onnx", "keras": f"{stem}.keras", "x": x[32:], "labels": None,
            "calibration": x[:32], "heldout": x[32:]}


# ---------------------------------------------------------------- timing and accuracy

def time_runners(runners: dict[str, Runner], x_all: np.ndarray, rounds: int, seconds: float
                 ) -> dict[str, dict[int, float]]:
    """{contender: {batch: median seconds per call}}: bench_optimize's interleaved,
    rotating rounds over the same input bytes for every contender."""
    return bench_optimize.time_contenders(
        {name: (lambda x, run=run: (lambda: run(x))) for name, run in runners.items()},
        lambda batch: np.ascontiguousarray(np.resize(x_all, (batch, *x_all.shape[1:]))),
        rounds, seconds, batches=BATCHES)


def accuracy(run: Runner, x: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    from dlinfer.optimize.gate import predicted_classes

    right = 0
    for start in range(0, len(x), 32):
        scores = np.asarray(run(np.ascontiguousarray(x[start:start + 32])), np.float32)
        right += int((predicted_classes(scores, None) == labels[start:start + 32]).sum())
    return right / len(x)


def _score(times: dict[int, float]) -> float:
    """auto's rule: the geometric mean of per-item time at each batch size."""
    return math.prod(t / b for b, t in times.items()) ** (1 / len(times))


def bench_model(name: str, m: dict[str, Any], workdir: str, rounds: int, seconds: float,
                eval_limit: int | None, calibration_samples: int, fresh: bool = False
                ) -> dict[str, Any]:
    print(f"[{name}] contenders", flush=True)
    import openvino as ov

    # Every int8 route calibrates on the same first images of the training split.
    calibration = m["calibration"][:calibration_samples].astype(np.float32)
    runners: dict[str, Runner] = {
        "onnxruntime": onnxruntime_runner(m["onnx"]),
        "openvino": openvino_runner(ov.Core().read_model(m["onnx"])),
        "openvino_nncf_int8": openvino_runner(nncf_int8(m["onnx"], calibration)),
        "litert_int8": litert_runner(litert_int8(m["keras"], calibration)),
        "tf.function": keras_runner(m["keras"], m["x"][:1]),
    }
    backend = dlinfer_backend()
    opened, models = {}, {}
    for mode, path in dlinfer_candidates(m["onnx"], calibration, m["heldout"], workdir,
                                         fresh).items():
        runners[f"dlinfer_{mode}"], models[mode] = dlinfer_runner(path, backend)
        opened[mode] = getattr(models[mode], "backend", "onnxruntime")
        print(f"    dlinfer {mode}: Model(backend={backend!r}) runs on {opened[mode]}", flush=True)
    x, labels = m["x"], m["labels"]
    if eval_limit:
        x, labels = x[:eval_limit], None if labels is None else labels[:eval_limit]
    accuracies = {n: accuracy(r, x, labels) for n, r in runners.items()}
    print(f"[{name}] timing", flush=True)
    times = time_runners(runners, m["x"], rounds, seconds)
    candidates = [n for n in runners if n.startswith("dlinfer_")]
    deployed = min(candidates, key=lambda n: _score(times[n])) if candidates else None
    tax = None
    if deployed:
        # Where the time goes: the deployed file run raw by the same backend, interleaved
        # with dlinfer's Model on it (the rest of a gap to the best peer is the graph).
        print(f"[{name}] {deployed} against its backend run raw on the same file", flush=True)
        pair = {deployed: runners[deployed],
                "same_file_raw": same_file_runner(models[deployed.removeprefix("dlinfer_")])}
        tax = time_runners(pair, m["x"], rounds, seconds)
    return {"name": name, "times": times, "accuracy": accuracies, "deployed": deployed,
            "same_file": tax, "dlinfer_backend": backend, "opened_on": opened,
            "samples": None if labels is None else len(labels)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trained", default=os.path.join(ROOT, "artifacts", "optimize"))
    parser.add_argument("--work", default=os.path.join(ROOT, "artifacts", "backends"))
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.5, help="per contender per round")
    parser.add_argument("--calibration", type=int, default=256,
                        help="calibration images for every int8 route")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 0.2 s, 64 calibration images, accuracy on 256 "
                             "held-out samples")
    parser.add_argument("--fresh", action="store_true",
                        help="gate dlinfer's files again even where an earlier run left them")
    parser.add_argument("--readme", default=os.path.join(HERE, "README.md"))
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--table-from", metavar="JSON",
                        help="print the table of an earlier run's results and stop")
    args = parser.parse_args()
    if args.table_from:
        print(table(load_rows(args.table_from)))
        return 0
    rounds, seconds = (1, 0.2) if args.quick else (args.rounds, args.seconds)
    if rounds < 1 or not seconds > 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")
    # The heaviest last, so that a run cut short has the most rows.
    order = ("mnist_cnn", "fashion_cnn", "small_convnet", "mobilenet_v2_224",
             "vgg16_transfer", "resnet50_224")
    names = [n for n in order if not args.only or n in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - set(names)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: "
                     f"{', '.join(order)}")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(THREADS))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    for folder in (args.trained, args.work):
        os.makedirs(folder, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    os.makedirs(args.out, exist_ok=True)
    for name in names:
        try:
            m = (photo_model(name, args.work) if name in PHOTO_MODELS
                 else trained(name, args.trained))
            rows.append(bench_model(name, m, args.work, rounds, seconds,
                                    256 if args.quick else None,
                                    64 if args.quick else args.calibration, args.fresh))
        except Exception as exc:  # noqa: BLE001 - one model must not stop the table
            print(f"[{name}] not benchmarked: {type(exc).__name__}: {exc}", flush=True)
            continue
        # What is measured so far survives a run cut short.
        with open(os.path.join(args.out, "backends.cpu.json"), "w") as f:
            json.dump(rows, f, indent=1, default=str)
        print(table(rows), flush=True)
    from dlinfer.tools.doctor import cpu_info

    header = (f"Measured {time.strftime('%Y-%m-%d')} in one run of `benchmarks/bench_backends.py"
              f"{' --quick' if args.quick else ''}` ({(time.time() - started) / 60:.0f} min) on "
              f"{cpu_info().get('model')}, {THREADS} threads each. Items/s at batch 32 as a "
              "ratio to plain onnxruntime float32 (batch-1 latency ratio in brackets), "
              "then held-out accuracy.")
    body = header + "\n\n" + table(rows)
    print(body)
    if not args.no_readme:
        write_readme(args.readme, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
