"""``dlinfer spec show`` and ``dlinfer spec set``: the spec of any ONNX file.

A file exported by dlinfer carries its spec; one from another exporter (a PyTorch
ImageNet classifier, say) carries none, so ``spec set`` starts from what the graph
says (inputs, outputs, their shapes and dtypes) and the flags add what it cannot
say (task, labels, normalization, colour order, size).  Everything that contradicts
the graph is refused before the file is touched.

No TensorFlow here: only the ``onnx`` package (extra ``reference``), loaded on use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .._optional import import_optional
from ..errors import ModelLoadError, ModelNotFoundError, SpecError
from ..escape import visible
from ..preprocessing.presets import apply_preprocess
from ..runtime.batch_axis import proto_dims, with_batch_axes
from ..spec import (
    METADATA_KEY,
    TASKS,
    InputSpec,
    ModelSpec,
    OutputSpec,
    index_labels,
    shape_text,
)
from ..spec_graph import check_against_graph
from . import args as arg

__all__ = ["add_spec_parser", "build_spec", "describe_spec", "graph_io", "infer_inputs",
           "load_onnx"]

CLASSIFICATION = ("classification", "binary_classification")
_MAX_LABELS_SHOWN = 12

Tensor = tuple[str, tuple[int | None, ...], str]  # (name, shape, dtype) of a graph tensor


def load_onnx(path: str) -> Any:
    """The ModelProto at ``path`` without its external weights (only the graph is read)."""
    onnx = import_optional("onnx", "reference", "`dlinfer spec`")
    if not os.path.exists(path):
        raise ModelNotFoundError(f"model file not found: {path}")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelLoadError(f"{path} is not an ONNX model: {exc}") from exc
    # Protobuf parses some arbitrary bytes without complaint: an empty graph is no model.
    if proto.ir_version < 1 or not proto.graph.output:
        raise ModelLoadError(f"{path} is not an ONNX model (no graph outputs)")
    return proto


def graph_io(proto: Any) -> tuple[list[Tensor], list[Tensor]]:
    """The graph's real inputs (initializers are not inputs) and its outputs."""
    from onnx import helper

    weights = {t.name for t in proto.graph.initializer}

    def tensor(value: Any) -> Tensor:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in t.shape.dim)
        return value.name, dims, helper.tensor_dtype_to_np_dtype(t.elem_type).name

    inputs = [tensor(v) for v in proto.graph.input if v.name not in weights]
    return inputs, [tensor(v) for v in proto.graph.output]


def infer_inputs(tensors: Sequence[Tensor]) -> list[InputSpec]:
    """What each input most likely takes, from its rank and dtype alone."""
    return [_infer_input(name, shape, dtype) for name, shape, dtype in tensors]


def _infer_input(name: str, shape: tuple[int | None, ...], dtype: str) -> InputSpec:
    is_float = dtype.startswith("float")
    if len(shape) == 4 and is_float:
        layout = "NCHW" if shape[1] in (1, 3) else "NHWC" if shape[3] in (1, 3) else None
        if layout is not None:
            return _as_image(InputSpec(name, shape, dtype), layout)
    if len(shape) == 2 and not is_float:
        return InputSpec(name, shape, dtype, kind="tokens", layout="NC", color=None, scale=1.0)
    kind, layout = {2: ("features", "NC"), 3: ("series", "NTC")}.get(len(shape),
                                                                    ("features", "NHWC"))
    return InputSpec(name, shape, dtype, kind=kind, layout=layout, color=None, scale=1.0)


def _as_image(spec: InputSpec, layout: str) -> InputSpec:
    """``spec`` as an image input in ``layout``, keeping its colour when it still fits."""
    channels = spec.shape[1] if layout == "NCHW" else spec.shape[3]
    if channels not in (1, 3):
        raise SpecError(f"input {spec.name!r} {_shape(spec.shape)} has no 1- or 3-channel "
                        f"axis where layout {layout} puts it")
    fits = spec.kind == "image" and (spec.color == "GRAY") == (channels == 1)
    color = spec.color if fits else ("GRAY" if channels == 1 else "RGB")
    scale = spec.scale if spec.kind == "image" else 1.0 / 255.0
    return dataclasses.replace(spec, kind="image", layout=layout, color=color, scale=scale)


def existing_spec(proto: Any) -> ModelSpec | None:
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelSpec.from_json(prop.value)
    return None


