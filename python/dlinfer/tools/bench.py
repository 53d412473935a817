"""``dlinfer bench``: latency and throughput per device and batch size, honestly labelled.

Every cell (one method, one device, one batch size) is timed in windows of about
0.25 s.  Unless a fixed ``iters`` or ``duration`` is asked for, windows repeat until
the median latency of a window differs from the previous window's by less than
``stability_pct`` percent (after at least ``min_windows`` windows), or until
``max_seconds`` is spent; the record's ``stop`` field says which happened.
Percentiles are taken over every timed call of the cell.  The garbage collector is
paused while a cell is timed, as ``timeit`` does.

A record's ``provider`` is what ``session.get_providers()`` reported for the session
that ran, never the provider that was asked for.

Record fields and the JSON/CSV files are described in :mod:`dlinfer.tools.bench_results`.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..checks import check_allocation
from ..errors import InputError, SpecError
from ..runtime.assignment import of_model
from ..runtime.batch_axis import batch_axes, runnable_sizes
from ..runtime.model import Model
from ..runtime.providers import parse_device
from .bench_results import FIELDS, BenchResults
from .keras_baseline import KerasBaseline

__all__ = ["FIELDS", "BenchResults", "benchmark", "parse_int_list"]


WINDOW_SECONDS = 0.25
KERAS_METHODS = ("keras.predict_on_batch", "keras.tf_function")

# A step runs one call and returns its stage durations in ns (preprocess, h2d,
# compute, d2h); None for a stage that does not apply.
Stages = tuple[int | None, int | None, int, int | None]
Step = Callable[[], Stages]


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]``, every value >= 1."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be integers >= 1, got {text!r}")
    return values


# -- timing --------------------------------------------------------------------------------


def _measure(
    step: Step,
    *,
    warmup: int,
    iters: int | None,
    duration: float | None,
    stability_pct: float,
    max_seconds: float,
    min_windows: int,
) -> dict[str, Any]:
    pc = time.perf_counter_ns
    cap_ns = int(max_seconds * 1e9)
    started = pc()
    for _ in range(warmup):
        step()
        if pc() - started > cap_ns:
            break
    probe = pc()
    step()
    estimate = max(pc() - probe, 1)
    per_window = max(3, min(100_000, int(WINDOW_SECONDS * 1e9 / estimate)))

    samples: list[Stages] = []
    medians: list[float] = []
    stop = "time_cap"
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = pc()
        if iters is not None:
            samples = [step() for _ in range(iters)]
            stop = "iters"
        elif duration is not None:
            end = start + int(duration * 1e9)
            while pc() < end or not samples:
                samples.append(step())
            stop = "duration"
        else:
            while True:
                window: list[Stages] = []
                for _ in range(per_window):
                    window.append(step())
                    if pc() - start > cap_ns:
                        break
                samples.extend(window)
                medians.append(float(np.median([_total(s) for s in window])))
                if len(medians) >= max(min_windows, 2) and _change(medians) < stability_pct:
                    stop = "stable"
                    break
                if pc() - start > cap_ns:
                    break
        elapsed = (pc() - start) / 1e9
    finally:
        if gc_was_enabled:
            gc.enable()
    if iters is not None or duration is not None:
        # Report the same window statistics for fixed runs, cut after the fact.
        totals = [_total(s) for s in samples]
        medians = [float(np.median(totals[i : i + per_window]))
                   for i in range(0, len(totals), per_window)]
    return {
        "samples": samples,
        "warmup": warmup,
        "windows": max(len(medians), 1),
        "stop": stop,
        "median_change_pct": round(_change(medians), 3) if len(medians) > 1 else None,
        "seconds": round(elapsed, 3),
    }


def _total(stages: Stages) -> int:
    return sum(s for s in stages if s is not None)


def _change(medians: list[float]) -> float:
    a, b = medians[-2], medians[-1]
    return abs(b - a) / a * 100 if a else math.inf


def _stats(samples: list[Stages], batch: int) -> dict[str, Any]:
    totals = np.array([_total(s) for s in samples], dtype=np.float64) / 1e6
    p50, p90, p95, p99 = np.percentile(totals, [50, 90, 95, 99])
    out: dict[str, Any] = {
        "iters": len(samples),
        "latency_ms_mean": float(totals.mean()),
        "latency_ms_min": float(totals.min()),
        "latency_ms_p50": float(p50),
        "latency_ms_p90": float(p90),
        "latency_ms_p95": float(p95),
        "latency_ms_p99": float(p99),
        "latency_ms_max": float(totals.max()),
        "items_per_s": batch / float(p50) * 1000.0 if p50 > 0 else None,
    }
    for i, name in enumerate(("preprocess_ms_p50", "h2d_ms_p50", "compute_ms_p50", "d2h_ms_p50")):
        stage = [s[i] for s in samples if s[i] is not None]
        out[name] = float(np.median(stage)) / 1e6 if stage else None
    return out


# -- inputs and steps ----------------------------------------------------------------------


def _inputs(model: Model, batch: int, end_to_end: bool, rng: np.random.Generator,
            shapes: Mapping[str | None, tuple[int, ...]] | None = None) -> Any:
    """Random inputs of the right dtype and shape; uint8 pixels for end-to-end runs.
    ``shapes``: sizes for the dynamic axes (``--input-shape``), else drawn ones."""
    if end_to_end:
        spec = model.spec
        if spec is None or spec.input.kind != "image" or spec.input.layout != "NHWC":
            raise SpecError(
                f"--end-to-end needs an image model with a dlinfer spec; {model.path} has "
                f"{'no spec' if spec is None else f'a {spec.input.kind} input'}"
            )
        shape = (batch, *spec.input.shape[1:])
        if any(d is None for d in shape):
            raise SpecError(f"--end-to-end needs a fixed image size; {model.path} has {shape}")
        return rng.integers(0, 256, size=check_allocation(shape, 1, "--end-to-end pixels"),
                            dtype=np.uint8)
    # Drawn on each input's own batch axis (inputs without one whole), at sizes the graph
    # runs at: the rule verify and optimize use (runtime.batch_axis, model_samples).
    from ..verification.model_samples import model_samples

    feed = model_samples(model, None, batch, int(rng.integers(2**31)), shapes=shapes)[0]
    return feed if len(feed) > 1 else next(iter(feed.values()))


def _shape_str(x: Any) -> str:
    arrays = x.values() if isinstance(x, dict) else [x]
    return ";".join("x".join(str(d) for d in a.shape) for a in arrays)


def _dlinfer_step(model: Model, x: Any, end_to_end: bool, out: Any) -> Step:
    pc = time.perf_counter_ns
    run = model.run
    if end_to_end:
        from ..preprocessing.transform import PreprocessSpec

        prep, threads = PreprocessSpec.from_model(model.spec), model.threads

        def step() -> Stages:
            t0 = pc()
            batch = prep(x, threads=threads)
            t1 = pc()
            run(batch, out) if out is not None else run(batch)
            t2 = pc()
            return (t1 - t0, None, t2 - t1, None)

        return step
    if out is not None:

        def step() -> Stages:
            t0 = pc()
            run(x, out)
            return (None, None, pc() - t0, None)

        return step

    def step() -> Stages:
        t0 = pc()
        run(x)
        return (None, None, pc() - t0, None)

    return step


def _staged_step(model: Model, x: Any, end_to_end: bool, device_type: str = "cuda") -> Step:
    """H2D into a device-resident input, run on device buffers, D2H: each timed apart.

    ``device_type="cpu"`` runs the same staging on host buffers, which is how the
    tests exercise this path on machines without a GPU.
    """
    import onnxruntime as ort

    device_id = int(model.device.partition(":")[2] or 0)
    session = model.session
    binding = session.io_binding()
    if len(model.inputs) != 1:
        raise InputError("the CUDA io_binding split handles single-input models")
    name = model.inputs[0].name
    host = x
    prep, threads = None, model.threads
    if end_to_end:
        from ..preprocessing.transform import PreprocessSpec

        prep = PreprocessSpec.from_model(model.spec)
        host = prep(x, threads=threads)
    new_value = ort.OrtValue.ortvalue_from_shape_and_type
    for o, shape in zip(model.outputs, model.output_shape(host.shape[0])):
        if shape is None:
            binding.bind_output(o.name, device_type, device_id)
        else:
            value = new_value(shape, o.dtype, device_type, device_id)
            binding.bind_ortvalue_output(o.name, value)
    pc = time.perf_counter_ns

    def step() -> Stages:
        t0 = pc()
        data = prep(x, threads=threads) if prep is not None else host
        t1 = pc()
        # Binding a host array copies it to the device on onnxruntime's own stream
        # (CopyOneInputAcrossDevices); synchronize_inputs waits for that copy, so the
        # compute below starts with the data in place.  (OrtValue.update_inplace would
        # copy on the legacy default stream, which onnxruntime's streams do not wait
        # for: the split could race and under-count H2D.)
        binding.bind_cpu_input(name, data)
        binding.synchronize_inputs()
        t2 = pc()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        t3 = pc()
        binding.copy_outputs_to_cpu()
        t4 = pc()
        return (t1 - t0 if end_to_end else None, t2 - t1, t3 - t2, t4 - t3)

    return step


def _label(device: str, model: Model) -> str:
    """A contender's name in settings: the device, and the backend where not onnxruntime."""
    label = parse_device(device).label
    return label if model.backend == "onnxruntime" else f"{label} ({model.backend})"


