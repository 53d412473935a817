"""Ray adapters (``pip install 'dlinfer[ray]'``): offline batch inference with Ray Data,
online serving with Ray Serve.

- :class:`ImagePredictor` is a callable class for ``Dataset.map_batches``: each actor of
  the pool opens the model once and classifies batches of image paths, encoded bytes
  (``ray.data.read_binary_files``) or uint8 arrays (``ray.data.read_images``).  A row
  that fails (a corrupt file) gets its message in the ``error`` column; the rest of the
  batch and the job go on.
- :func:`predict_dataset` sizes the actor pool (and the GPUs per actor) for a device.
- :func:`build_app` makes a Ray Serve application: ``@serve.batch`` sized from the same
  :class:`~.server.ServeConfig` as ``dlinfer serve``, the same request bodies and the same
  JSON answers and errors.

Decoding goes through the one decoder (:mod:`dlinfer.preprocessing.decode`) and
inference through the Batcher's runner, which isolates a bad row in a batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray import serve

from ..checks import check_int, check_number
from ..errors import DlinferError, InputError
from ..preprocessing.decode import decode_bytes, decode_file
from ..runtime.providers import parse_device
from ..runtime.warmup import serving_model_options
from ..tasks.classifier import Classifier
from .runners import runner_for

__all__ = ["ClassifierDeployment", "DEFAULT_BATCH_SIZE", "IO_TASK_CPUS", "ImagePredictor",
           "build_app", "predict_dataset", "read_folder"]

# The columns a batch may carry its images in, in the order they are looked for:
# read_images gives "image", read_binary_files gives "bytes" (and "path" with
# include_paths=True), and a Dataset of file names has "path".
IMAGE_COLUMNS = ("image", "bytes", "path")

# Rows per map_batches call.  Ray spends tens of milliseconds on each call (scheduling,
# the object store), which a small model's batch of 64 does not repay: on the MNIST CNN
# two actors streamed 1.4x more images/s at 512 than at 64 (benchmarks/README.md).
DEFAULT_BATCH_SIZE = 512

# What a CPU actor leaves of its CPUs to Ray's read and write tasks (see predict_dataset).
IO_TASK_CPUS = 0.1

_CANDIDATE = pa.struct([("label", pa.string()), ("index", pa.int64()),
                        ("probability", pa.float64())])


class ImagePredictor:
    """``Dataset.map_batches(ImagePredictor, fn_constructor_kwargs={"model": path}, ...)``.

    Output columns: ``label``, ``index``, ``probability``, ``top_k`` (a list of
    ``{label, index, probability}``, best first) and ``error`` (null for a good row;
    a bad row has null label and probability, index -1).  An ``image`` or ``bytes``
    column is dropped; ``path`` and every other one-value-per-row column pass through.

    Args:
        model: path to an exported classifier (opened once per actor).
        column: where the images are; default the first of ``image``, ``bytes``, ``path``.
        top_k: candidates per row in ``top_k``.
        device, threads, backend: passed to :class:`~dlinfer.Classifier`; ``threads``
            also bounds how many files one actor decodes at once.
    """

    def __init__(self, model: str, *, column: str | None = None, top_k: int = 1,
                 device: str = "cpu", threads: int | None = None,
                 backend: str | None = None) -> None:
        self.top_k = check_int(top_k, "top_k", min=1)
        self.column = column
        self.clf = Classifier(model, device=device, threads=threads, backend=backend)
        if self.clf.preprocessing is None or len(self.clf.model.inputs) > 1:
            raise InputError(f"{model}: ImagePredictor classifies images with a single-input "
                             "image model")
        self.spec = self.clf.preprocessing
        self.runner = runner_for(self.clf)
        self.pool = ThreadPoolExecutor(threads or 1, thread_name_prefix="dlinfer-decode")

    def __call__(self, batch: Mapping[str, Any]) -> pa.Table:
        column = self.column or next((c for c in IMAGE_COLUMNS if c in batch), None)
        if column is None or column not in batch:
            raise InputError(f"no image column in the batch (columns {sorted(batch)}); name it "
                             f"with column=, or give one of {list(IMAGE_COLUMNS)}")
        values = list(batch[column])
        paths = batch.get("path") if column != "path" else values
        items: list[Any] = list(self.pool.map(self._pixels, values, _names(paths, len(values))))
        errors: dict[int, Exception] = {
            i: x for i, x in enumerate(items) if isinstance(x, Exception)}
        good = [i for i in range(len(items)) if i not in errors]
        results: list[Any] = [None] * len(items)
        if good:
            got, failed = self.runner.run([items[i] for i in good], [self.top_k] * len(good))
            for j, i in enumerate(good):
                if j in failed:
                    errors[i] = failed[j]
                else:
                    results[i] = got[j]
        return self._table(batch, column, results, errors)

    def _pixels(self, value: Any, where: str) -> Any:
        """uint8 pixels of one row, or the error that row fails with."""
        try:
            if isinstance(value, (bytes, bytearray, memoryview)):
                return decode_bytes(bytes(value), where, self.spec.draft_target,
                                    self.spec.max_image_bytes)[0]
            if isinstance(value, (str, os.PathLike)):
                return decode_file(value, self.spec.draft_target, self.spec.max_image_bytes)[0]
            return self.runner.check(np.asarray(value))
        except (DlinferError, ValueError, TypeError) as exc:
            return exc

    def _table(self, batch: Mapping[str, Any], column: str, results: list[Any],
               errors: dict[int, Exception]) -> pa.Table:
        n = len(results)
        ok = [r is not None for r in results]
        cols: dict[str, pa.Array] = {}
        for name, values in batch.items():
            arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
            # Pixels and encoded bytes are dropped; a path names its row, so it stays.
            if (name != column or name == "path") and arr.ndim == 1 and name not in _OUTPUTS:
                cols[name] = pa.array(list(arr))
        cols["label"] = pa.array([r.label if r else None for r in results], pa.string())
        cols["index"] = pa.array([r.index if r else -1 for r in results], pa.int64())
        cols["probability"] = pa.array([r.probability if r else None for r in results],
                                       pa.float64())
        cols["top_k"] = pa.array(
            [[c.__dict__ for c in r.top] if r else None for r in results],
            pa.list_(_CANDIDATE))
        cols["error"] = pa.array(
            [None if ok[i] else f"{type(errors[i]).__name__}: {errors[i]}" for i in range(n)],
            pa.string())
        return pa.table(cols)


_OUTPUTS = ("label", "index", "probability", "top_k", "error")


def _names(paths: Any, n: int) -> list[str]:
    """What each row is called in an error message: its path when the batch has one."""
    if paths is None:
        return [f"row {i} of the batch" for i in range(n)]
    return [str(p) for p in paths]


def predict_dataset(ds: ray.data.Dataset, model: str, *, batch_size: int = DEFAULT_BATCH_SIZE,
                    concurrency: int | tuple[int, int] | None = None, device: str = "cpu",
                    threads: int | None = None, top_k: int = 1,
                    column: str | None = None, io_cpus: float | None = None,
                    backend: str | None = None) -> ray.data.Dataset:
    """``ds`` classified by an actor pool of :class:`ImagePredictor` (lazy, like map_batches).

    On CPU each actor holds ``threads`` CPUs (default 1) and runs onnxruntime on as many
    threads; on a CUDA device each actor holds one GPU (and one CPU).  The pool never
    takes the CPUs that Ray's read and write tasks need: an actor pool that fills the
    cluster leaves a read task asking a whole CPU (``read_binary_files``' default)
    waiting forever.  ``io_cpus`` is what one such task asks; by default the largest
    request among ``ds``'s own tasks, and at least one CPU, for a write such as
    ``write_parquet`` (Ray's default task size).  The default pool is as many actors as
    fit beside it (at least one), and a pool that cannot fit beside it raises
    :class:`~dlinfer.InputError` at once instead of hanging.
    """
    check_int(batch_size, "batch_size", min=1)
    kind = parse_device(device).kind
    on_gpu = kind in ("cuda", "tensorrt")
    cpus = check_int(threads, "threads", min=1) if threads is not None else 1
    actor_cpus = 1.0 if on_gpu else cpus - IO_TASK_CPUS
    reserve = _io_cpus(ds) if io_cpus is None else check_number(io_cpus, "io_cpus", min=0)
    resources = ray.cluster_resources()
    total_cpus = float(resources.get("CPU", 0))
    fits = max(0, int((total_cpus - reserve + 1e-9) // actor_cpus))
    if concurrency is None:
        if on_gpu:
            concurrency = int(resources.get("GPU", 0))
            if concurrency < 1:
                raise InputError(f"device={device!r} needs GPUs, and the Ray cluster has none")
        else:
            concurrency = max(1, fits)
    smallest = concurrency[0] if isinstance(concurrency, tuple) else concurrency
    if isinstance(smallest, int) and smallest > fits:
        raise InputError(
            f"{smallest} actor(s) of {actor_cpus:g} CPU each would leave less than the "
            f"{reserve:g} CPU that Ray's read and write tasks ask on a cluster of "
            f"{total_cpus:g} CPUs, and the job would wait forever: use concurrency <= "
            f"{max(fits, 1)}, fewer threads per actor, or read with "
            f"ray_remote_args={{'num_cpus': {IO_TASK_CPUS}}} and pass io_cpus={IO_TASK_CPUS}")
    if isinstance(concurrency, tuple):
        pool = ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    else:
        pool = ray.data.ActorPoolStrategy(size=check_int(concurrency, "concurrency", min=1))
    return ds.map_batches(
        ImagePredictor,
        # Ray gives each actor its GPU as device 0 (CUDA_VISIBLE_DEVICES).
        fn_constructor_kwargs={"model": os.fspath(model), "column": column, "top_k": top_k,
                               "device": kind if on_gpu else device, "threads": cpus,
                               "backend": backend},
        batch_size=batch_size, batch_format="numpy", compute=pool,
        num_cpus=actor_cpus, num_gpus=1 if on_gpu else 0,
    )


def _io_cpus(ds: ray.data.Dataset) -> float:
    """The most CPUs one task of ``ds``'s plan asks (Ray's default: 1), and at least 1 for
    the write that usually follows.  Reads the logical plan; an operator whose request
    cannot be read counts as Ray's default."""
    largest = 1.0
    try:
        stack = [ds._logical_plan.dag]
    except AttributeError:  # another Ray version's internals: assume defaults
        return largest
    while stack:
        op = stack.pop()
        args = getattr(op, "ray_remote_args", None) or getattr(op, "_ray_remote_args", None)
        cpus = args.get("num_cpus") if isinstance(args, Mapping) else None
        if isinstance(cpus, (int, float)) and not isinstance(cpus, bool):
            largest = max(largest, float(cpus))
        stack.extend(getattr(op, "input_dependencies", ()))
    return largest


def read_folder(paths: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
                read: str = "paths") -> ray.data.Dataset:
    """A Dataset of image files: their ``path`` (actors read the files, which must be
    reachable from every node) or ``bytes`` and ``path`` (Ray's read tasks read them and
    ship the bytes through the object store)."""
    # About one block per batch: many small blocks cost a scheduling round each.
    blocks = max(1, -(-len(paths) // batch_size))
    if read == "bytes":
        return ray.data.read_binary_files(paths, include_paths=True, num_cpus=IO_TASK_CPUS,
                                          override_num_blocks=blocks)
    if read != "paths":
        raise InputError(f"read must be 'paths' or 'bytes', got {read!r}")
    return ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)


# -- Ray Serve ---------------------------------------------------------------------------------

@serve.deployment
class ClassifierDeployment:
    """One classifier per replica behind ``@serve.batch``, answering like ``dlinfer serve``.

    ``POST`` (any path under the route prefix, ``/v1/models/NAME/predict`` included)
    takes image bytes, multipart files or JSON pixels and answers
    ``{"model": name, "predictions": [...]}``; ``GET`` answers the model's metadata with
    this replica's batch counts.  Errors are ``dlinfer serve``'s JSON and statuses.
    """

    def __init__(self, model: str, config: dict[str, Any]) -> None:
        from concurrent.futures import ThreadPoolExecutor as Pool

        from .server import ServeConfig, _model_path
        from .uploads import BodyReader

        self.config = ServeConfig(models=[model], **config)
        self.config.check()
        self.name = self.config.resolved_names()[0]
        threads = self.config.threads
        self.clf = Classifier(_model_path(model), device=self.config.device, threads=threads,
                              **serving_model_options(_model_path(model), self.config.backend,
                                                      self.config.device, threads, None, None,
                                                      self.config.max_batch_size))
        self.runner = runner_for(self.clf)
        # The same settings as dlinfer serve's Batcher: the one source for both.
        self.predict_batch.set_max_batch_size(self.config.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(self.config.max_delay_ms / 1000.0)
        self.bodies = BodyReader(self.config.max_body_bytes, self.config.body_timeout_s)
        self.pool = Pool(self.config.decode_threads or min(4, os.cpu_count() or 1),
                         thread_name_prefix="dlinfer-decode")
        self.batches = 0
        self.batched = 0

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def predict_batch(self, requests: list[tuple[Any, int]]) -> list[Any]:
        """Per request its Prediction, or the exception it alone failed with."""
        self.batches += 1
        self.batched += len(requests)
        results, errors = await asyncio.to_thread(
            self.runner.run, [x for x, _ in requests], [k for _, k in requests])
        return [errors.get(i, r) for i, r in enumerate(results)]

    async def __call__(self, request: Any) -> Any:
        from .responses import HTTPError, error_response, json_response
        from .uploads import images_from

        try:
            # dlinfer serve's parser for its query parameters (400 bad_parameter).
            from .server import query_param

            if request.method == "GET":
                return json_response(self.metadata())
            if request.method != "POST":
                raise HTTPError(405, "method_not_allowed", "use POST to predict, GET for metadata")
            top_k = query_param(request, "top_k", int, 1, 2**31 - 1, default=1)
            body = await self.bodies.read(request)
            images = await images_from(request, body, self.clf.preprocessing, self.pool)
            checked = [self.runner.check(x) for x in images]
            preds = await asyncio.gather(*(self.predict_batch((x, top_k)) for x in checked))
            failed = next((p for p in preds if isinstance(p, Exception)), None)
            if failed is not None:
                raise failed
            return json_response({"model": self.name,
                                  "predictions": [p.to_dict() for p in preds]})
        except Exception as exc:
            return error_response(exc)

    def metadata(self) -> dict[str, Any]:
        spec = self.clf.spec
        return {
            "name": self.name, "path": self.clf.model.path, "task": spec.task,
            "labels": list(spec.labels), "device": self.clf.model.device,
            "max_batch_size": self.config.max_batch_size,
            "batch_wait_timeout_s": self.config.max_delay_ms / 1000.0,
            "replica_batches": self.batches,
            "replica_mean_batch_size": self.batched / self.batches if self.batches else 0.0,
        }


def build_app(model: str, config: Any = None, *, num_replicas: int | None = None,
              autoscaling_config: Mapping[str, Any] | None = None,
              ray_actor_options: Mapping[str, Any] | None = None,
              max_ongoing_requests: int | None = None) -> Any:
    """A Ray Serve application serving ``model`` (a path or ``NAME=PATH``).

    ``config`` is a :class:`~.server.ServeConfig` (its ``models`` are ignored) whose
    ``max_batch_size`` and ``max_delay_ms`` become ``@serve.batch``'s
    ``max_batch_size`` and ``batch_wait_timeout_s``.  ``num_replicas``,
    ``autoscaling_config`` (``min_replicas``, ``max_replicas``,
    ``target_ongoing_requests``, ...) and ``ray_actor_options`` pass through to
    ``Deployment.options``; a CUDA device asks one GPU per replica unless
    ``ray_actor_options`` says otherwise.  Run it with ``serve.run(app)``.
    """
    from .server import ServeConfig

    config = dataclasses.replace(config or ServeConfig(models=[]), models=[model])
    config.check()
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "models"}
    options: dict[str, Any] = {"name": config.resolved_names()[0]}
    if num_replicas is not None and autoscaling_config is not None:
        raise InputError("give num_replicas or autoscaling_config, not both")
    if num_replicas is not None:
        options["num_replicas"] = check_int(num_replicas, "num_replicas", min=1)
    if autoscaling_config is not None:
        options["autoscaling_config"] = dict(autoscaling_config)
    actor = dict(ray_actor_options or {})
    if parse_device(config.device).kind in ("cuda", "tensorrt"):
        actor.setdefault("num_gpus", 1)
    if actor:
        options["ray_actor_options"] = actor
    # A replica holds at most this many requests; it must exceed the batch size, or
    # batches could never fill (Ray's default is 5).
    options["max_ongoing_requests"] = (max_ongoing_requests if max_ongoing_requests is not None
                                       else max(2 * config.max_batch_size, 32))
    return ClassifierDeployment.options(**options).bind(model, settings)