def build_spec(proto: Any, default_name: str, *, task: str | None = None,
               labels: Sequence[str] | None = None, input: str | None = None,  # noqa: A002
               output: str | None = None, logits: bool = False,
               threshold: float | None = None, name: str | None = None,
               preprocess: str | None = None, batch_axes: dict[str, int | None] | None = None,
               **image: Any) -> tuple[ModelSpec, list[str]]:
    """The spec ``dlinfer spec set`` writes, and the notes to print about it.

    It starts from the file's spec, if it has one that describes this graph, else
    from :func:`infer_inputs`.  ``preprocess`` names a preset and ``image`` holds the
    image flags (layout, size and the fields of ``presets.apply_preprocess``); None leaves
    a value as it is.  ``batch_axes``: ``{input name: axis or None}`` to declare; an input
    inferred from the graph gets what :mod:`dlinfer.runtime.batch_axis` infers.
    """
    graph_in, graph_out = graph_io(proto)
    notes: list[str] = []
    try:
        base = existing_spec(proto)
    except SpecError as exc:  # the spec being fixed may be the broken one
        base = None
        notes.append(f"the file's spec is invalid ({exc}); starting from the graph")
    task = task or (base.task if base else None)
    if task is None:
        raise SpecError("the file has no dlinfer spec yet: give --task "
                        f"({'|'.join(TASKS)})")
    if task not in TASKS:
        raise SpecError(f"--task must be one of {TASKS}, got {task!r}")
    described = _described(base.inputs if base else (), graph_in)
    inputs = with_batch_axes(described or infer_inputs(graph_in), proto_dims(proto),
                             batch_axes or {}, inferred=not described)
    inputs = [_graph_shape(i, t, notes) for i, t in zip(inputs, _in_order(inputs, graph_in))]
    shapes = {n: s for n, s, _ in graph_out}
    same_task = base is not None and base.task == task
    outputs = (_described(base.outputs, graph_out) if same_task else None) or [
        OutputSpec(n, kind=_output_kind(task, s)) for n, s, _ in graph_out]

    target = _pick(inputs, input, "input", next((i for i in inputs if i.kind == "image"), None))
    given = {k: v for k, v in image.items() if v is not None}
    if given or preprocess is not None:
        new = _with_image_options(target or inputs[0], preprocess, given)
        inputs = [new if i.name == new.name else i for i in inputs]
    for i in inputs:
        if i.kind == "image" and i.image_size is None:
            notes.append(f"input {i.name!r} {_shape(i.shape)} has a dynamic height or width: "
                         "images keep their own size unless --size gives one")
        axis = i.batch_axis
        if axis is not None and axis < len(i.shape) and i.shape[axis] is not None:
            # A PyTorch export without dynamic_axes: the model takes this batch only.
            notes.append(f"input {i.name!r} {_shape(i.shape)} has a fixed batch size of "
                         f"{i.shape[axis]}: every call must send exactly that many items")
        elif axis is None and i.shape:
            notes.append(f"input {i.name!r} {_shape(i.shape)} has no batch axis: it is fed "
                         f"whole and never grouped (declare one with --batch-axis "
                         f"{i.name}=K)")

    head = _pick(outputs, output, "output", None) or next(
        (o for o in outputs if o.labels), outputs[0])
    if task in CLASSIFICATION:
        head = _classification_head(head, task, shapes[head.name], labels, logits, threshold,
                                    notes)
        # The primary output is the first with labels: put the head first if another
        # labelled output would come before it.
        earlier = [o for o in outputs[:[o.name for o in outputs].index(head.name)] if o.labels]
        rest = [o for o in outputs if o.name != head.name]
        outputs = [head, *rest] if earlier else [head if o.name == head.name else o
                                                 for o in outputs]
    else:
        for flag, value in (("--labels", labels), ("--logits", logits or None),
                            ("--threshold", threshold)):
            if value is not None:
                raise SpecError(f"{flag} applies to a classification task, not {task}")
    versions, extra = _provenance(proto, base)
    spec = ModelSpec(name=name or (base.name if base else default_name), task=task,
                     inputs=inputs, outputs=outputs, versions=versions,
                     parity=base.parity if base else {}, extra=extra)
    check_against_graph(spec, graph_in, graph_out, "the new spec")
    return spec, notes