def benchmark(
    model: str | os.PathLike[str],
    devices: Sequence[str] | str = ("cpu",),
    batch_sizes: Sequence[int] | str = (1, 8, 32, 128),
    *,
    threads: int | None = None,
    warmup: int = 10,
    iters: int | None = None,
    duration: float | None = None,
    io_binding: bool = False,
    end_to_end: bool = False,
    compare_keras: str | os.PathLike[str] | None = None,
    stability_pct: float = 2.0,
    max_seconds: float = 10.0,
    min_windows: int = 3,
    seed: int = 0,
    environment: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    cuda: dict[str, Any] | None = None,
    tensorrt: dict[str, Any] | None = None,
    backend: Sequence[str] | str = ("onnxruntime",),
    input_shapes: Mapping[str | None, tuple[int, ...]] | None = None,
) -> BenchResults:
    """Time ``model`` on each device and batch size; one record per cell (see module doc).

    Args:
        model: the ``.onnx`` file.
        devices: device strings as for :class:`Model` (an explicit device is strict and
            raises :class:`~dlinfer.ProviderUnavailableError` where it cannot run), or a
            comma-separated string.
        batch_sizes: a list, or a comma-separated string.
        threads: onnxruntime intra-op threads (None: every core).
        warmup: untimed calls per cell first.
        iters / duration: a fixed number of timed calls, or of seconds, per cell instead
            of the stability rule.
        io_binding: CPU: preallocated outputs through IOBinding; CUDA: device-resident
            buffers, which also splits host-to-device, compute and device-to-host.
        end_to_end: time preprocessing from uint8 pixels too (image models with a spec).
        compare_keras: a ``.keras`` file of the same model: adds ``predict_on_batch`` and
            ``tf.function`` rows and speedup columns (imports TensorFlow).
        stability_pct, max_seconds, min_windows: the stability rule.
        seed: for the random inputs.
        environment: facts to record instead of running ``doctor.diagnose()``.
        progress: called with each record as it is finished.
        cuda / tensorrt: provider options (as for :class:`Model`) for the devices that
            use that provider; CPU devices run without them.
        backend: the runtime backends to time side by side on each device, a list or a
            comma-separated string (``"onnxruntime,openvino"``; ``"auto"`` times what
            it picks); a GPU device runs onnxruntime only.
        input_shapes: ``{input name (None: the only input): shape}`` for the dynamic
            axes of the drawn inputs (each batch axis still takes the batch size);
            without it a dynamic height or width is drawn (32 first: ``model_samples``).
            The shapes timed are in each record's ``input_shape`` and the table.
    """
    from .doctor import diagnose

    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()]
    if isinstance(batch_sizes, str):
        batch_sizes = parse_int_list(batch_sizes, "batch_sizes")
    else:
        batch_sizes = parse_int_list(",".join(map(str, batch_sizes)), "batch_sizes")
    backends = ([b.strip() for b in backend.split(",")] if isinstance(backend, str)
                else list(backend))
    if not devices or not backends:
        raise ValueError("devices and backends must name at least one each")
    if iters is not None and duration is not None:
        raise ValueError("give iters or duration, not both")
    if iters is not None and iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if warmup < 0 or stability_pct <= 0 or max_seconds <= 0 or min_windows < 2:
        raise ValueError("warmup must be >= 0, stability_pct and max_seconds > 0, min_windows >= 2")
    if input_shapes and end_to_end:
        raise ValueError("input_shapes (--input-shape) sets drawn inputs; --end-to-end "
                         "takes its size from the spec")
    if compare_keras is not None and not os.path.exists(compare_keras):
        raise FileNotFoundError(f"--compare-keras file not found: {compare_keras}")

    settings = {
        "model": os.fspath(model), "devices": list(devices), "batch_sizes": list(batch_sizes),
        "threads": threads, "warmup": warmup, "iters": iters, "duration": duration,
        "io_binding": io_binding, "end_to_end": end_to_end,
        "compare_keras": None if compare_keras is None else os.fspath(compare_keras),
        "stability_pct": stability_pct, "max_seconds": max_seconds,
        "min_windows": min_windows, "window_seconds": WINDOW_SECONDS, "seed": seed,
        "cuda": cuda, "tensorrt": tensorrt, "backends": backends,
        "input_shapes": {k or "": list(v) for k, v in (input_shapes or {}).items()},
    }
    env = environment if environment is not None else diagnose()
    gpus = env.get("gpu", {}).get("devices") or []
    common = {
        "onnxruntime": env.get("onnxruntime", {}).get("version"),
        "cpu": env.get("cpu", {}).get("model"),
        "gpu": gpus[0]["name"] if gpus else None,
    }
    timing = dict(warmup=warmup, iters=iters, duration=duration, stability_pct=stability_pct,
                  max_seconds=max_seconds, min_windows=min_windows)
    records: list[dict[str, Any]] = []

    def add(record: dict[str, Any]) -> None:
        records.append(record)
        if progress is not None:
            progress(record)

    # Open every device first: a device that cannot run fails before any timing.
    def options(device: str) -> dict[str, Any]:
        kind = parse_device(device).kind
        return {"cuda": cuda if kind != "cpu" else None,
                "tensorrt": tensorrt if kind == "tensorrt" else None}

    contenders = [(d, b) for d in devices for b in backends
                  if b == "onnxruntime" or parse_device(d).kind in ("cpu", "auto")]
    models = [Model(model, device=d, threads=threads, io_binding=io_binding, backend=b,
                    **(options(d) if b == "onnxruntime" else {})) for d, b in contenders]
    devices = [d for d, _ in contenders]
    # A fixed batch of 1, or no batch axis at all, runs at one batch size only.
    batch_sizes, settings["batch_note"] = runnable_sizes(batch_axes(models[0]), batch_sizes)
    if not end_to_end:  # which sizes were drawn, not set: said next to the table
        from ..verification.model_samples import drawn_axes

        settings["drawn_axes"] = drawn_axes(models[0], batch_axes(models[0]), input_shapes)
    # Which provider runs each node, and the nodes a GPU device left on the CPU.
    settings["assignment"] = {_label(d, m): of_model(m) for d, m in zip(devices, models)}
    settings["backend_choice"] = {_label(d, m): m.backend_reason for d, m in zip(devices, models)}
    name = (models[0].spec.name if models[0].spec else
            os.path.splitext(os.path.basename(os.fspath(model)))[0])
    base = {"model": os.path.basename(os.fspath(model)), "model_name": name,
            "stability_pct": stability_pct, "speedup_vs_keras_predict_on_batch": None,
            "speedup_vs_keras_tf_function": None, **common}
    baseline = None
    if compare_keras is not None:
        sample = _inputs(models[0], 1, False, np.random.default_rng(seed), input_shapes)
        if isinstance(sample, dict):
            raise InputError("--compare-keras handles single-input models")
        baseline = KerasBaseline(os.fspath(compare_keras), sample)

    # Batch size is the outer loop, so that the contenders for one batch size are timed
    # next to each other and share whatever else the machine is doing.
    for batch in batch_sizes:
        for requested, m in zip(devices, models):
            x = _inputs(m, batch, end_to_end, np.random.default_rng(seed), input_shapes)
            if m.device != "cpu" and io_binding:
                step = _staged_step(m, x, end_to_end)
            else:
                out = None
                if io_binding:
                    shapes = m.output_shape(batch)
                    if all(s is not None for s in shapes):
                        arrays = [np.empty(check_allocation(s, o.dtype.itemsize, o.name), o.dtype)
                                  for s, o in zip(shapes, m.outputs)]
                        out = arrays[0] if len(arrays) == 1 else dict(zip(m._output_names, arrays))
                step = _dlinfer_step(m, x, end_to_end, out)
            measured = _measure(step, **timing)
            add({
                **base, "method": "dlinfer", "device": parse_device(requested).label,
                "provider": m.providers[0], "providers": ";".join(m.providers),
                "batch_size": batch, "input_shape": _shape_str(x), "threads": m.threads,
                "io_binding": io_binding, "end_to_end": end_to_end,
                **{k: v for k, v in measured.items() if k != "samples"},
                **_stats(measured["samples"], batch),
            })
        if baseline is not None:
            x = _inputs(models[0], batch, False, np.random.default_rng(seed), input_shapes)
            for method, step in baseline.steps(x).items():
                measured = _measure(step, **timing)
                add({
                    **base, "method": method, "device": baseline.device,
                    "provider": "tensorflow", "providers": "tensorflow", "batch_size": batch,
                    "input_shape": _shape_str(x), "threads": 0,
                    "io_binding": False, "end_to_end": False,
                    **{k: v for k, v in measured.items() if k != "samples"},
                    **_stats(measured["samples"], batch),
                })

    if baseline is not None:
        keras_p50 = {(r["method"], r["batch_size"]): r["latency_ms_p50"]
                     for r in records if r["method"] in KERAS_METHODS}
        for r in records:
            if r["method"] != "dlinfer":
                continue
            for method in KERAS_METHODS:
                ref = keras_p50.get((method, r["batch_size"]))
                key = "speedup_vs_" + method.replace(".", "_")
                r[key] = ref / r["latency_ms_p50"] if ref else None
    # Rows grouped by method and device, then batch size, whatever order they ran in.
    methods = ["dlinfer", *KERAS_METHODS]
    order = {d: i for i, d in enumerate(parse_device(d).label for d in devices)}
    by_provider = {m.providers[0]: i for i, m in enumerate(models)}
    records.sort(key=lambda r: (methods.index(r["method"]), order.get(r["device"], 0),
                                by_provider.get(r["provider"], 0), r["batch_size"]))

    return BenchResults([{k: r[k] for k in FIELDS} for r in records], env, settings)
