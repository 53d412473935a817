"""How a compiled OpenVINO model runs under dlinfer: one infer request per thread, and a
model compiled for each input shape that keeps coming back.

An ``InferRequest`` holds its input and output tensors, so two threads sharing one would
read each other's answers; ``CompiledModel`` creates them safely from any thread.  A run
started without waiting (:meth:`OpenVINORunner.start`, which the Batcher uses to keep
batches in flight) takes a request of its own from a pool and gives it back.  Inputs
are shared with OpenVINO, not copied (dlinfer has already checked that they are
C-contiguous and of the input's dtype); outputs are copied out of the request, which
the thread's next call overwrites, or written straight into the caller's ``out``.

OpenVINO runs a model compiled for exact input shapes faster than one compiled for the
file's dynamic batch axis: 1.03-1.23x on mnist_cnn, vgg16_transfer, MobileNetV2 and
ResNet50 at batch 1 and 32 (bf16, five interleaved rounds on the 2-core VM).  So the
second call with a shape compiles that shape in a background thread, and calls use it
once it is ready; until then, and for shapes seen once, the dynamic model runs.  At most
:data:`STATIC_SHAPES` shapes get their own model (each holds its own copy of the
weights, repacked): a Batcher's sizes 1..N leave the rarer ones dynamic.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

import numpy as np

from ....errors import InferenceError, ModelLoadError
from .. import import_openvino
from .loader import Compiler, port_named

__all__ = ["STATIC_AFTER", "STATIC_SHAPES", "OpenVINORunner", "StartedRun", "graph_runner"]

logger = logging.getLogger("dlinfer")

STATIC_AFTER = 2  # the call with a shape that starts compiling it
STATIC_SHAPES = 4  # shapes with a model of their own, at most
_SEEN_LIMIT = 1024  # shapes counted before the count starts over (unbounded traffic)

# Infer requests started (OpenVINORunner.start) and not waited for yet, in any model,
# and the background compiles under way.
_running: set[Any] = set()
_compiles: set[threading.Thread] = set()
_running_lock = threading.Lock()
_exiting = False


@atexit.register
def _wait_at_exit() -> None:
    """At interpreter exit, wait for the runs and compiles still under way, and start no
    more.  A process that ends while OpenVINO works aborts ("terminate called without an
    active exception", exit status 134).  A compile is no daemon, but one that a Batcher
    stopping at exit started came after Python had waited for its threads."""
    global _exiting
    with _running_lock:
        _exiting = True
        requests, compiles = list(_running), list(_compiles)
    for request in requests:
        try:
            request.wait()
        except Exception:  # noqa: BLE001 - its own result() reports its failure
            pass
    for thread in compiles:
        thread.join()


def graph_runner(graph: bytes, inputs: list[str], outputs: list[str], threads: int,
                 precision: str, label: str) -> OpenVINORunner:
    """An OpenVINO stand-in for an onnxruntime session over an ONNX graph that dlinfer built
    (dlinfer.explain's forward + backward pass): ``run(None, feed)`` returns ``outputs``
    in that order.  ``label`` names it in errors and logs (the model's path)."""
    compiler = Compiler(graph, threads, precision)
    ports = [port_named(compiler.dynamic.outputs, name) for name in outputs]
    missing = [name for name, port in zip(outputs, ports) if port is None]
    if missing:
        raise ModelLoadError(f"OpenVINO does not expose {missing} of the graph built for {label}")
    dtypes = [np.dtype(port.get_element_type().to_dtype()) for port in ports]
    return OpenVINORunner(compiler, label, inputs, outputs, ports, dtypes)


class OpenVINORunner:
    def __init__(self, compiler: Compiler, path: str, input_names: list[str],
                 output_names: list[str], output_ports: list[Any],
                 output_dtypes: list[np.dtype]) -> None:
        self.compiled = compiler.dynamic
        self.precision = compiler.precision  # what the compiled model runs in
        self.path = path
        self._compiler = compiler
        self._input_names = input_names
        self._output_names = output_names
        self._output_dtypes = output_dtypes
        self._dynamic = (compiler.dynamic, output_ports)
        self._static: dict[tuple, tuple[Any, list[Any]]] = {}
        self._seen: dict[tuple, int] = {}
        self._pending: dict[tuple, threading.Thread] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._idle: dict[int, list[tuple[Any, Any]]] = {}  # started runs' requests, returned
        self._tensor = import_openvino().Tensor

    # -- which compiled model runs a feed ------------------------------------------------

    def _pick(self, feed: dict[str, np.ndarray]) -> tuple[Any, list[Any]]:
        key = tuple(feed[n].shape for n in self._input_names)
        ready = self._static.get(key)
        if ready is not None:
            return ready
        with self._lock:
            if len(self._seen) > _SEEN_LIMIT:
                self._seen.clear()
            count = self._seen[key] = self._seen.get(key, 0) + 1
            if (count == STATIC_AFTER and key not in self._pending and not _exiting
                    and len(self._static) + len(self._pending) < STATIC_SHAPES):
                # Not a daemon: Python waits for it at exit.  A daemon thread still
                # inside compile_model when the interpreter ends aborts the process
                # ("terminate called without an active exception", exit status 134):
                # a script or `dlinfer verify` running one shape twice and ending.
                thread = threading.Thread(target=self._compile_static, args=(key,),
                                          name="dlinfer-openvino-compile", daemon=False)
                self._pending[key] = thread
                with _running_lock:
                    _compiles.add(thread)
                thread.start()
        return self._dynamic

    def _compile_static(self, key: tuple) -> None:
        try:
            compiled = self._compiler.static(dict(zip(self._input_names, key)))
            ports = [port_named(compiled.outputs, n) for n in self._output_names]
            entry = (compiled, ports) if all(p is not None for p in ports) else self._dynamic
        except Exception as exc:  # noqa: BLE001 - the dynamic model still runs the shape
            logger.info("%s: OpenVINO could not compile shapes %s (%s); they run on the "
                        "dynamic model", self.path, key, exc)
            entry = self._dynamic
        with self._lock:
            self._static[key] = entry
            self._pending.pop(key, None)
        with _running_lock:
            _compiles.discard(threading.current_thread())

    def wait_for_compiles(self) -> None:
        """Wait for the background compiles under way (tests, benchmarks)."""
        with self._lock:
            threads = list(self._pending.values())
        for thread in threads:
            thread.join()

    # -- running -----------------------------------------------------------------------

    def _input_ports(self, compiled: Any) -> list[tuple[Any, np.dtype]] | None:
        """Each input's port and element dtype, in dlinfer's order; None if one is missing."""
        found = []
        for name in self._input_names:
            port = port_named(compiled.inputs, name)
            try:
                dtype = np.dtype(port.get_element_type().to_dtype())
            except Exception:  # noqa: BLE001 - no port, or a type NumPy lacks (bf16)
                return None
            if dtype.kind in "OSU":  # strings: OpenVINO copies them its own way
                return None
            found.append((port, dtype))
        return found

    def _infer(self, feed: dict[str, np.ndarray]) -> tuple[Any, list[Any]]:
        # OpenVINO's untyped errors become InferenceError in Model, as onnxruntime's do.
        compiled, ports = self._pick(feed)
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        entry = requests.get(id(compiled))
        if entry is None:
            entry = requests[id(compiled)] = (compiled.create_infer_request(),
                                              self._input_ports(compiled))
        request, inputs = entry
        if inputs is None:  # ports dlinfer cannot match: OpenVINO's own dispatch
            request.infer(feed, share_inputs=True, share_outputs=True)
            return request, ports
        # the copies _set_inputs made (read-only arrays) back the request's tensors: they
        # must outlive infer(), or it reads freed memory (np.from_dlpack's arrays did)
        arrays = self._set_inputs(request, inputs, feed)
        request.infer(share_outputs=True)  # views: run() copies them out before returning
        del arrays
        return request, ports

    def _set_inputs(self, request: Any, inputs: list[tuple[Any, np.dtype]],
                    feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # Each input becomes a Tensor over the array's own memory, set on its port.
        # InferRequest.infer(feed, share_inputs=True) shares the same way, but its
        # Python dispatch (each input's tensor looked up by name, per call) made Model.run
        # cost 19.0 us a call on a one-node model, 14.4 us this way.  A read-only array
        # (np.frombuffer) cannot back a Tensor: it is copied, as OpenVINO's dispatch does.
        # Returns the arrays the request reads: a run started without waiting keeps them.
        arrays = []
        for (port, dtype), name in zip(inputs, self._input_names):
            x = feed[name]
            if x.dtype != dtype or not x.flags.writeable:
                x = x.astype(dtype)  # a copy (dlinfer's checks make dtype equal already)
            request.set_tensor(port, self._tensor(x, shared_memory=True))
            arrays.append(x)
        return arrays

    def run(self, output_names: Any, feed: dict[str, np.ndarray], run_options: Any = None
            ) -> list[np.ndarray]:
        """Like onnxruntime's C-level ``run``: every output, in the model's order."""
        request, ports = self._infer(feed)
        return [np.array(request.get_tensor(port).data, dtype=dtype, copy=True)
                for port, dtype in zip(ports, self._output_dtypes)]

    def run_into(self, feed: dict[str, np.ndarray], arrays: list[np.ndarray | None]
                 ) -> list[np.ndarray]:
        """Run and write each output into ``arrays`` (None: a fresh array)."""
        request, ports = self._infer(feed)
        results = []
        for port, target, dtype in zip(ports, arrays, self._output_dtypes):
            data = request.get_tensor(port).data
            if target is None:
                results.append(np.array(data, dtype=dtype, copy=True))
            else:
                np.copyto(target, data, casting="unsafe")
                results.append(target)
        return results

    # -- runs started without waiting (a Batcher keeps several in flight) -----------------

    @property
    def in_flight(self) -> int:
        """How many started runs keep this model busy: one per request OpenVINO runs at
        once (``OPTIMAL_NUMBER_OF_INFER_REQUESTS``: 1 under the LATENCY hint dlinfer
        compiles with, one stream), and one more, ready with its inputs set, so the stream
        starts the next batch the moment one ends instead of waiting for Python."""
        try:
            running = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except Exception:  # noqa: BLE001 - a plugin without the property: one stream
            running = 1
        return max(1, running) + 1

    def start(self, feed: dict[str, np.ndarray]) -> StartedRun:
        """Start a run of ``feed`` (checked by Model) and return at once.

        Each started run has an infer request of its own, taken from those earlier
        started runs gave back, so runs in flight and ``run`` calls (per-thread requests)
        never share one.  ``feed``'s arrays must not change until the result is taken.
        """
        compiled, ports = self._pick(feed)
        key = id(compiled)
        with self._lock:
            idle = self._idle.get(key)
            entry = idle.pop() if idle else None
        if entry is None:
            entry = (compiled.create_infer_request(), self._input_ports(compiled))
        request, inputs = entry
        try:
            if inputs is None:  # ports dlinfer cannot match: OpenVINO's own dispatch
                arrays: Any = feed
                with _running_lock:
                    _start_counted(request)
                    request.start_async(feed, share_inputs=True)
            else:
                arrays = self._set_inputs(request, inputs, feed)
                with _running_lock:
                    _start_counted(request)
                    request.start_async()
        except BaseException:
            _running.discard(request)
            self._give_back(key, entry)  # not started: free for the next run
            raise
        return StartedRun(self, key, entry, ports, arrays)

    def _give_back(self, key: int, entry: tuple[Any, Any]) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(entry)


def _start_counted(request: Any) -> None:
    """Count ``request`` as running, before it starts (called holding _running_lock)."""
    if _exiting:
        raise RuntimeError("the interpreter is exiting: no more runs start")
    _running.add(request)


class StartedRun:
    """A run :meth:`OpenVINORunner.start` started; :meth:`result` waits for it, once.

    A failed run fails only its own result: its infer request starts afresh next time.
    (OpenVINO's ``AsyncInferQueue`` pools requests the same way, but it calls no callback
    for a run that fails and raises that run's error again from every later
    ``start_async`` and ``wait_all``: one bad batch would fail every batch after it.)
    """

    __slots__ = ("_runner", "_key", "_entry", "_ports", "_arrays")

    def __init__(self, runner: OpenVINORunner, key: int, entry: tuple[Any, Any],
                 ports: list[Any], arrays: Any) -> None:
        self._runner = runner
        self._key = key
        self._entry: tuple[Any, Any] | None = entry
        self._ports = ports
        self._arrays = arrays  # the input memory the request reads, alive until it ends

    def result(self) -> Any:
        """What ``Model.run`` returns (the only output's array, or a dict of every
        output); :class:`~dlinfer.InferenceError` if OpenVINO failed."""
        entry, self._entry = self._entry, None
        if entry is None:
            raise RuntimeError("StartedRun.result() was already called")
        runner = self._runner
        request = entry[0]
        try:
            request.wait()  # releases the GIL; raises the run's own error
            results = [np.array(request.get_tensor(port).data, dtype=dtype, copy=True)
                       for port, dtype in zip(self._ports, runner._output_dtypes)]
        except Exception as exc:  # OpenVINO raises untyped RuntimeErrors
            raise InferenceError(f"openvino failed on {runner.path}: {exc}") from exc
        finally:
            _running.discard(request)
            self._arrays = None
            runner._give_back(self._key, entry)
        if len(results) == 1:
            return results[0]
        return dict(zip(runner._output_names, results))
