"""`dlinfer ray predict` (Ray Data over a folder, results as Parquet) and `dlinfer ray serve`
(a Ray Serve application); both need ``pip install 'dlinfer[ray]'``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from .._optional import import_optional
from ..errors import InputError
from ..escape import visible
from . import args as arg
from .provider_flags import add_backend_flag

__all__ = ["add_ray_parser"]


def _connect(address: str | None) -> Any:
    """Ray, connected to ``address`` (``auto``: a running cluster) or to a new local one."""
    ray = import_optional("ray", "ray", "`dlinfer ray`")
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray


def _predict(args: argparse.Namespace) -> int:
    from ..preprocessing.decode import iter_image_files

    adapter = import_optional("dlinfer.serving.ray", "ray", "`dlinfer ray predict`")
    if not os.path.isdir(args.folder):
        raise InputError(f"{args.folder}: not a folder")
    if os.path.exists(args.out):
        raise InputError(f"{args.out} already exists; Ray writes a folder of Parquet files there")
    # The same walk as predict_folder: the same files, in the same order.
    def skipped(problem: Exception) -> None:  # a loop, a FIFO, a folder it may not list
        print(f"dlinfer: skipped {visible(str(problem))}", file=sys.stderr)

    files = [os.path.abspath(p) for p in iter_image_files(args.folder, on_unreadable=skipped)]
    if not files:
        raise InputError(f"{args.folder}: no image files")
    _connect(args.address)
    started = time.perf_counter()
    ds = adapter.read_folder(files, args.batch_size, args.read)
    out = adapter.predict_dataset(ds, args.model, batch_size=args.batch_size,
                                  concurrency=args.concurrency, device=args.device,
                                  threads=args.threads_per_actor, top_k=args.top_k,
                                  backend=args.backend,
                                  # read_folder's reads and the write below ask this much
                                  io_cpus=adapter.IO_TASK_CPUS)
    out.write_parquet(args.out, ray_remote_args={"num_cpus": adapter.IO_TASK_CPUS})
    seconds = time.perf_counter() - started
    import pyarrow.parquet as pq

    table = pq.read_table(args.out, columns=["error"])
    errors = table.num_rows - table.column("error").null_count
    print(f"{table.num_rows} images -> {args.out} in {seconds:.1f} s "
          f"({table.num_rows / seconds:.0f} images/s), {errors} failed (see the error column)",
          file=sys.stderr)
    return 0 if table.num_rows == len(files) else 1


def _serve(args: argparse.Namespace) -> int:
    adapter = import_optional("dlinfer.serving.ray", "ray", "`dlinfer ray serve`")
    from ..serving.server import ServeConfig

    config = ServeConfig(models=[args.model], max_batch_size=args.max_batch_size,
                         max_delay_ms=args.max_delay_ms, max_body_bytes=args.max_body_bytes,
                         device=args.device, threads=args.threads or None,
                         backend=args.backend)
    autoscaling = None
    if args.max_replicas is not None:
        autoscaling = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
                       "target_ongoing_requests": args.target_ongoing_requests}
    elif args.min_replicas != 1 or args.target_ongoing_requests is not None:
        raise InputError("--min-replicas and --target-ongoing-requests need --max-replicas")
    if autoscaling and args.target_ongoing_requests is None:
        del autoscaling["target_ongoing_requests"]
    app = adapter.build_app(args.model, config, num_replicas=args.num_replicas,
                            autoscaling_config=autoscaling)
    ray = _connect(args.address)
    from ray import serve

    serve.start(http_options={"host": args.host, "port": args.port})
    name = config.resolved_names()[0]
    serve.run(app, name=name, route_prefix="/")
    print(f"serving {name} at http://{args.host}:{args.port}/ (POST images, GET metadata); "
          "Ctrl-C stops it", file=sys.stderr)
    # Ctrl-C at the terminal shuts Serve and Ray down cleanly.  SIGTERM is caught first by
    # the handler Ray's core worker installs, which ends the process at once (Ray's local
    # processes go with it); a SIGINT sent to the process alone was not seen to arrive.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    ray.shutdown()
    return 0


def _address(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be 'auto' or a cluster address (host:port)")
    return text.strip()


def _new_path(text: str) -> str:
    if not text or os.path.exists(text):
        raise argparse.ArgumentTypeError(f"must be a path that does not exist yet, got {text!r}")
    return text


def _model_arg(text: str) -> str:
    path = text.split("=", 1)[1] if "=" in text else text
    return arg.existing_file(path) and text


address = arg.validating(_address, "address")
model_arg = arg.validating(_model_arg, "model")
new_path = arg.validating(_new_path, "new path")


def add_ray_parser(sub: Any) -> None:
    ray_parser = sub.add_parser("ray", help="Ray Data batch inference and Ray Serve (dlinfer[ray])")
    commands = ray_parser.add_subparsers(dest="ray_command", required=True)

    p = commands.add_parser(
        "predict", help="classify every image in a folder on a Ray cluster, to Parquet",
        description="Walk DIR like `dlinfer predict DIR`, classify it with an actor pool of "
        "dlinfer.serving.ray.ImagePredictor and write label, index, probability, top_k and "
        "error columns (with the path) as a folder of Parquet files.")
    p.add_argument("model", type=arg.existing_file)
    p.add_argument("folder", type=arg.existing_path, metavar="DIR")
    p.add_argument("--out", type=new_path, required=True, help="Parquet output folder")
    p.add_argument("--address", type=address, default=None,
                   help="a running cluster ('auto' or host:port); default: start a local one")
    p.add_argument("--batch-size", type=arg.int_range(1, arg.MAX_BATCH), default=512,
                   help="rows per actor call (default 512: Ray's cost per call is tens of ms)")
    p.add_argument("--concurrency", type=arg.int_range(1, 100_000), default=None,
                   help="actors (default: one per --threads-per-actor CPUs, or one per GPU)")
    p.add_argument("--threads-per-actor", type=arg.int_range(1, arg.MAX_THREADS), default=1,
                   help="CPUs each actor holds and onnxruntime threads it runs (default 1)")
    p.add_argument("--device", type=arg.device, default="cpu",
                   help="cpu, or cuda/tensorrt: one GPU per actor")
    p.add_argument("--top-k", type=arg.int_range(1, 1_000_000), default=1)
    p.add_argument("--read", choices=("paths", "bytes"), default="paths",
                   help="paths: actors read the files (shared storage); bytes: Ray's read tasks "
                   "read them (read_binary_files) and ship the bytes")
    add_backend_flag(p)
    p.set_defaults(func=_predict)

    p = commands.add_parser(
        "serve", help="serve a classifier with Ray Serve (@serve.batch, autoscaling)",
        description="The same request bodies, JSON answers and errors as `dlinfer serve`, "
        "batched by @serve.batch from --max-batch-size and --max-delay-ms.")
    p.add_argument("model", type=model_arg,
                   help="an .onnx file, or NAME=PATH (default name: the file stem)")
    p.add_argument("--address", type=address, default=None,
                   help="a running cluster ('auto' or host:port); default: start a local one")
    p.add_argument("--host", type=address, default="127.0.0.1")
    p.add_argument("--port", type=arg.port, default=8000)
    p.add_argument("--max-batch-size", type=arg.int_range(1, arg.MAX_BATCH), default=32)
    p.add_argument("--max-delay-ms", type=arg.finite_float(0, 60_000), default=2.0,
                   help="@serve.batch's batch_wait_timeout_s, in ms")
    p.add_argument("--max-body-bytes", type=arg.int_range(1024, 2**32),
                   default=10 * 1024 * 1024)
    p.add_argument("--device", type=arg.device, default="cpu")
    p.add_argument("--threads", type=arg.threads, default=None,
                   help="onnxruntime threads per replica (default or 0: all)")
    p.add_argument("--num-replicas", type=arg.int_range(1, 100_000), default=None)
    p.add_argument("--min-replicas", type=arg.int_range(0, 100_000), default=1,
                   help="autoscaling (with --max-replicas)")
    p.add_argument("--max-replicas", type=arg.int_range(1, 100_000), default=None,
                   help="autoscale between --min-replicas and this")
    p.add_argument("--target-ongoing-requests", type=arg.positive_float(1e6), default=None,
                   help="autoscaling target per replica")
    add_backend_flag(p)
    p.set_defaults(func=_serve)
