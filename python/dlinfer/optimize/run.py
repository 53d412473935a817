"""``optimize()``: convert, gate, then write the file whole, or nothing at all."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..errors import DlinferError, InputError, InputShapeError, OptimizeError
from ..export.onnx_file import save, set_spec, write_atomic
from ..runtime.batch_axis import BatchAxis, batch_axes, can_group, sample_count, split
from ..runtime.batch_axis import notes as batch_notes
from ..runtime.model import Model
from ..runtime.session import SESSION_METADATA_KEY
from ..spec import InputSpec
from ..verification.labelled import folder_labels, is_labelled_folder
from ..verification.model_samples import model_samples
from ..verification.samples import load_samples, read_arrays
from .checks import check_float_model
from .fp16 import float16_overflow
from .gate import evaluate, worst_layer
from .memory import per_sample_bytes, within

__all__ = ["MODES", "OptimizeReport", "optimize"]

MODES = ("int8", "fp16", "graph", "bf16")
# Evaluation takes every sample it is given, up to this many.
_EVAL_LIMIT = 10_000
# The worst-layer search and the fp16 overflow search run on one run of this many.
_LAYER_SAMPLES = 64
LABELS_KEY = "labels"


@dataclass
class OptimizeReport:
    """What ``optimize`` did, at what size, and at what cost in accuracy."""

    mode: str
    source: str
    out: str
    settings: dict[str, Any]
    calibration: str | None
    evaluation: str
    metrics: dict[str, Any]
    max_drop: float
    worst_layer: dict[str, Any] | None
    source_bytes: int
    out_bytes: int
    written: bool = False
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was changed or assumed, and why
    # the backend and precision the candidate passed the gate on (optimize.precision)
    gated_on: dict[str, str] = field(default_factory=dict)

    @property
    def drop_points(self) -> float | None:
        return self.metrics.get("drop_points")

    @property
    def passed(self) -> bool:
        return self.drop_points is None or self.drop_points <= self.max_drop

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "drop_points": self.drop_points,
                "passed": self.passed}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        m = self.metrics
        plain = ", ".join(f"{k}={v}" for k, v in self.settings.items()
                          if not isinstance(v, (dict, list)))
        lines = [f"mode:        {self.mode} ({plain})",
                 f"size:        {self.source_bytes:,} -> {self.out_bytes:,} bytes "
                 f"({self.out_bytes / max(self.source_bytes, 1):.1%})"]
        if self.settings.get("rewrites"):
            lines.append("rewrites:    " + ", ".join(
                f"{k} x{v}" for k, v in self.settings["rewrites"].items()))
        if self.settings.get("float_nodes"):
            lines.append(f"float32:     {len(self.settings['float_nodes'])} nodes kept "
                         f"(shallow convolutions: {self.settings['float_nodes'][0]}, ...); "
                         f"runs without {', '.join(self.settings['disabled_optimizers'])}")
        if self.calibration:
            lines.append(f"calibrated:  {self.calibration}")
        counted = self.evaluation[:1].isdigit()  # "15 images from DIR": the count is there
        lines.append(f"evaluated:   {'' if counted else str(m['samples']) + ' samples: '}"
                     f"{self.evaluation}")
        if self.gated_on:
            lines.append(f"gated on:    {self.gated_on['backend']}, "
                         f"{self.gated_on['precision']}")
        if m.get("warning"):
            lines.append(f"warning:     {m['warning']}")
        lines.append(f"output {m['output']!r}: max abs diff {m['max_abs_diff']:.3g}, "
                     f"mean abs diff {m['mean_abs_diff']:.3g}")
        if "top1_agreement" in m:
            lines.append(f"top-1 agreement with float32: {m['top1_agreement']:.2%}")
        if "accuracy" in m:
            lines.append(f"accuracy:    {m['accuracy_float32']:.2%} -> {m['accuracy']:.2%}")
        if m["metric"] == "relative_rms_error":
            lines.append(f"drop:        {self.drop_points:.3g}% relative RMS error against "
                         f"float32 (max {self.max_drop:g}%)")
        elif self.drop_points is None:
            lines.append("drop:        not measured")
        else:
            lines.append(f"drop:        {self.drop_points:.2f} points of {m['metric']} "
                         f"(max {self.max_drop:g})")
        if self.worst_layer:
            w = self.worst_layer
            lines.append(f"worst layer: {w['node']} ({w['op']}), relative error "
                         f"{w['relative_error']:.3g} (+{w['added_error']:.3g} over its inputs)")
        lines += [f"note:        {n}" for n in self.notes]
        lines.append(f"wrote {self.out}" if self.written else "wrote nothing")
        return "\n".join(lines)


def _plain_inputs(model: Model) -> tuple[InputSpec, ...]:
    """Input specs for a model without a dlinfer spec: arrays are taken as they are."""
    return tuple(InputSpec(name=t.name, shape=tuple(t.shape), dtype=t.dtype.name,
                           kind="features", layout="NC", color=None, scale=1.0)
                 for t in model.inputs)


def _load(data: Any, inputs: tuple[InputSpec, ...], count: int, seed: int, what: str,
          has_spec: bool, class_names: Sequence[str] = (), *,
          axes: Mapping[str, BatchAxis] | None = None
          ) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    """Samples and optional labels from a folder (a labelled one: its class sub-folders
    matched to ``class_names``), .npy/.npz file, array or dict."""
    path_given = None
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.exists(path):
            raise OptimizeError(f"{what} data not found: {path}")
        if os.path.isdir(path) and not has_spec:
            raise OptimizeError(f"{what} images in {path} need the model's dlinfer spec (its "
                                "input size and normalization); the model has none: give "
                                "arrays already normalized (.npy/.npz) or add one with "
                                "`dlinfer spec`")
        if path.endswith(".npz"):
            path_given = path
            data = read_arrays(path)
    labels = None
    if isinstance(data, Mapping) and LABELS_KEY in data:
        data = dict(data)
        labels = np.asarray(data.pop(LABELS_KEY)).reshape(-1)
        if len(data) == 1 and len(inputs) == 1:  # one input: its array's key is free
            data = {inputs[0].name: next(iter(data.values()))}
    batch, source = load_samples(data, inputs, count, seed, axes=axes)
    if path_given is not None:  # an .npz was read here: name it, not "the given arrays"
        source = source.replace("the given arrays", path_given)
    n = sample_count(batch, axes) if axes is not None else len(next(iter(batch.values())))
    if labels is None and class_names and isinstance(data, (str, os.PathLike)) \
            and is_labelled_folder(data):
        labels = folder_labels(os.fspath(data), n, class_names)
    if labels is not None:
        if len(labels) < n:
            raise OptimizeError(f"{what} data: {len(labels)} labels for {n} samples")
        labels = labels[:n].astype(np.int64)
        source += ", with labels"
    return batch, labels, source


def _check_runs(reference: Model, batch: dict[str, np.ndarray], source: str,
                axes: Mapping[str, BatchAxis]) -> None:
    """Run one slice through the float32 model, so wrong shapes fail here, named."""
    first = next(split(batch, axes, 2))
    try:
        reference.run(first)
    except InputError as exc:
        raise type(exc)(f"{source}: {exc}") from exc
    except DlinferError as exc:  # onnxruntime refused a size the graph cannot take
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in first.items())
        raise InputShapeError(f"{source}: the model does not run on inputs of shapes "
                              f"{shapes}: {exc}") from exc


def _batch_first(inputs: tuple[InputSpec, ...], axes: Mapping[str, BatchAxis]) -> bool:
    return can_group(axes) and all(axes[i.name].axis == 0 for i in inputs)


def _static_layout(path: str, proto: onnx.ModelProto, work: str, inputs: tuple[InputSpec, ...],
                   samples: dict[str, np.ndarray], axes: Mapping[str, BatchAxis],
                   for_int8: bool = False) -> tuple[str, dict[str, Any]]:
    """``path`` rewritten for onnxruntime's fast CPU kernels (:mod:`.layout`, :mod:`.convs`)."""
    from .layout import rewrite_for_cpu, sample_batches

    if not _batch_first(inputs, axes):  # the rewrites try batches of 1 and 3 on axis 0
        return path, {}
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    done = rewrite_for_cpu(copy, sample_batches(inputs, samples), for_int8)
    if not done:
        return path, {}
    dst = os.path.join(work, "static.onnx")
    onnx.save(copy, dst)
    return dst, {"rewrites": done}