def _described(items: Sequence[Any], tensors: Sequence[Tensor]) -> list[Any] | None:
    """``items`` when they name exactly the graph's tensors (a one-tensor spec may use
    another name, as version-1 specs sometimes did), else None."""
    names = [t[0] for t in tensors]
    if len(items) == 1 == len(names):
        return [dataclasses.replace(items[0], name=names[0])]
    if items and sorted(i.name for i in items) == sorted(names):
        return list(items)
    return None


def _in_order(inputs: Sequence[InputSpec], tensors: Sequence[Tensor]) -> list[Tensor]:
    by_name = {t[0]: t for t in tensors}
    return [by_name[i.name] for i in inputs]


def _graph_shape(spec: InputSpec, tensor: Tensor, notes: list[str]) -> InputSpec:
    """``spec`` with the graph's shape where its own contradicts it (a wrong spec being
    fixed); sizes the graph leaves dynamic keep the spec's."""
    shape = tensor[1]
    fits = len(spec.shape) == len(shape) and all(
        a is None or b is None or a == b for a, b in zip(spec.shape, shape))
    if fits:
        return spec
    notes.append(f"input {spec.name!r}: the spec's shape {_shape(spec.shape)} contradicted the "
                 f"graph's {_shape(shape)}; the graph's is kept")
    return dataclasses.replace(spec, shape=shape)


def _pick(items: Sequence[Any], name: str | None, what: str, default: Any) -> Any:
    if name is None:
        return default
    for item in items:
        if item.name == name:
            return item
    raise SpecError(f"--{what} {name!r}: the model has no {what} of that name; its "
                    f"{what}s are {[i.name for i in items]}")


def _with_image_options(spec: InputSpec, preset: str | None,
                        given: dict[str, Any]) -> InputSpec:
    given = dict(given)
    layout = given.pop("layout", None)
    if layout is not None and len(spec.shape) == 4 and spec.dtype.startswith("float"):
        spec = _as_image(spec, layout)
    if spec.kind != "image":
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in
                          ([*given, *(["layout"] if layout else [])]
                           or ["preprocess"]))
        raise SpecError(f"image flags ({flags}) describe an image input, and input {spec.name!r} "
                        f"{_shape(spec.shape)} takes {spec.kind}; name an image input with "
                        "--input, or give --layout for a rank-4 float input")
    return apply_preprocess(spec, preset, **given)


def _output_kind(task: str, shape: tuple[int | None, ...]) -> str:
    if task in CLASSIFICATION:
        return "probabilities"
    return "images" if task == "generation" and len(shape) == 4 else "value"


def _classification_head(head: OutputSpec, task: str, shape: tuple[int | None, ...],
                         labels: Sequence[str] | None, logits: bool,
                         threshold: float | None, notes: list[str]) -> OutputSpec:
    width = None if None in shape[1:] else _product(shape[1:])
    where = f"output {head.name!r} {_shape(shape)}"
    binary = task == "binary_classification"
    if binary and width not in (None, 1):
        raise SpecError(f"{where}: binary_classification reads a single sigmoid unit, and "
                        f"this output has {width} values; use --task classification")
    if threshold is not None and not binary:
        raise SpecError("--threshold applies to binary_classification (a single sigmoid "
                        "unit), not classification")
    if labels is None:
        labels = head.labels if head.kind in ("probabilities", "logits") else ()
    if not labels:
        if binary:
            labels = ("0", "1")
        elif width is None:
            raise SpecError(f"{where} has a dynamic width: give --labels")
        else:
            labels = index_labels(width)
        notes.append(f"no labels given: {where} gets index labels "
                     f"{labels_text(labels)}; give --labels FILE|a,b,c for names")
    expected = 2 if binary else width
    if expected is not None and len(labels) != expected:
        raise SpecError(f"{len(labels)} labels for {where}, which "
                        + ("is a binary classifier: give 2 labels" if binary
                           else f"has {width} values per item"))
    kind = "logits" if logits or head.kind == "logits" else "probabilities"
    if binary and threshold is None:
        threshold = head.threshold if head.threshold is not None else 0.5
    return OutputSpec(head.name, kind=kind, labels=tuple(labels),
                      threshold=threshold if binary else None)


def _provenance(proto: Any, base: ModelSpec | None) -> tuple[dict[str, Any], dict[str, Any]]:
    if base is not None:
        return base.versions, base.extra
    import onnx

    from .. import __version__

    producer = f"{proto.producer_name} {proto.producer_version}".strip()
    extra = {"spec_by": "dlinfer spec set", **({"producer": producer} if producer else {})}
    return {"dlinfer": __version__, "onnx": onnx.__version__}, extra


