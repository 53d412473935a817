"""``dlinfer verify``: do Keras, onnxruntime and dlinfer's reference executor agree?

Three opinions on the same samples: Keras (the source of truth the user
trained), onnxruntime (what dlinfer deploys) and :mod:`dlinfer.reference`
(dlinfer's own kernels, sharing no code with either).  Every output is compared.
When the reference executor cannot run the graph, Keras and onnxruntime are still
compared and the report says which op the third opinion lacks.  With
``per_layer`` (:mod:`.per_layer`) the verifier finds the ONNX tensor that carries
each Keras layer's output and names the first layer whose outputs part ways.

TensorFlow is imported only when a Keras model is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..checks import check_int
from ..errors import DlinferError, InputError
from ..runtime.batch_axis import notes as batch_notes
from ..runtime.batch_axis import output_axes, run_split, sample_count
from . import reference
from .compare import DEFAULT_ATOL, DEFAULT_RTOL, Comparison, compare
from .model_samples import model_samples
from .per_layer import MAX_SAMPLES, LayerResult
from .per_layer import per_layer as per_layer_walk

__all__ = ["LayerResult", "VerifyReport", "verify"]

@dataclass
class VerifyReport:
    keras_path: str | None
    onnx_path: str
    samples: int
    data_source: str
    atol: float
    rtol: float
    outputs: list[Comparison] = field(default_factory=list)
    layers: list[LayerResult] | None = None
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why
    backend: str = "onnxruntime"  # the runtime compared (verify(backend=...))

    @property
    def first_bad_layer(self) -> LayerResult | None:
        """The first layer matched to an ONNX tensor that is past tolerance."""
        return next((layer for layer in self.layers or [] if layer.bad), None)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs) and self.first_bad_layer is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        bad = self.first_bad_layer
        d["first_bad_layer"] = bad.layer if bad else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        lines = [
            f"keras: {self.keras_path or '-'}",
            f"onnx:  {self.onnx_path}",
            f"data:  {self.samples} samples ({self.data_source}); tolerance |a-b| <= "
            f"{self.atol:g} + {self.rtol:g}*|b|",
            "",
        ]
        lines.append(
            f"{'comparison':<34} {'max abs':>10} {'mean abs':>10} {'p99 abs':>10} "
            f"{'flips':>7}  result"
        )
        for c in self.outputs:
            lines.append(_row(c.name, c))
        lines += [f"note: {n}" for n in self.notes]
        if self.layers is not None:
            lines += [
                "",
                f"{'#':>3} {'keras layer':<28} {'type':<18} {'onnx tensor':<40} "
                f"{'max abs':>10} {'mean abs':>10} {'p99 abs':>10} {'flips':>7}  result",
            ]
            for lr in self.layers:
                c = lr.comparison
                tensor = lr.onnx_tensor or "(not found)"
                if len(tensor) > 40:
                    tensor = "..." + tensor[-37:]
                if c is None:
                    lines.append(
                        f"{lr.index:>3} {lr.layer:<28} {lr.layer_type:<18} {tensor:<40} "
                        f"{'-':>10} {'-':>10} {'-':>10} {'-':>7}  NO MATCH"
                    )
                else:
                    lines.append(
                        f"{lr.index:>3} {lr.layer:<28} {lr.layer_type:<18} {tensor:<40} "
                        + _stats(c).replace("MISMATCH", "fused" if lr.fused else "MISMATCH")
                    )
        lines.append("")
        bad = self.first_bad_layer
        if bad is not None:
            lines.append(
                f"MISMATCH: first diverging layer is #{bad.index} {bad.layer!r} ({bad.layer_type})"
            )
            if bad.onnxruntime is not None:
                verdict = (
                    "onnxruntime agrees with the reference: the export differs from Keras"
                    if not bad.onnxruntime.ok
                    else "onnxruntime matches Keras here: suspect dlinfer's reference kernels"
                )
                lines.append(f"  onnxruntime at {bad.onnx_tensor}: {_stats(bad.onnxruntime)}")
                lines.append(f"  {verdict}")
        elif not self.ok:
            lines.append("MISMATCH: outputs differ")
        elif not self.outputs:
            lines.append(f"OK: {self.backend} ran every sample; there was nothing to compare "
                         "it with (see the notes)")
        else:
            lines.append(
                "OK: all outputs agree" + (" layer by layer" if self.layers is not None else "")
            )
        return "\n".join(lines)


def _stats(c: Comparison) -> str:
    flips = "-" if c.argmax_flips is None else f"{c.argmax_flips}/{c.rows}"
    return (
        f"{c.max_abs:10.3g} {c.mean_abs:10.3g} {c.p99_abs:10.3g} {flips:>7}  "
        f"{'ok' if c.ok else 'MISMATCH'}"
    )


def _row(name: str, c: Comparison) -> str:
    return f"{name:<34} {_stats(c)}"


# ---- Keras side ----------------------------------------------------------------------


def _load_keras(keras_model: Any) -> Any:
    if not isinstance(keras_model, (str, os.PathLike)):
        return keras_model
    from ..export.keras import load_keras_file

    return load_keras_file(keras_model, InputError)


def _keras_args(keras_model: Any, feed: dict[str, np.ndarray], input_names: list[str]) -> Any:
    """The samples in the structure the Keras model is called with (ONNX keeps its order)."""
    from ..export.convert import describe

    traced, _, _ = describe(keras_model)
    return traced.feed([feed[n] for n in input_names])


def _keras_outputs(keras_model: Any, feed: dict[str, np.ndarray], input_names: list[str],
                   output_shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Keras's outputs in the ONNX outputs' order; the exporter keeps the model's order."""
    from ..export.convert import describe

    traced, _, _ = describe(keras_model)
    result = keras_model(_keras_args(keras_model, feed, input_names), training=False)
    outs = [np.asarray(o) for o in traced.outputs(result)]
    # A (N, 1) Keras output may be exported flat, and the other way round.
    return [k.reshape(shape) if k.shape != shape and k.size == int(np.prod(shape)) else k
            for k, shape in zip(outs, output_shapes)]


