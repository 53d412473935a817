"""The exporter's self-check: the ONNX file is the Keras model, or it is not written.

After conversion the graph must take exactly the model's inputs and give exactly
its outputs, onnxruntime must load and run it, and on sample inputs (the user's,
or drawn from the spec) every output must agree with Keras under the project's
one closeness rule (:mod:`dlinfer.verification.compare`).  What was measured goes
into the spec's ``parity``: with a labelled folder, also the top-1 accuracy under the
spec.

Agreement proves nothing when the outputs do not depend on the inputs (an untrained
model whose every answer is 1/3): that is said, and with ``strict`` refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from ..errors import ExportError
from ..spec import InputSpec
from ..verification.compare import mismatch
from ..verification.labelled import sample_count_note
from ..verification.samples import load_samples
from ._tf import quiet
from .accuracy import Head, labelled_accuracy
from .convert import Traced

__all__ = ["check_io", "check_parity", "input_independent", "session_for"]

logger = logging.getLogger("dlinfer")

# Outputs that vary across different samples by no more than this share of their scale
# are taken as constant: float32 noise alone moves a real model's outputs far more.
_CONSTANT_SHARE = 1e-6


def check_io(proto: onnx.ModelProto, traced: Traced, model_name: str) -> None:
    """The graph's inputs and outputs are exactly the model's, by name and order."""
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    graph_outputs = [o.name for o in proto.graph.output]
    problems = []
    for what, got, want in (("input", graph_inputs, traced.input_names),
                            ("output", graph_outputs, traced.output_names)):
        extra = [n for n in got if n not in want]
        missing = [n for n in want if n not in got]
        if extra:
            problems.append(f"graph {what}(s) {extra} are not model {what}s (the model's are "
                            f"{want}); "
                            + ("a constant the converter left as an input?" if what == "input"
                               else "a tensor the converter exposed?"))
        if missing:
            problems.append(f"model {what}(s) {missing} are missing from the graph")
        if not extra and not missing and got != want:
            problems.append(f"graph {what}s are in the order {got}, the model's {want}")
    if problems:
        raise ExportError(f"the export of {model_name} is broken: " + "; ".join(problems)
                          + ". The file was not written.")


def session_for(proto: onnx.ModelProto, model_name: str) -> Any:
    """An onnxruntime CPU session of the converted graph, or ExportError."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(proto.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ExportError(f"the export of {model_name} does not load in onnxruntime: {exc}. "
                          "The file was not written.") from exc


def _head_stats(onnx_out: np.ndarray, keras_out: np.ndarray) -> dict[str, Any]:
    err = np.abs(onnx_out.astype(np.float64) - keras_out.astype(np.float64))
    stats: dict[str, Any] = {
        "max_abs_diff": float(err.max()) if err.size else 0.0,
        "output_scale": float(np.abs(keras_out).max()) if keras_out.size else 0.0,
    }
    if keras_out.ndim == 2 and keras_out.shape[1] > 1:
        stats["argmax_agreement"] = float(np.mean(onnx_out.argmax(1) == keras_out.argmax(1)))
    return stats


def check_parity(
    proto: onnx.ModelProto,
    model: Any,
    traced: Traced,
    inputs: Sequence[InputSpec],
    *,
    data: Any,
    samples: int,
    atol: float,
    rtol: float,
    seed: int,
    head: Head | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Run the graph and Keras on the same samples; the parity figures, or ExportError.

    ``head``: the classifier output scored against a labelled ``data`` folder.
    """
    session = session_for(proto, model.name)
    feed, source = load_samples(data, inputs, samples, seed)
    arrays = [feed[name] for name in traced.input_names]
    try:
        with quiet("tensorflow"):
            keras_outputs = [np.asarray(t) for t in
                             traced.outputs(model(traced.feed(arrays), training=False))]
    except Exception as exc:  # Keras raises whatever the layers raise
        raise ExportError(f"{model.name} does not run in Keras on the samples ({source}): "
                          f"{type(exc).__name__}: {exc}") from exc
    try:
        onnx_outputs = session.run(traced.output_names, feed)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ExportError(f"the export of {model.name} fails in onnxruntime on the samples "
                          f"({source}): {exc}. The file was not written.") from exc
    per_output: dict[str, Any] = {}
    problems = []
    for name, o, k in zip(traced.output_names, onnx_outputs, keras_outputs):
        if o.shape != k.shape:
            problems.append(f"output {name!r}: shape {o.shape}, Keras gives {k.shape}")
            continue
        why = mismatch(o, k, atol=atol, rtol=rtol, check_dtype=False)
        per_output[name] = _head_stats(o, k)
        if why is not None:
            problems.append(f"output {name!r}: {why}")
    if problems:
        raise ExportError(
            f"the export of {model.name} differs from Keras on {len(arrays[0])} samples "
            f"({source}): " + "; ".join(problems)
            + ". The file was not written. If the difference is numerical noise of a deep "
            "model, allow it with a larger atol/rtol (--atol/--rtol); `dlinfer verify "
            "--per-layer` finds where a chain model diverges."
        )
    count = int(len(arrays[0]))
    parity: dict[str, Any] = {
        "samples": count,
        "data": source,
        "atol": atol,
        "rtol": rtol,
        "max_abs_diff": max(s["max_abs_diff"] for s in per_output.values()),
        "outputs": per_output,
    }
    constant = input_independent(feed, dict(zip(traced.output_names, keras_outputs)))
    if constant is not None:
        text = (f"the outputs of {model.name} do not depend on the inputs: {constant} on "
                f"{count} different samples ({source}), so matching Keras proves nothing "
                "about the export. Is the model untrained, or are its weights missing?")
        if strict:
            raise ExportError(text + " The file was not written (--strict).")
        logger.warning("%s", text)
        parity["warnings"] = [text]
    if head is not None:
        outputs = dict(zip(traced.output_names, onnx_outputs))
        accuracy = labelled_accuracy(outputs[head.name], data, head)
        if accuracy is not None:
            parity.update(accuracy=accuracy, accuracy_output=head.name)
            note = sample_count_note(count)
            if note:
                logger.warning("%s: top-1 accuracy %.2f%%: %s", model.name, 100 * accuracy,
                               note)
                parity.setdefault("warnings", []).append(f"accuracy: {note}")
    return parity


def input_independent(feed: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
                      ) -> str | None:
    """What shows the outputs do not depend on the inputs, or None when they do (or
    when fewer than two different samples cannot tell)."""
    arrays = [np.asarray(v) for v in feed.values()]
    if len(arrays[0]) < 2 or all(np.array_equal(a[1:], np.broadcast_to(a[:1], a[1:].shape))
                                 for a in arrays):
        return None
    for out in outputs.values():
        flat = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
        spread = float(np.abs(flat - flat[:1]).max()) if flat.size else 0.0
        scale = float(np.abs(flat).max()) if flat.size else 0.0
        if spread > _CONSTANT_SHARE * max(scale, 1e-30):
            return None
    shown = {name: np.asarray(out).reshape(len(out), -1)[0][:4].round(6).tolist()
             for name, out in outputs.items()}
    return "every sample gives the same outputs " + ", ".join(
        f"{name} {values}{' ...' if np.asarray(outputs[name])[0].size > 4 else ''}"
        for name, values in shown.items())