def _product(dims: Sequence[int | None]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


_shape = shape_text


def labels_text(labels: Sequence[str]) -> str:
    """Labels for people: every one up to a screenful, else the first ten, and the count."""
    shown = list(labels) if len(labels) <= _MAX_LABELS_SHOWN else [*labels[:10], "..."]
    return f"{', '.join(shown)} ({len(labels)})"


def describe_spec(spec: ModelSpec, prefix: str = "") -> list[str]:
    """One line per input and output of ``spec``, for people: names and labels come from
    the file, so control characters in them are escaped (dlinfer.escape.visible)."""
    return [visible(line) for line in
            [f"{prefix + 'input:':<10} {_input_text(i)}" for i in spec.inputs]
            + [f"{prefix + 'output:':<10} {_output_text(o)}" for o in spec.outputs]]


def _input_text(i: InputSpec) -> str:
    text = f"{i.name}: {i.kind} {i.dtype}{_shape(i.shape)}"
    if i.kind == "image":
        text += (f" {i.layout} {i.color}, x * {i.scale:.6g}, mean {list(i.mean)}, "
                 f"std {list(i.std)}")
        text += _resize_text(i)
    if i.vocab_size is not None:
        text += f", vocabulary {i.vocab_size}"
    if i.batch_axis != 0:
        text += f", batch axis {'none' if i.batch_axis is None else i.batch_axis}"
    return text


def _resize_text(i: InputSpec) -> str:
    """The resize an image input describes, when it is not the default (stretch, bilinear)."""
    parts = []
    if i.resize != "stretch":
        parts.append(i.resize + (f" {i.crop_fraction:g}" if i.resize == "center-crop" else ""))
    if i.pad_value is not None:
        parts.append(f"pad {i.pad_value:g}")
    if i.pad_pixel is not None:
        parts.append(f"pad pixel {i.pad_pixel:g}")
    if i.interpolation != "bilinear" or i.antialias:
        parts.append(i.interpolation + (" antialiased" if i.antialias else ""))
    return ", " + ", ".join(parts) if parts else ""


def _output_text(o: OutputSpec) -> str:
    text = f"{o.name}: {o.kind}"
    if o.labels:
        text += f", labels {labels_text(o.labels)}"
    if o.threshold is not None:
        text += f", threshold {o.threshold}"
    return text


# ---- the command line -------------------------------------------------------------------

def read_labels(text: str) -> tuple[str, ...]:
    """A labels file (one per line, blank lines skipped) or a comma-separated list."""
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            return tuple(line.strip() for line in f if line.strip())
    if "," not in text:
        raise SpecError(f"--labels {text!r}: no such file; give a file with one label per "
                        "line, or the labels as a,b,c")
    return tuple(t.strip() for t in text.split(","))


def _show(args: argparse.Namespace) -> int:
    proto = load_onnx(args.model)
    graph_in, graph_out = graph_io(proto)
    try:
        spec = existing_spec(proto)
    except SpecError as exc:
        print(f"model:     {args.model}\nspec:      invalid: {exc}")
        return 1
    inferred = None if spec else {
        "inputs": [dataclasses.asdict(i) for i in infer_inputs(graph_in)],
        "outputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in graph_out]}
    if args.json:
        print(json.dumps({"path": args.model, "spec": json.loads(spec.to_json()) if spec
                          else None, "inferred": inferred}, indent=2))
        return 0
    print(f"model:     {args.model}")
    if spec is None:
        print(f"spec:      none ({METADATA_KEY} is not in the file's metadata)")
        print("`dlinfer spec set --task ...` would start from what the graph says:")
        for i in infer_inputs(graph_in):
            print(f"{'input:':<10} {_input_text(i)}")
        for n, s, d in graph_out:
            print(f"{'output:':<10} {n}: {d}{_shape(s)}")
        return 0
    print(f"name:      {spec.name}")
    print(f"task:      {spec.task}  (spec version {spec.spec_version})")
    for line in describe_spec(spec):
        print(line)
    try:
        check_against_graph(spec, graph_in, graph_out, args.model)
    except SpecError as exc:
        print(f"problem:   {exc}")
    for key, value in sorted(spec.versions.items()):
        print(f"{key + ':':<10} {value}")
    for key, value in sorted(spec.parity.items()):
        print(f"parity.{key}: {value}")
    return 0


def parse_batch_axis(text: str) -> tuple[str, int | None]:
    """``NAME=K`` or ``NAME=none`` (argparse type of ``--batch-axis``)."""
    name, sep, value = text.rpartition("=")
    if not sep or not name or not (value == "none" or value.isdigit()):
        raise argparse.ArgumentTypeError(f"expected NAME=K or NAME=none, got {text!r}")
    return name, None if value == "none" else int(value)


def _set(args: argparse.Namespace) -> int:
    proto = load_onnx(args.model)
    out = args.out or args.model
    preset, changes = arg.preprocess_changes(args)
    try:
        spec, notes = build_spec(
            proto, os.path.splitext(os.path.basename(out))[0], task=args.task,
            labels=read_labels(args.labels) if args.labels is not None else None,
            input=args.input, output=args.output, logits=args.logits,
            threshold=args.threshold, name=args.name, preprocess=preset,
            batch_axes=dict(args.batch_axis or []), layout=args.layout, **changes)
        _check_external_data(proto, args.model, out)
    except SpecError as exc:
        raise SpecError(f"{exc}; {args.model} is unchanged") from None
    from ..export.onnx_file import save, set_spec

    set_spec(proto, spec)
    save(proto, out)
    for note in notes:
        print(f"dlinfer: note: {note}", file=sys.stderr)
    print(f"wrote the spec of {out}:")
    print(f"name:      {spec.name}\ntask:      {spec.task}")
    for line in describe_spec(spec):
        print(line)
    return 0


def _check_external_data(proto: Any, source: str, out: str) -> None:
    # External weights are found relative to the .onnx file, so a copy elsewhere
    # would lose them.
    external = any(t.data_location == 1 for t in proto.graph.initializer)
    here = os.path.dirname(os.path.abspath(source))
    if external and os.path.dirname(os.path.abspath(out)) != here:
        raise SpecError(f"{source} keeps its weights in external files: write --out into "
                        f"the same folder ({here})")


def add_spec_parser(sub: Any) -> None:
    """Register ``dlinfer spec show`` and ``dlinfer spec set``."""
    p = sub.add_parser("spec", help="show or set the dlinfer spec of any ONNX file",
                       description="Read or write the spec (task, labels, preprocessing) "
                       "that Classifier reads, in any ONNX file. Needs no TensorFlow.")
    actions = p.add_subparsers(dest="spec_command", required=True)
    show = actions.add_parser("show", help="print the spec, or what `spec set` would infer")
    show.add_argument("model", metavar="MODEL.onnx", type=arg.existing_file)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)

    s = actions.add_parser(
        "set", help="write a spec into the file (starting from its spec, or the graph)",
        description="Write the spec into MODEL.onnx (or --out). Values that contradict "
        "the graph are refused and the file is left unchanged.")
    s.add_argument("model", metavar="MODEL.onnx", type=arg.existing_file)
    s.add_argument("--out", metavar="OTHER.onnx", type=arg.output_file,
                   help="write here instead of in place")
    s.add_argument("--task", choices=TASKS, help="required when the file has no spec yet")
    s.add_argument("--labels", metavar="FILE|a,b,c",
                   help="a file with one label per line, or a comma-separated list "
                   "(default for a classifier: index labels 0..n-1)")
    s.add_argument("--input", metavar="NAME", help="the image input the image flags describe")
    s.add_argument("--output", metavar="NAME", help="the output to classify with")
    s.add_argument("--logits", action="store_true",
                   help="the output is logits: Classifier applies a softmax")
    s.add_argument("--threshold", type=arg.finite_float(0, 1),
                   help="binary_classification: P(labels[1]) >= T wins (default 0.5)")
    s.add_argument("--name", help="the model's name in the spec (default: the file stem)")
    s.add_argument("--batch-axis", metavar="NAME=K|none", action="append",
                   type=arg.validating(parse_batch_axis, "NAME=K"),
                   help="the axis of input NAME that holds a batch's items, or none (fed "
                   "whole, never grouped); repeatable (default: inferred where certain)")
    image = arg.add_preprocess_flags(s)
    image.add_argument("--layout", choices=("NCHW", "NHWC"))
    s.set_defaults(func=_set)
