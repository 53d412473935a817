"""The ``dlinfer`` command line: ``info``, ``predict``, ``verify``, ``doctor``, ``bench``,
``serve``, ``export``, ``optimize`` and ``spec``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .._optional import import_optional
from ..errors import DlinferError, InferenceError
from ..escape import file_name, visible
from ..runtime.assignment import describe as describe_assignment
from ..runtime.assignment import of_model as assignment_of
from ..runtime.batch_axis import batch_axes
from ..runtime.model import Model
from ..tasks.classifier import Classifier
from . import args as arg
from .explain_command import add_explain_parsers
from .export_command import add_export_arguments, add_export_parser, export_command  # noqa: F401
from .optimize_command import add_optimize_parser
from .provider_flags import add_backend_flag, add_provider_flags, provider_kwargs
from .ray_command import add_ray_parser
from .spec_tool import add_spec_parser, describe_spec, labels_text
from .triton_command import add_triton_parser


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=arg.device, default="cpu",
                   help="cpu, cuda, cuda:N, tensorrt, tensorrt:N or auto")
    p.add_argument("--threads", type=arg.threads, default=None,
                   help="intra-op threads (default or 0: all)")
    add_provider_flags(p)


def _tensor_json(t: Any) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name}


def _say(line: str) -> None:
    """A line of text output: labels, names and paths come from files, so control
    characters in them are shown escaped (dlinfer.escape.visible), never sent raw."""
    print(visible(line))


def _info(args: argparse.Namespace) -> int:
    model = Model(args.model, device=args.device, threads=args.threads, **provider_kwargs(args))
    spec = model.spec
    data: dict[str, Any] = {
        "path": model.path,
        "device": model.device,
        "providers": model.providers,
        "backend": model.backend, "backend_reason": model.backend_reason,
        "inputs": [_tensor_json(t) for t in model.inputs],
        "outputs": [_tensor_json(t) for t in model.outputs],
        "spec": spec.summary() if spec else None,  # + primary input/output/labels for scripts
        "metadata_keys": sorted(model.metadata),
        "assignment": assignment_of(model),  # which provider runs each node; CPU fallbacks
        "batch_axes": {b.input: {"axis": b.axis, "size": b.size, "source": b.source,
                                 "reason": b.reason} for b in batch_axes(model).values()},
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    _say(f"model:     {model.path} ({os.path.getsize(model.path):,} bytes)")
    _say(f"device:    {model.device} (active providers: {', '.join(model.providers)})")
    for line in describe_assignment(data["assignment"]):
        _say(f"           {line}")
    if args.device == "auto":
        _say(f"           {model.device_reason}")
    _say(f"backend:   {model.backend} ({model.backend_reason})")
    for t in model.inputs:
        _say(f"input:     {t}")
    for b in batch_axes(model).values():  # the one rule verify, optimize, bench, serve use
        _say(f"           batch axis of {b.input!r}: {b.describe()}")
    for t in model.outputs:
        _say(f"output:    {t}")
    if spec is None:
        _say("spec:      none (not exported by dlinfer; Classifier cannot use it)")
        return 0
    inp = spec.input
    _say(f"name:      {spec.name}")
    _say(f"task:      {spec.task}")
    for line in describe_spec(spec, prefix="spec "):
        _say(line)
    if spec.labels:
        _say(f"labels:    {labels_text(spec.labels)}")
    if spec.threshold is not None:
        _say(f"threshold: {spec.threshold}")
    if inp.kind == "image":
        _say(
            f"images:    {inp.layout} {inp.color}, x * {inp.scale:.6g}, "
            f"mean {list(inp.mean)}, std {list(inp.std)}"
        )
    for key, value in sorted(spec.versions.items()):
        _say(f"{key + ':':<10} {value}")
    for key, value in sorted(spec.parity.items()):
        if isinstance(value, dict):  # the exporter's figures per output
            for name, figures in value.items():
                _say(f"parity.{key}.{name}: {figures}")
        else:
            _say(f"parity.{key}: {value}")
    done = spec.extra.get("optimize")
    if isinstance(done, dict):
        _say(f"optimized: {done.get('mode')}, {done.get('source_bytes', 0):,} -> "
              f"{os.path.getsize(model.path):,} bytes, drop {done.get('drop_points', 0):.2f} "
              f"points (allowed {done.get('max_drop')}) on {done.get('evaluation')}")
    return 0


def _predictions_json(value: Any, **options: Any) -> str:
    """Strict JSON: a NaN probability (a broken model) is an error, never the invalid
    token ``NaN`` that json.dumps writes by default."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        raise InferenceError("the model's output holds NaN or infinity, which JSON cannot "
                             "carry; the model or its input is broken") from None


