"""Run ``dlinfer bench`` over every model in ``training.zoo.ZOO``; write tables and plots.

    .venv/bin/python benchmarks/bench_zoo.py                      # CPU, against Keras
    .venv/bin/python benchmarks/bench_zoo.py --device cpu,cuda --io-binding   # GPU machine

Each zoo model is built with random weights (a fixed seed; latency does not depend on
the weights), saved as ``.keras`` and exported with ``dlinfer.export.to_onnx`` into
``--models`` (default ``artifacts/bench/``).  The workshop MLP is added when the zoo
does not have a ``mnist_mlp`` yet.  Then, per model, a separate process runs

    dlinfer bench MODEL.onnx --device D --batch-sizes 1,8,32,128 --compare-keras MODEL.keras
                  --json results/NAME.TAG.json --csv results/NAME.TAG.csv
                  --plot results/NAME.TAG.png

(TAG is ``cpu``, or ``cuda`` when CUDA is among the devices), and this script collects
the JSON files into the tables between the ``<!-- zoo:TAG -->`` markers in
``benchmarks/README.md`` and a summary plot ``results/zoo.TAG.png``.

On a machine without TensorFlow (the offline GPU host of ``benchmarks/gpu_check.sh``),
``--no-keras`` benchmarks the ``.onnx`` files already in ``--models`` and imports no
TensorFlow; ``--export-only`` is the half that runs where TensorFlow is:

    .venv/bin/python benchmarks/bench_zoo.py --export-only --models .gpu/models
    python3 benchmarks/bench_zoo.py --device cpu,cuda --io-binding --no-keras --models DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # training/ lives at the repository root


def _guess_export_kwargs(name: str, keras_model: Any, labels: tuple[str, ...]) -> dict[str, Any]:
    """Input name and kind from the model's input, following the zoo's naming."""
    shape = tuple(keras_model.inputs[0].shape)
    dtype = str(keras_model.inputs[0].dtype)
    kwargs: dict[str, Any] = {"name": name, "labels": list(labels)}
    if "int" in dtype:
        kwargs.update(input_name="tokens", input_kind="tokens")
    elif len(shape) == 4:
        kwargs.update(input_name="images", input_kind="image")
    elif len(shape) == 3:
        kwargs.update(input_name="series", input_kind="series")
    else:
        kwargs.update(input_name="features", input_kind="features")
    return kwargs


def _export_kwargs(name: str, keras_model: Any, entry: Any) -> dict[str, Any]:
    """The zoo entry's own export spec; a guess only for a model outside the zoo."""
    spec = dict(getattr(entry, "spec", None) or {})
    if not spec:
        labels = tuple(str(i) for i in range(10))
        return _guess_export_kwargs(name, keras_model, labels)
    spec["name"] = name
    if getattr(entry, "kind", "") == "folder":
        # Image-folder models take their labels from the folder at training time;
        # latency does not depend on them, so two placeholders stand in.
        spec.setdefault("labels", ("class_0", "class_1"))
        if getattr(entry, "binary_head", False):
            spec.update(task="binary_classification", threshold=0.5)
        else:
            spec.setdefault("task", "classification")
    return spec


def _inference_model(built: Any) -> Any:
    """The part that is deployed: the generator of a (generator, discriminator) pair."""
    if isinstance(built, dict):
        return built.get("generator") or next(iter(built.values()))
    if isinstance(built, (tuple, list)):
        return built[0]
    return getattr(built, "generator", built)


Prepared = dict[str, tuple[str, str]]