def verify(
    keras_model: Any,
    onnx_path: str,
    data: Any = None,
    *,
    per_layer: bool = False,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    samples: int = 16,
    seed: int = 0,
    backend: str = "onnxruntime",
) -> VerifyReport:
    """Compare Keras, onnxruntime and dlinfer's reference executor on samples.

    ``keras_model``: a ``.keras`` path, a Keras model, or ``None`` to compare only
    onnxruntime with the reference executor (no TensorFlow import).  ``data``: an
    array, a dict by input name, a ``.npy``/``.npz`` file or a folder of images
    (preprocessed with the model's spec); ``None`` draws ``samples`` random inputs
    from the spec (see :mod:`dlinfer.verification.samples`).  Every output is
    compared.  A graph with an op the reference executor lacks is still checked
    against Keras; the report notes what was skipped.
    ``per_layer`` also maps every Keras layer to the ONNX tensor that carries its
    output and compares them (``report.first_bad_layer``), on at most
    :data:`~dlinfer.verification.per_layer.MAX_SAMPLES` samples.
    ``backend``: the runtime whose answers are compared (``Model(backend=...)``;
    ``"openvino"``, or ``"auto"``'s pick, in the precision the file was gated for);
    onnxruntime by default, whatever $DLINFER_BACKEND says.  ``per_layer`` reads
    intermediate tensors through the reference executor, else onnxruntime, whatever
    the backend.
    """
    from ..runtime.model import Model

    samples = check_int(samples, "samples", min=1)
    # onnxruntime unless asked, whatever $DLINFER_BACKEND says: the report names it
    ort_model = Model(onnx_path, device="cpu", threads=1, backend=backend)
    runtime = ort_model.backend  # auto's pick
    # Samples on each input's own batch axis; inputs without one are fed whole, and a
    # fixed batch of 1 runs one sample at a time (dlinfer.runtime.batch_axis).
    input_names = [t.name for t in ort_model.inputs]
    out_names = [t.name for t in ort_model.outputs]
    # The third opinion where dlinfer's executor can give it: an op (or an attribute,
    # dtype or shape of one) it lacks is refused before or while running.
    graph: reference.Graph | None = None
    ref_outs = None
    try:
        graph = reference.Graph(onnx_path)
    except reference.UnsupportedOpError as exc:
        skipped = f"reference executor skipped: {exc}"

    def reference_runs(part: dict[str, np.ndarray]) -> None:
        # Drawn sizes must suit ONNX's rules too, which onnxruntime bends (a pooling
        # window larger than its input); an op the executor lacks says nothing of sizes.
        if graph is not None:
            try:
                reference.run(graph, part, outputs=out_names)
            except reference.UnsupportedOpError:
                pass
            except DlinferError:
                raise
            except Exception:  # noqa: BLE001, S110 - a gap in the executor, noted below
                pass

    feed, source, axes = model_samples(ort_model, data, samples, seed, check=reference_runs)
    out_axes = output_axes(ort_model, axes)
    merged = run_split(ort_model.run, feed, axes, samples, out_names, out_axes)
    ort_outs = [merged[n] for n in out_names]
    try:
        if graph is not None:
            ref_outs = run_split(lambda part: reference.run(graph, part, outputs=out_names),
                                 feed, axes, samples, out_names, out_axes)
    except reference.UnsupportedOpError as exc:
        graph, skipped = None, f"reference executor skipped: {exc}"
    except Exception as exc:  # noqa: BLE001 - the backend ran these inputs: the gap is ours
        graph, skipped = None, (f"reference executor failed ({type(exc).__name__}: {exc}); "
                                f"{runtime} ran the same inputs, so this is a gap in "
                                "dlinfer's reference kernels")

    report = VerifyReport(
        keras_path=None
        if keras_model is None
        else str(keras_model)
        if isinstance(keras_model, (str, os.PathLike))
        else getattr(keras_model, "name", "keras model"),
        onnx_path=str(onnx_path),
        samples=sample_count(feed, axes),
        data_source=source,
        atol=atol,
        rtol=rtol,
        backend=runtime,
    )
    if graph is None:
        report.notes.append(skipped)
    report.notes += batch_notes(axes)
    suffixes = [f": {n}" if len(out_names) > 1 else "" for n in out_names]
    if keras_model is not None:
        km = _load_keras(keras_model)
        k_outs = _keras_outputs(km, feed, input_names, [o.shape for o in ort_outs])
        for suffix, name, o, k in zip(suffixes, out_names, ort_outs, k_outs):
            report.outputs.append(compare(f"{runtime} vs keras" + suffix, o, k, atol, rtol))
            if ref_outs is not None:
                report.outputs.append(compare("reference vs keras" + suffix, ref_outs[name], k,
                                              atol, rtol))
    if ref_outs is not None:
        for suffix, name, o in zip(suffixes, out_names, ort_outs):
            report.outputs.append(compare(f"reference vs {runtime}" + suffix, ref_outs[name],
                                          o, atol, rtol))
    if per_layer:
        if keras_model is None:
            raise InputError("per_layer needs the Keras model")
        rows = {k: v[:MAX_SAMPLES] for k, v in feed.items()}
        proto = graph.proto if graph is not None else reference.load(onnx_path)
        report.layers = per_layer_walk(km, _keras_args(km, rows, input_names), proto, rows,
                                       graph, atol, rtol)
        if len(next(iter(feed.values()))) > MAX_SAMPLES:
            report.notes.append(f"per-layer: the first {MAX_SAMPLES} samples")
        if graph is None:
            report.notes.append("per-layer: onnxruntime's intermediate tensors")
    return report
