"""Gradients of an ONNX model, without the framework it was trained in.

``gradient(model, x, index=3)`` is d output[3] / d input for every sample of ``x``.
The backward pass is built once per (model, output, wrt, logits) as more ONNX nodes in
the model's own graph (:mod:`.backward`) and run by onnxruntime on the model's device,
so a gradient costs about two forward passes.  Building needs the ``onnx`` package
(``pip install 'dlinfer[reference]'``); running needs only onnxruntime.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._optional import import_optional
from ..errors import InferenceError, InputError, InputTypeError, ModelLoadError
from ..runtime.model import Model
from .backward import INDEX, build
from .fold import fold_input_scaling

__all__ = ["PRECISIONS", "check_precision", "gradient", "value_and_gradient"]

_CPU, _CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
logger = logging.getLogger("dlinfer")
PRECISIONS = ("float32", "bf16x3")  # of the products in the forward and backward pass


@dataclass(frozen=True)
class _Compiled:
    session: Any  # runs the forward + backward graph: an onnxruntime.InferenceSession, or
    # on backend="openvino" an OpenVINORunner, with the same run(None, feed)
    output: str  # the model output that `index` picks from
    target: str  # the tensor differentiated: `output`, or the logits under its Softmax
    outputs: tuple[str, ...]  # every model output, returned by value_and_gradient
    wrt: tuple[str, ...]


_lock = threading.Lock()
_built: weakref.WeakKeyDictionary[Any, dict[tuple, _Compiled]] = weakref.WeakKeyDictionary()
_opened: dict[tuple, Model] = {}  # path, mtime, size -> Model, for gradient(path, ...)


def gradient(model: Model | str | os.PathLike[str], inputs: Any, *, output: str | None = None,
             index: Any, wrt: str | Sequence[str] | None = None,
             logits: bool = True, precision: str = "float32") -> np.ndarray | list[np.ndarray]:
    """d ``output[index]`` / d ``wrt`` for each sample, shaped like ``wrt`` (batch included).

    Args:
        model: a :class:`~dlinfer.Model` (its device runs the backward pass too) or a
            path to an ``.onnx`` file (opened on the CPU).
        inputs: an array, or a dict by input name, as for ``Model.run``.
        output: the output to differentiate (default: the model's first).
        index: which element of each sample's output: None for the largest one (the
            predicted class, found in the same onnxruntime run), an int (a class index; for
            outputs with more than one axis per sample, the flat position in the
            sample), a tuple (one position per axis of the sample), or a list/array with
            one int (or one tuple) per sample: each sample its own target class.
            Negative indices count from the end.
        wrt: the tensor to differentiate with respect to: None for the model's (first)
            input, an ONNX tensor name (any intermediate), or a list of names.
        logits: where ``output`` comes out of a Softmax, differentiate the Softmax's
            input (the pre-softmax class score, as Grad-CAM uses) instead; False keeps
            the probability.  Outputs without a Softmax are differentiated as they are.
        precision: ``"float32"``, or ``"bf16x3"``: where OpenVINO runs the model on a CPU
            with AMX, each float32 convolution and dense product as three bfloat16
            products (about 1e-5 of the products' sum off, against 1e-7 in float32; in
            half the time on VGG16), and float32 everywhere else.  See docs/explain.md.

    The samples of a batch must not interact (true of inference graphs: batch
    normalization uses its stored statistics), since one backward pass seeds every
    sample's element at once.

    Raises:
        UnsupportedGradientError: an op between ``wrt`` and ``output`` has no backward
            rule; it names the op and the node.
        InputError: an unknown tensor name, an index out of range, or ``output`` not
            depending on ``wrt``.
        MissingExtraError: the ``onnx`` package (the ``reference`` extra) is missing.
    """
    return value_and_gradient(model, inputs, output=output, index=index, wrt=wrt,
                              logits=logits, precision=precision)[1]


def value_and_gradient(model: Model | str | os.PathLike[str], inputs: Any, *,
                       output: str | None = None, index: Any,
                       wrt: str | Sequence[str] | None = None, logits: bool = True,
                       summed_over: Sequence[int] | None = None, precision: str = "float32",
                       ) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """``(wrt_values, gradients, outputs)`` from one forward and backward pass.

    ``wrt_values`` and ``gradients`` are arrays when ``wrt`` is one name (or None), lists
    in ``wrt``'s order when it is a list; ``outputs`` maps every model output name to its
    value (the probabilities, not the logits).  Grad-CAM takes a layer's activation and
    its gradient from here.  The arguments are those of :func:`gradient`, and
    ``summed_over``: axes of ``wrt`` (the batch axis excluded) to sum each gradient over,
    kept with size 1; Grad-CAM's channel weights need only the spatial sum, and where the
    layer feeds a pooling, that sum comes without the pooling's backward pass.
    """
    opened = _open(model)
    names = ([opened.inputs[0].name] if wrt is None else [wrt] if isinstance(wrt, str)
             else list(wrt) if isinstance(wrt, (list, tuple)) else [])
    if not names or not all(isinstance(n, str) for n in names):
        raise InputTypeError(f"wrt must be None, a tensor name or a list of names, not {wrt!r}")
    summed = None if summed_over is None else tuple(int(a) for a in summed_over)
    if summed is not None and (not summed or 0 in summed):
        raise InputError(f"summed_over must name axes after the batch axis, not {summed_over!r}")
    check_precision(precision)
    compiled = _compile(opened, output, tuple(names), bool(logits), index is None, summed,
                        precision)
    feed = opened._feed(inputs)
    batch = _batch(feed)
    if index is not None:
        feed[INDEX] = _flat_index(index, batch, _sample_shape(opened, compiled, inputs))
    try:
        results = compiled.session.run(None, feed)
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise InferenceError(f"dlinfer.explain: the backward pass failed: {exc}") from exc
    count = len(compiled.outputs)
    values = results[count:count + len(names)]
    grads = results[count + len(names):]
    outputs = dict(zip(compiled.outputs, results[:count]))
    if wrt is None or isinstance(wrt, str):
        return values[0], grads[0], outputs
    return values, grads, outputs


def check_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an InputError."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return precision


def _open(model: Any) -> Model:
    if isinstance(model, Model):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise InputTypeError(f"model must be a dlinfer.Model or a path, not {type(model).__name__}")
    path = os.fspath(model)
    stat = os.stat(path) if os.path.isfile(path) else None
    key = (os.path.realpath(path), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)
    with _lock:
        if key not in _opened:
            if len(_opened) >= 8:
                _opened.pop(next(iter(_opened)))
            _opened[key] = Model(path)
        return _opened[key]


def _compile(model: Model, output: str | None, wrt: tuple[str, ...], logits: bool,
             predicted: bool, summed: tuple[int, ...] | None, precision: str) -> _Compiled:
    key = (output, wrt, logits, predicted, summed, precision)
    with _lock:
        cached = _built.setdefault(model, {}).get(key)
    if cached is not None:
        return cached
    onnx = import_optional("onnx", "reference", "dlinfer.explain (building the backward pass)")
    proto = onnx.load(model.path)
    outputs = tuple(o.name for o in proto.graph.output)
    output = outputs[0] if output is None else output
    if output not in outputs:
        raise InputError(f"{model.path} has no output {output!r}; its outputs: {list(outputs)}")
    target = _logits_of(proto.graph, output) if logits else output
    fold_input_scaling(proto.graph, keep={output, target, *wrt})
    graph, _ = build(proto, target, wrt, outputs, argmax_of=output if predicted else None,
                     summed_over=summed)
    session = _session(model, graph, precision)
    compiled = _Compiled(session, output, target, outputs, wrt)
    with _lock:
        _built.setdefault(model, {})[key] = compiled
    return compiled


def _logits_of(graph: Any, output: str) -> str:
    """The Softmax input under ``output`` (through Identity nodes), else ``output``."""
    producers = {o: n for n in graph.node for o in n.output}
    name = output
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    node = producers.get(name)
    return node.input[0] if node is not None and node.op_type == "Softmax" else output


def _session(model: Model, proto: Any, precision: str) -> Any:
    """What runs the built graph: on the model's backend and device."""
    graph = proto.SerializeToString()
    if model.backend == "openvino":
        try:
            return _openvino_session(model, proto, graph, precision)
        except ModelLoadError as exc:  # onnxruntime, always installed, runs every op built
            logger.warning("dlinfer.explain: %s: OpenVINO cannot run the backward pass (%s); "
                           "onnxruntime runs it", model.path, exc)
    return _onnxruntime_session(model, graph)