def _predict_folder(clf: Classifier, args: argparse.Namespace) -> int:
    """Stream a folder through the classifier, one CSV/text row per file as it comes."""
    import csv

    from ..files import write_atomic

    folder = args.images[0]
    count = 0

    def rows(handle: Any) -> None:
        nonlocal count
        writer = csv.writer(handle) if handle else None
        if writer:
            writer.writerow(["file", "label", "index", "probability", "top"])
        for path, pred in clf.predict_folder(
            folder, batch_size=args.batch_size, top_k=args.top_k,
            progress=not args.no_progress and sys.stderr.isatty() or args.progress,
            on_error="skip",
        ):
            count += 1
            rel = os.path.relpath(path, folder)
            top = ";".join(f"{c.label}:{c.probability:.6f}" for c in pred.top)
            if writer:  # raw labels; a name's bytes that are not UTF-8 as \xNN
                writer.writerow([file_name(rel), pred.label, pred.index,
                                 f"{pred.probability:.6f}", top])
            elif args.json:
                print(_predictions_json({"file": file_name(rel), **pred.to_dict()}))
            else:
                _say(f"{rel}  " + "  ".join(f"{c.label} {c.probability:.6f}" for c in pred.top))

    def write_csv(tmp: str) -> None:
        # backslashreplace: a label holding a lone surrogate cannot fail the whole file
        with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            rows(f)

    if args.csv == "-":
        rows(sys.stdout)
    elif args.csv:
        write_atomic(args.csv, write_csv)  # whole or not at all
    else:
        rows(None)
    if args.csv:
        print(f"{count} images -> {'stdout' if args.csv == '-' else args.csv}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    clf = Classifier(args.model, device=args.device, threads=args.threads,
                     **provider_kwargs(args))
    if len(args.images) == 1 and os.path.isdir(args.images[0]):
        return _predict_folder(clf, args)
    preds = clf.predict(args.images, top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        out = [{"file": file_name(path), **p.to_dict()} for path, p in zip(args.images, preds)]
        print(_predictions_json(out, indent=2))
        return 0
    shown = [visible(p) for p in args.images]
    width = max(len(p) for p in shown)
    for path, pred in zip(shown, preds):
        cands = "  ".join(f"{c.label} {c.probability:.4f}" for c in pred.top)
        _say(f"{path:<{width}}  {cands}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..verification.verify import verify

    keras, onnx_file = (args.keras, args.onnx) if args.onnx else (None, args.keras)
    if keras is None and not onnx_file.lower().endswith(".onnx"):
        print(f"dlinfer: error: {onnx_file} is not an .onnx file; give KERAS_FILE ONNX_FILE, "
              "or one ONNX_FILE to check onnxruntime against dlinfer's reference executor",
              file=sys.stderr)
        return 2
    report = verify(keras, onnx_file, args.data, per_layer=args.per_layer, atol=args.atol,
                    rtol=args.rtol, samples=args.samples, backend=args.backend or "onnxruntime")
    print(report.to_json() if args.json else report.format())
    return 0 if report.ok else 1
def _doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose, format_report

    facts = diagnose()
    print(json.dumps(facts, indent=2) if args.json else format_report(facts))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import benchmark

    to_stdout = "-" in (args.json, args.csv)

    def progress(r: dict[str, Any]) -> None:
        if not to_stdout:
            print(f"  {r['method']:<24} {r['device']:<8} batch {r['batch_size']:>4}: "
                  f"p50 {r['latency_ms_p50']:.4f} ms, {r['items_per_s']:.0f} items/s "
                  f"({r['stop']}, {r['iters']} calls)", file=sys.stderr)

    results = benchmark(
        args.model, args.device, args.batch_sizes, threads=args.threads, warmup=args.warmup,
        iters=args.iters, duration=args.duration, io_binding=args.io_binding,
        end_to_end=args.end_to_end, compare_keras=args.compare_keras,
        stability_pct=args.stability, max_seconds=args.max_seconds, progress=progress,
        input_shapes=dict(args.input_shape or []), **provider_kwargs(args),
    )
    for target, write in ((args.json, results.to_json), (args.csv, results.to_csv)):
        if target == "-":
            print(write())
        elif target:
            write(target)
    if args.plot:
        print(f"plot -> {visible(results.plot(args.plot))}", file=sys.stderr)
    if results.settings.get("batch_note"):
        print(f"note: {results.settings['batch_note']}", file=sys.stderr)
    if not to_stdout:
        print(results.table())
        ran = ", ".join(results.providers_ran)
        print(f"providers that actually ran: {ran}")
    return 0
def _serve(args: argparse.Namespace) -> int:
    server = import_optional("dlinfer.serving.server", "serve", "`dlinfer serve`")
    config = server.ServeConfig(
        models=args.models, max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue, timeout_ms=args.timeout_ms or None,
        max_body_bytes=args.max_body_bytes, device=args.device, threads=args.threads,
        **provider_kwargs(args),
        body_timeout_s=args.body_timeout_s, graceful_timeout_s=args.graceful_timeout_s,
        max_image_bytes=args.max_image_bytes, decode_threads=args.decode_threads,
        head_timeout_s=args.head_timeout_s, max_connections=args.max_connections,
        in_flight=args.in_flight,
    )
    try:
        config.resolved_names()
    except ValueError as exc:
        print(f"dlinfer: error: {exc}", file=sys.stderr)
        return 2
    return server.serve(config, host=args.host, port=args.port, workers=args.workers,
                 log_level=args.log_level)


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve classifiers over HTTP with dynamic batching")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="an .onnx file, or NAME=PATH (default name: the file stem)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=arg.port, default=8000)
    p.add_argument("--max-batch-size", type=arg.int_range(1, arg.MAX_BATCH), default=32)
    p.add_argument("--max-delay-ms", type=arg.finite_float(0, arg.MAX_DELAY_MS), default=2.0,
                   help="longest a request waits for its batch to fill")
    p.add_argument("--max-queue", type=arg.int_range(1, arg.MAX_QUEUE), default=1024,
                   help="beyond this, answer 429")
    p.add_argument("--timeout-ms", type=arg.finite_float(0, arg.MAX_WAIT_MS), default=10_000.0,
                   help="queued longer than this: answer 504 (0: no limit)")
    p.add_argument("--max-body-bytes", type=arg.int_range(arg.MIN_BODY_BYTES, arg.MAX_BODY_BYTES),
                   default=10 * 1024 * 1024, help="larger request bodies get 413")
    p.add_argument("--workers", type=arg.int_range(1, arg.MAX_WORKERS), default=1,
                   help="server processes, each with its own batchers")
    p.add_argument("--body-timeout-s", type=arg.positive_float(arg.HOUR_S), default=60.0,
                   help="a request body not received in this time: answer 408")
    p.add_argument("--head-timeout-s", type=arg.positive_float(arg.HOUR_S), default=10.0,
                   help="a request's head (request line and headers) not received in this "
                   "time: close the connection")
    p.add_argument("--max-connections", type=arg.int_range(1, 1_000_000), default=None,
                   help="past this many open connections, close those waiting for a request, "
                   "longest-waiting first (default: what `ulimit -n` leaves)")
    p.add_argument("--graceful-timeout-s", type=arg.positive_float(arg.HOUR_S), default=20.0,
                   help="at shutdown, longest wait for the requests in flight")
    p.add_argument("--max-image-bytes", type=arg.positive_int, default=None,
                   help="an upload needing more decoded gets 413 (default: the model's, 512 MiB)")
    p.add_argument("--decode-threads", type=arg.int_range(1, 64), default=None,
                   help="uploads decoded at once (default: min(4, cores))")
    p.add_argument("--in-flight", type=arg.int_range(1, 16), default=None,
                   help="batches started on the backend at once (default: the backend's, "
                   "2 on OpenVINO, 1 on onnxruntime; docs/serving.md)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    _add_device(p)
    p.set_defaults(func=_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlinfer", description="Run Keras workshop models exported to ONNX."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show a model's inputs, outputs, metadata and providers")
    p.add_argument("model", type=arg.existing_file)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_device(p)
    p.set_defaults(func=_info)

    p = sub.add_parser("predict", help="classify image files, or every image in a folder")
    p.add_argument("model", type=arg.existing_file)
    p.add_argument("images", nargs="+", metavar="IMAGE", type=arg.existing_path,
                   help="image files, or one folder to walk (streamed in batches)")
    p.add_argument("--top-k", type=arg.positive_int, default=1)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--batch-size", type=arg.int_range(1, arg.MAX_BATCH), default=64,
                   help="images per model call (a folder is streamed in batches this size)")
    p.add_argument("--csv", metavar="OUT", type=arg.output_file,
                   help="folder mode: write file,label,... rows here, whole or not at all "
                        "(-: stdout)")
    p.add_argument("--progress", action="store_true", help="folder mode: always show progress")
    p.add_argument("--no-progress", action="store_true", help="folder mode: never show it")
    _add_device(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "verify",
        help="compare Keras, onnxruntime and dlinfer's reference kernels",
        description="Compare a Keras model with its ONNX export on the same samples: Keras, "
        "onnxruntime and dlinfer's reference executor; with one ONNX file (any, a "
        "third-party one too), onnxruntime against the reference executor. Exit status 1 "
        "on mismatch.",
    )
    p.add_argument("keras", metavar="KERAS_FILE|ONNX_FILE", type=arg.existing_file)
    p.add_argument("onnx", metavar="ONNX_FILE", type=arg.existing_file, nargs="?")
    p.add_argument("--data", metavar="NPY|NPZ|DIR", type=arg.existing_path,
                   help=".npy array, .npz keyed by input name, or image folder (default: "
                        "random valid inputs drawn from the spec)")
    p.add_argument("--samples", type=arg.int_range(1, arg.MAX_SAMPLES), default=16,
                   help="at most this many samples (default 16)")
    p.add_argument("--per-layer", action="store_true",
                   help="find the first Keras layer that diverges")
    p.add_argument("--atol", type=arg.finite_float(0), default=1e-4)
    p.add_argument("--rtol", type=arg.finite_float(0), default=1e-4)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    add_backend_flag(p, default="onnxruntime, whatever $DLINFER_BACKEND says")
    p.set_defaults(func=_verify)

    p = sub.add_parser("doctor", help="what this machine can really run: providers, CUDA, GPU, CPU")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_doctor)

    p = sub.add_parser(
        "bench", help="latency percentiles and throughput per device and batch size",
        description="Each cell repeats ~0.25 s windows until the median moves less than "
        "--stability percent between windows (or --max-seconds passes), unless --iters "
        "or --duration fixes the amount.  Fields are documented in dlinfer.bench.",
    )
    p.add_argument("model", type=arg.existing_file)
    p.add_argument("--device", type=arg.devices, default="cpu",
                   help="comma-separated: cpu,cuda,cuda:N,tensorrt,auto")
    p.add_argument("--batch-sizes", type=arg.batch_sizes(), default=[1, 8, 32, 128],
                   help=f"comma-separated, each 1..{arg.MAX_BATCH} (default 1,8,32,128)")
    p.add_argument("--threads", type=arg.threads, default=None,
                   help="intra-op threads (default or 0: all)")
    p.add_argument("--warmup", type=arg.int_range(0, arg.MAX_ITERS), default=10,
                   help="untimed calls per cell (default 10)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--iters", type=arg.int_range(1, arg.MAX_ITERS), default=None,
                        help="fixed timed calls per cell")
    amount.add_argument("--duration", type=arg.positive_float(arg.HOUR_S), default=None,
                        help="fixed seconds per cell")
    p.add_argument("--stability", type=arg.positive_float(100.0), default=2.0,
                   help="stop when window medians differ by less than this %% (default 2)")
    p.add_argument("--max-seconds", type=arg.positive_float(arg.HOUR_S), default=10.0,
                   help="time cap per cell for the stability rule (default 10)")
    p.add_argument("--io-binding", action="store_true",
                   help="CPU: preallocated outputs; CUDA: device buffers, split H2D/compute/D2H")
    p.add_argument("--end-to-end", action="store_true", help="include preprocessing from uint8")
    p.add_argument("--input-shape", type=arg.input_shape, action="append", metavar="[NAME=]SHAPE",
                   help="the size of each dynamic axis of an input, e.g. images=1x3x320x320 "
                        "(the batch axis follows --batch-sizes; NAME may be left out for a "
                        "one-input model; repeat per input); default: drawn, 32 first")
    p.add_argument("--compare-keras", metavar="KERAS_FILE", type=arg.existing_file,
                   help="add Keras predict_on_batch and tf.function baselines (imports TensorFlow)")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", type=arg.output_file,
                   help="write JSON (- or no PATH: stdout)")
    p.add_argument("--csv", nargs="?", const="-", metavar="PATH", type=arg.output_file,
                   help="write CSV (- or no PATH: stdout)")
    p.add_argument("--plot", metavar="PNG", type=arg.output_file,
                   help="write latency/throughput plot (needs matplotlib)")
    add_provider_flags(p, several_backends=True)
    p.set_defaults(func=_bench)

    _add_serve(sub)
    add_export_parser(sub)
    add_optimize_parser(sub)
    add_spec_parser(sub)
    add_triton_parser(sub)
    add_explain_parsers(sub)
    add_ray_parser(sub)
    return parser