def prepare(folder: str, only: list[str] | None) -> tuple[Prepared, dict[str, str]]:
    """Build and export every zoo model; returns {name: (onnx, keras)} and {name: why not}."""
    from dlinfer.export import to_onnx

    from training import zoo
    from training._tf import keras

    os.makedirs(folder, exist_ok=True)
    entries: dict[str, tuple[Any, Any]] = {name: (e.build, e) for name, e in zoo.ZOO.items()}
    if "mnist_mlp" not in entries:
        def mlp() -> Any:  # the workshop MLP, until the zoo has it: 407,050 parameters
            return keras.Sequential(
                [keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                 keras.layers.Dense(10, activation="softmax")], name="mnist_mlp")

        entries["mnist_mlp"] = (mlp, None)
    ready, skipped = {}, {}
    for name, (build, entry) in entries.items():
        if only and name not in only:
            continue
        onnx_path = os.path.join(folder, f"{name}.onnx")
        keras_path = os.path.join(folder, f"{name}.keras")
        if not (os.path.exists(onnx_path) and os.path.exists(keras_path)):
            try:
                keras.utils.set_random_seed(0)
                model = _inference_model(build())
                kwargs = _export_kwargs(name, model, entry)
                try:
                    to_onnx(model, onnx_path, **kwargs)
                except TypeError:  # an exporter with a narrower signature
                    to_onnx(model, onnx_path, name=name)
                model.save(keras_path)
            except Exception as exc:  # noqa: BLE001 - one model must not stop the table
                skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                print(f"[{name}] not benchmarked: {skipped[name]}", file=sys.stderr)
                continue
        ready[name] = (onnx_path, keras_path)
    return ready, skipped


def exported(folder: str, only: list[str] | None) -> tuple[Prepared, dict[str, str]]:
    """The ``.onnx`` files already in ``folder`` (no TensorFlow): {name: (onnx, "")}."""
    names = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".onnx")) \
        if os.path.isdir(folder) else []
    ready = {n: (os.path.join(folder, f"{n}.onnx"), "") for n in names if not only or n in only}
    skipped = {n: f"no {n}.onnx in {folder}" for n in (only or []) if n not in ready}
    return ready, skipped


def _offline(args: argparse.Namespace, only: list[str]) -> bool:
    """Benchmark what is in --models without TensorFlow: asked for, or the only way."""
    if not args.no_keras:
        return False
    import importlib.util

    ready, _ = exported(args.models, only)
    return bool(ready) and (importlib.util.find_spec("tensorflow") is None
                            or all(n in ready for n in only))


def run_bench(name: str, onnx_path: str, keras_path: str, args: argparse.Namespace,
              tag: str) -> str:
    base = os.path.join(args.out, f"{name}.{tag}")
    cmd = [sys.executable, "-m", "dlinfer", "bench", onnx_path, "--device", args.device,
           "--batch-sizes", args.batch_sizes, "--max-seconds", str(args.max_seconds),
           "--json", base + ".json", "--csv", base + ".csv", "--plot", base + ".png"]
    if args.io_binding:
        cmd.append("--io-binding")
    if args.warmup is not None:
        cmd += ["--warmup", str(args.warmup)]
    if not args.no_keras:
        cmd += ["--compare-keras", keras_path]
    shown = " ".join(os.path.relpath(c, ROOT) if os.path.isabs(c) else c for c in cmd[1:])
    print(f"[{name}] {shown}",
          file=sys.stderr)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return base + ".json"


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "" if v is None else format(v, spec)