def _openvino_session(model: Model, proto: Any, graph: bytes, precision: str) -> Any:
    """The built graph on OpenVINO's CPU plugin, in float32, or for ``"bf16x3"`` its
    products split in three bfloat16 ones where the CPU has AMX (:mod:`.bf16x3
    <dlinfer.runtime.backends.openvino.bf16x3>`)."""
    from ..runtime.backends.openvino import bf16x3, runner

    initialized = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initialized]
    outputs = [o.name for o in proto.graph.output]
    chosen = bf16x3.float32_precision() if precision == "bf16x3" else "f32"
    session = runner.graph_runner(graph, inputs, outputs, model.threads, chosen, model.path)
    logger.info("dlinfer.explain: %s: the backward pass runs on OpenVINO, its products in %s",
                model.path, session.precision)
    return session


def _onnxruntime_session(model: Model, graph: bytes) -> Any:
    """An onnxruntime session for the built graph, on the model's device."""
    import onnxruntime as ort

    from ..runtime.session import session_options

    try:
        active = list(model.session.get_providers())
        options = model.session.get_provider_options()
    except Exception:  # a Model of another backend has no onnxruntime session
        active, options = [_CPU], {}
    # TensorRT would build engines for the whole backward graph: CUDA runs it instead.
    providers = [p for p in active if p in (_CUDA, _CPU)] or [_CPU]
    if "TensorrtExecutionProvider" in active and _CUDA not in providers:
        providers.insert(0, _CUDA)
    if _CPU not in providers:
        providers.append(_CPU)
    try:
        # No spinning: an explanation is one run, then Python work (the map, the next
        # image's preprocessing), and spinning threads would only take those cores.
        sess_options = session_options(model.threads, spinning=False)
        # Every optimization (onnxruntime's default, said here since it matters): without
        # the blocked-layout (NCHWc) convolutions, small_convnet's batch of 32 took
        # 152 ms of CPU instead of 104.
        sess_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(graph, sess_options=sess_options,
                                    providers=providers,
                                    provider_options=[options.get(p, {}) for p in providers])
    except Exception as exc:
        raise InferenceError(f"dlinfer.explain: onnxruntime refused the backward graph of "
                             f"{model.path}: {exc}") from exc