def _convert(mode: str, path: str, proto: onnx.ModelProto, work: str,
             calibration: dict[str, np.ndarray] | None, options: dict[str, Any],
             inputs: tuple[InputSpec, ...], samples: dict[str, np.ndarray],
             axes: Mapping[str, BatchAxis]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    if mode == "bf16":  # an execution precision: the graph stays float32 (.precision)
        from .precision import bf16_candidate

        return bf16_candidate(proto)
    if mode == "int8":
        from .precision import BF16, check_bf16

        assert calibration is not None
        if options.get("bf16"):  # the rest in bfloat16 (.precision)
            check_bf16()
        rest = BF16 if options.get("bf16") else {}
        if options.get("method") == "nncf":  # NNCF's own route (.precision)
            from .precision import nncf_int8

            quantized_proto, settings = nncf_int8(path, calibration, axes)
            return quantized_proto, {**settings, **rest}
        from .quantize import int8_settings, quantize_int8

        settings = int8_settings(options.get("method", "minmax"),
                                 options.get("per_channel", True), options.get("reduce_range"),
                                 options.get("keep_shallow", True))
        static, rewrites = _static_layout(path, proto, work, inputs, calibration, axes, True)
        quantized = quantize_int8(static, work, calibration, settings, axes)
        return onnx.load(quantized), {**settings, **rewrites, **rest}
    if mode == "fp16":
        from .fp16 import to_fp16

        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        return to_fp16(copy, path, options.get("keep_io_types", True))
    from .graph import PROVIDERS, offline_optimize

    level, device = options.get("level", "extended"), options.get("device", "cpu")
    static, rewrites = _static_layout(path, proto, work, inputs, samples, axes)
    dst = os.path.join(work, "graph.onnx")
    offline_optimize(static, dst, level=level, device=device)
    return onnx.load(dst), {"level": level, "device": device, "provider": PROVIDERS[device],
                            **rewrites}


def optimize(model: str | os.PathLike[str], out: str | os.PathLike[str], mode: str = "int8",
             *, calibrate: Any = None, samples: int = 512, max_drop: float = 0.5,
             eval: Any = None, json_path: str | os.PathLike[str] | None = None,  # noqa: A002
             seed: int = 0, **options: Any) -> OptimizeReport:
    """Convert ``model`` to ``mode``, gate it on accuracy, and write ``out`` if it passes.

    ``calibrate`` and ``eval``: a folder of images, a ``.npy``/``.npz`` file, an array or a
    ``{input name: array}`` dict (uint8 images are normalized per the model's spec); a
    ``labels`` array beside the inputs makes accuracy the gated metric.  int8 needs
    ``calibrate``; evaluation uses ``eval``, else the calibration data, else random
    inputs drawn from the spec.  ``options``: ``method``, ``per_channel``, ``reduce_range``,
    ``keep_shallow`` (int8: shallow first convolutions stay float32); ``keep_io_types``
    (fp16: False for float16 inputs and outputs); ``level``, ``device`` (graph);
    ``backend``: what the candidate is gated on, onnxruntime (default) or openvino (bf16:
    always openvino), recorded with the precision in the report (:mod:`.precision`);
    ``bf16`` (int8): what stays float runs in bfloat16 on OpenVINO, gated as ``int8+bf16``.

    Raises :class:`~dlinfer.OptimizeError` when the drop exceeds ``max_drop`` points,
    naming the layer that adds the most error; then nothing is written.
    """
    started = time.perf_counter()
    if mode not in MODES:
        raise OptimizeError(f"mode must be one of {MODES}, got {mode!r}")
    from .precision import gated_model, gated_on, session_metadata

    gate = gated_on(mode, options.pop("backend", "onnxruntime"), options.get("bf16", False))
    if samples < 1:
        raise OptimizeError(f"samples must be >= 1, got {samples}")
    path, out = os.fspath(model), os.fspath(out)
    if os.path.abspath(path) == os.path.abspath(out):
        raise OptimizeError("--out must differ from the model: the float32 file is the "
                            "reference the result is gated against")
    # a missing or broken file fails here, named; the float32 reference is onnxruntime's
    # whatever $DLINFER_BACKEND says (the candidate runs where it is gated)
    reference = Model(path, threads=None, backend="onnxruntime")
    proto = onnx.load(path)
    if mode != "graph":  # an offline-optimized graph may be quantized already
        check_float_model(proto, path)
    spec = reference.spec
    inputs = spec.inputs if spec is not None else _plain_inputs(reference)
    axes = batch_axes(reference)  # where each input's samples lie (runtime.batch_axis)
    class_names = spec.output.labels if spec is not None else ()

    calibration = labels = None
    calibration_source = None
    if calibrate is not None:
        calibration, labels, calibration_source = _load(calibrate, inputs, samples, seed,
                                                        "calibration", spec is not None,
                                                        class_names, axes=axes)
        _check_runs(reference, calibration, calibration_source, axes)
    elif mode == "int8":
        raise OptimizeError("int8 needs calibration data (--calibrate): a folder of images "
                            "or a .npy/.npz file of the model's inputs")
    if eval is not None:
        evaluation, labels, evaluation_source = _load(eval, inputs, _EVAL_LIMIT, seed,
                                                      "evaluation", spec is not None,
                                                      class_names, axes=axes)
        _check_runs(reference, evaluation, evaluation_source, axes)
    elif calibration is not None:
        evaluation = calibration
        evaluation_source = f"the calibration data ({calibration_source}): not held out"
    else:
        evaluation, evaluation_source, _ = model_samples(reference, None, samples, seed, axes)

    output = spec.output.name if spec is not None else reference.outputs[0].name
    threshold = spec.output.threshold if spec is not None else None
    kind = spec.output.kind if spec is not None else None
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise OptimizeError(f"the output folder {out_dir} does not exist")
    with tempfile.TemporaryDirectory(prefix="dlinfer-optimize-", dir=out_dir) as work:
        candidate, settings = _convert(mode, path, proto, work, calibration, options, inputs,
                                       calibration if calibration is not None else evaluation,
                                       axes)
        del candidate.metadata_props[:]
        candidate.metadata_props.extend(proto.metadata_props)
        if spec is not None:  # float16 I/O changes what the inputs take
            spec = _io_types(spec, candidate)
            set_spec(candidate, spec)
        if session_metadata(mode, settings):
            candidate.metadata_props.add(key=SESSION_METADATA_KEY,
                                         value=json.dumps(session_metadata(mode, settings)))
        trial = os.path.join(work, "candidate.onnx")
        onnx.save(candidate, trial)
        # Runs as large as their activations allow (.memory): 64 VGG16 samples at
        # 150x150 hold 3.3 GB of tensors; the worst-layer search holds both graphs'.
        probe = next(split(evaluation, axes, _LAYER_SAMPLES))
        per_sample = per_sample_bytes(path, probe, sample_count(probe, axes))
        metrics = evaluate(reference, gated_model(trial, gate), evaluation, labels, output,
                           threshold, kind, axes=axes, per_sample=per_sample)
        first = next(split(evaluation, axes, within(per_sample and 2 * per_sample,
                                                    _LAYER_SAMPLES)))
        import onnxruntime as ort

        notes = settings.pop("notes", []) + batch_notes(axes)
        if mode == "bf16":  # the search runs both graphs on onnxruntime: the same graph
            worst, notes = None, notes + [
                "the worst-layer search is skipped: bf16 is OpenVINO's execution precision, "
                "and the search runs the (float32) graph's layers on onnxruntime"]
        else:
            worst = worst_layer(proto, candidate, first)
        report = OptimizeReport(
            mode=mode, source=path, out=out, settings=settings,
            calibration=calibration_source, evaluation=evaluation_source, metrics=metrics,
            max_drop=float(max_drop), worst_layer=worst,
            source_bytes=os.path.getsize(path), out_bytes=os.path.getsize(trial),
            versions={"onnxruntime": ort.__version__, "onnx": onnx.__version__},
            notes=notes, gated_on=gate)
        if not report.passed and mode == "fp16":
            report.notes += float16_overflow(proto, first)
        if not report.passed:
            raise OptimizeError(_refusal(report))
        if spec is not None:
            stored = report.to_dict()
            del stored["written"], stored["out"], stored["source"]
            set_spec(candidate, dataclasses.replace(spec, extra={**spec.extra,
                                                                 "optimize": stored}))
        save(candidate, out)
    report.written, report.out_bytes = True, os.path.getsize(out)
    report.seconds = time.perf_counter() - started
    if json_path is not None:
        def write_json(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.write(report.to_json() + "\n")

        write_atomic(json_path, write_json)
    return report


def _io_types(spec: Any, candidate: onnx.ModelProto) -> Any:
    """``spec`` with each input's dtype as the converted graph takes it (float16 I/O)."""
    graph_types = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
                   .name for i in candidate.graph.input}
    inputs = [dataclasses.replace(i, dtype=graph_types.get(i.name, i.dtype))
              for i in spec.inputs]
    return dataclasses.replace(spec, inputs=tuple(inputs))


def _refusal(report: OptimizeReport) -> str:
    m = report.metrics
    what = {"accuracy": lambda: f"accuracy fell {m['accuracy_float32']:.2%} -> "
                                f"{m['accuracy']:.2%}",
            "relative_rms_error": lambda: "the outputs moved by "
                                          f"{m['relative_rms_error_pct']:.3g}% of their RMS",
            }.get(m["metric"], lambda: f"top-1 agreement with float32 is "
                                       f"{m['top1_agreement']:.2%}")()
    where = ("; no layer could be singled out" if report.worst_layer is None else
             f"; the layer adding the most error is {report.worst_layer['node']!r} "
             f"({report.worst_layer['op']}, relative error "
             f"{report.worst_layer['relative_error']:.3g})")
    overflow = "".join(f"; {n}" for n in report.notes if "overflow" in n)
    return (f"{report.mode} refused: {what}, a drop of {report.drop_points:.2f} points "
            f"(max {report.max_drop:g}) on {report.evaluation}{where}{overflow}; nothing was "
            f"written to {report.out}")