def add_debug_flag(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--debug`` on every parser, so it may come before or after the subcommand."""
    parser.add_argument("--debug", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="on an error, print the traceback too")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                add_debug_flag(child, top=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Usage errors exit 2 (argparse, at parse time); errors while running exit 1 with
    ``dlinfer: error: ...``, and a traceback only with ``--debug``."""
    parser = build_parser()
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: args.func(args), debug=args.debug)


def run_command(command: Callable[[], int], *, debug: bool) -> int:
    """The exit-status rule of every ``dlinfer`` command and of ``python -m training``
    (docs/errors.md): ``command()``'s status, else 130 on Ctrl-C, else 1 with one line
    ``dlinfer: error: ...`` on stderr (the traceback too with ``debug``)."""
    try:
        return command()
    except KeyboardInterrupt:
        print("dlinfer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (`dlinfer predict DIR | head`): what was read was wanted, the
        # rest is not; end quietly, as a shell tool killed by SIGPIPE does, and keep
        # Python's exit-time flush from failing on the closed pipe.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass  # stdout is not a file descriptor (captured in a test, say)
        return 141
    except Exception as exc:  # noqa: BLE001 - every error becomes one line, not a traceback
        if debug:
            traceback.print_exc()
        # dlinfer's own errors say what and where; anything else also needs its type.
        text = str(exc) if isinstance(exc, DlinferError) else f"{type(exc).__name__}: {exc}"
        hint = "" if debug else " (--debug shows the traceback)"
        print_error_line(text + ("" if isinstance(exc, DlinferError) else hint))
        return 1


def print_error_line(text: str) -> None:
    """``dlinfer: error: text`` on stderr, one line, control characters escaped."""
    print(f"dlinfer: error: {visible(text)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