def _batch(feed: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feed.values()))
    if first.ndim == 0:
        raise InputError("gradients need a batch axis on the input")
    return int(first.shape[0])


def _sample_shape(model: Model, compiled: _Compiled, inputs: Any) -> tuple[int, ...]:
    """The shape of one sample of the output ``index`` refers to."""
    info = next((o for o in model.outputs if o.name == compiled.output), None)
    shape = None if info is None or info.shape is None else info.shape[1:]
    if shape is None or any(d is None for d in shape):  # dynamic: ask the forward pass
        result = model.run(inputs)
        value = result[compiled.output] if isinstance(result, dict) else result
        shape = np.shape(value)[1:]
    return tuple(int(d) for d in shape)


def _flat_index(index: Any, batch: int, shape: tuple[int, ...]) -> np.ndarray:
    """Each sample's flat position in its output, as int64 [batch]."""
    size = int(np.prod(shape))
    if isinstance(index, (bool, np.bool_)):
        raise InputTypeError(f"index must be an int, a tuple or a per-sample list, not {index!r}")
    if isinstance(index, tuple):
        rows = np.asarray([index] * batch)
    else:
        rows = np.asarray(index)
        if rows.ndim == 0:
            rows = np.full(batch, rows)
        elif len(rows) != batch:
            raise InputError(f"index has {len(rows)} entries for a batch of {batch}")
    if rows.dtype.kind not in "iu" or rows.ndim > 2:
        raise InputTypeError(f"index must hold integers, not {rows.dtype} (index={index!r})")
    if rows.ndim == 1 or rows.shape[1] == 1:
        flat = rows.reshape(batch).astype(np.int64)
        bad = (flat < -size) | (flat >= size)
        if bad.any():
            raise InputError(f"index {int(flat[bad][0])} is out of range for an output of "
                             f"{size} elements per sample")
        return np.where(flat < 0, flat + size, flat)
    if rows.shape[1] != len(shape):
        raise InputError(f"index has {rows.shape[1]} positions for an output of shape "
                         f"{shape} per sample")
    dims = np.asarray(shape)
    if ((rows < -dims) | (rows >= dims)).any():
        raise InputError(f"index {index!r} is out of range for an output of shape {shape}")
    return np.ravel_multi_index(tuple(np.where(rows < 0, rows + dims, rows).T), shape).astype(
        np.int64)