def cpu_tables(reports: dict[str, dict[str, Any]]) -> str:
    lines = [
        "Batch 1, every zoo model (latency in ms; speedup = Keras p50 / dlinfer p50, "
        "> 1 means dlinfer is faster):",
        "",
        "| model | dlinfer p50 | p90 | p95 | p99 | items/s | Keras predict_on_batch p50 "
        "| tf.function p50 | vs predict_on_batch | vs tf.function | stop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, rep in reports.items():
        rows = {(r["method"], r["batch_size"]): r for r in rep["records"]
                if r["provider"] in ("CPUExecutionProvider", "tensorflow")}
        d = rows.get(("dlinfer", 1))
        if d is None:
            continue
        p = rows.get(("keras.predict_on_batch", 1))
        f = rows.get(("keras.tf_function", 1))
        lines.append(
            f"| {name} | {_fmt(d['latency_ms_p50'])} | {_fmt(d['latency_ms_p90'])} "
            f"| {_fmt(d['latency_ms_p95'])} | {_fmt(d['latency_ms_p99'])} "
            f"| {_fmt(d['items_per_s'], ',.0f')} | {_fmt(p and p['latency_ms_p50'])} "
            f"| {_fmt(f and f['latency_ms_p50'])} "
            f"| {_fmt(d['speedup_vs_keras_predict_on_batch'], '.1f')}x "
            f"| {_fmt(d['speedup_vs_keras_tf_function'], '.1f')}x | {d['stop']} |"
        )
    sizes = sorted({r["batch_size"] for rep in reports.values() for r in rep["records"]})
    lines += [
        "",
        "Throughput, items/s, by batch size (dlinfer; in brackets: speedup over Keras "
        "predict_on_batch / tf.function at that batch):",
        "",
        "| model | " + " | ".join(f"batch {b}" for b in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name, rep in reports.items():
        cells = []
        for b in sizes:
            d = next((r for r in rep["records"] if r["method"] == "dlinfer"
                      and r["batch_size"] == b and r["provider"] == "CPUExecutionProvider"), None)
            if d is None:
                cells.append("")
                continue
            vs = ""
            if d["speedup_vs_keras_predict_on_batch"] is not None:
                vs = (f" ({d['speedup_vs_keras_predict_on_batch']:.1f}x / "
                      f"{d['speedup_vs_keras_tf_function']:.1f}x)")
            cells.append(f"{d['items_per_s']:,.0f}{vs}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu_fallbacks(rep: dict[str, Any]) -> str:
    """The GPU device's nodes left on CPU, from the bench's per-node assignment."""
    placed = [a for d, a in (rep.get("settings", {}).get("assignment") or {}).items()
              if d != "cpu"]
    if not placed or not placed[0].get("recorded"):
        return "?"
    fallbacks = placed[0]["cpu_fallbacks"]
    ops = sorted({f["op_type"] for f in fallbacks})
    return f"{len(fallbacks)} ({', '.join(ops)})" if fallbacks else "0"


def gpu_tables(reports: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | batch | CPU items/s | CUDA items/s | CUDA p50 ms | H2D | compute | D2H "
        "| CUDA beats CPU from batch | nodes on CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, rep in reports.items():
        cross = (rep.get("crossover") or {}).get("dlinfer") or {}
        fallbacks = _cpu_fallbacks(rep)
        recs = [r for r in rep["records"] if r["method"] == "dlinfer"]
        for b in sorted({r["batch_size"] for r in recs}):
            cpu = next((r for r in recs if r["batch_size"] == b
                        and r["provider"] == "CPUExecutionProvider"), None)
            gpu = next((r for r in recs if r["batch_size"] == b
                        and r["provider"] != "CPUExecutionProvider"), None)
            lines.append(
                f"| {name} | {b} | {_fmt(cpu and cpu['items_per_s'], ',.0f')} "
                f"| {_fmt(gpu and gpu['items_per_s'], ',.0f')} "
                f"| {_fmt(gpu and gpu['latency_ms_p50'])} | {_fmt(gpu and gpu['h2d_ms_p50'])} "
                f"| {_fmt(gpu and gpu['compute_ms_p50'])} | {_fmt(gpu and gpu['d2h_ms_p50'])} "
                f"| {cross.get('batch_size') if cross.get('batch_size') is not None else 'never'} "
                f"| {fallbacks} |"
            )
    return "\n".join(lines)


def summary_plot(reports: dict[str, dict[str, Any]], path: str) -> None:
    """Batch-1 speedups of dlinfer over both Keras baselines, one bar pair per model."""
    from dlinfer.tools.plot import _pyplot

    plt = _pyplot()
    names, vs_p, vs_f = [], [], []
    for name, rep in reports.items():
        d = next((r for r in rep["records"] if r["method"] == "dlinfer" and r["batch_size"] == 1
                  and r["provider"] == "CPUExecutionProvider"), None)
        if d and d["speedup_vs_keras_predict_on_batch"] is not None:
            names.append(name)
            vs_p.append(d["speedup_vs_keras_predict_on_batch"])
            vs_f.append(d["speedup_vs_keras_tf_function"])
    if not names:
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4.5), constrained_layout=True)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], vs_p, 0.4, label="vs Keras predict_on_batch")
    ax.bar([x + 0.2 for x in xs], vs_f, 0.4, label="vs tf.function")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("dlinfer speedup at batch 1 (p50 ratio)")
    env = next(iter(reports.values()))["environment"]
    ax.set_title(f"dlinfer (onnxruntime {env['onnxruntime']['version']}, CPU) vs Keras, "
                 f"{env['cpu']['model']}", fontsize=10)
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_readme(readme: str, tag: str, body: str) -> None:
    text = open(readme).read() if os.path.exists(readme) else ""
    begin, end = f"<!-- zoo:{tag} -->", f"<!-- /zoo:{tag} -->"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(readme, "w") as f:
        f.write(text)


def main() -> int:
    parser = argparse.ArgumentParser(description="dlinfer bench over the whole zoo")
    parser.add_argument("--device", default="cpu", help="as for dlinfer bench, e.g. cpu,cuda")
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    parser.add_argument("--io-binding", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras baselines")
    parser.add_argument("--models", default=os.path.join(ROOT, "artifacts", "bench"))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--readme", default=os.path.join(HERE, "README.md"))
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per cell")
    parser.add_argument("--export-only", action="store_true",
                        help="build and export the models into --models, then stop")
    args = parser.parse_args()
    tag = "cuda" if re.search(r"cuda|tensorrt", args.device) else "cpu"
    os.makedirs(args.out, exist_ok=True)

    only = [n for n in args.only.split(",") if n]
    if args.export_only:
        ready, skipped = prepare(args.models, only)
        for name, (onnx_path, _) in ready.items():
            print(f"{name}: {onnx_path} ({os.path.getsize(onnx_path):,} bytes)")
        return 1 if skipped else 0
    if _offline(args, only):
        ready, skipped = exported(args.models, only)
    else:
        ready, skipped = prepare(args.models, only)
    load = os.getloadavg()[0]
    started = time.time()
    reports = {}
    for name, (onnx_path, keras_path) in ready.items():
        with open(run_bench(name, onnx_path, keras_path, args, tag)) as f:
            reports[name] = json.load(f)
    summary = os.path.join(args.out, f"zoo.{tag}.png")
    if tag == "cpu" and not args.no_keras:
        summary_plot(reports, summary)
    env = next(iter(reports.values()))["environment"] if reports else {}
    gpus = env.get("gpu", {}).get("devices") or []
    body = [
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} by `python benchmarks/bench_zoo.py"
        f"{'' if args.device == 'cpu' else ' --device ' + args.device}"
        f"{' --io-binding' if args.io_binding else ''}` "
        f"({time.time() - started:.0f} s): onnxruntime {env.get('onnxruntime', {}).get('version')}"
        f", {env.get('cpu', {}).get('model')}, {env.get('cpu', {}).get('usable_cores')} cores"
        f"{', GPU ' + gpus[0]['name'] + ' (driver ' + str(gpus[0]['driver']) + ')' if gpus else ''}"
        f"; 1-minute load average {load:.1f} at the start (the machine was shared). "
        f"Random weights; every cell ran until its window medians moved < 2% or "
        f"{args.max_seconds:g} s passed (the `stop` column). Per-model JSON, CSV and plots: "
        f"`benchmarks/results/NAME.{tag}.*`.",
        "",
        cpu_tables(reports) if tag == "cpu" else gpu_tables(reports),
    ]
    if tag == "cpu" and os.path.exists(summary):
        body += ["", f"![dlinfer vs Keras at batch 1](results/zoo.{tag}.png)"]
    if skipped:
        body += ["", "Not benchmarked: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items())]
    write_readme(args.readme, tag, "\n".join(body))
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
