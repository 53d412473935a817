"""`dlinfer export`: a saved Keras model in, a checked ONNX file with its spec out."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .._optional import import_optional
from ..errors import SpecError
from ..spec import METADATA_KEY
from ..verification.compare import DEFAULT_ATOL, DEFAULT_RTOL
from . import args as arg
from .spec_tool import read_labels

__all__ = ["add_export_arguments", "add_export_parser", "export_command", "parity_summary",
           "pixels_summary"]


def _labels(values: list[str] | None) -> Any:
    """``--labels`` values: one list for a single output, or ``NAME=labels`` per output."""
    if not values:
        return None
    named = [v for v in values if "=" in v.split(",")[0] and not os.path.isfile(v)]
    if not named:
        if len(values) > 1:
            raise SpecError("--labels given twice: name the outputs (--labels NAME=a,b,c)")
        return read_labels(values[0])
    if len(named) != len(values):
        raise SpecError("--labels: name every output (NAME=FILE or NAME=a,b,c) or none")
    return {v.split("=", 1)[0]: read_labels(v.split("=", 1)[1]) for v in values}


def parity_summary(parity: dict[str, Any]) -> str:
    """One line: what the export was checked on, and how closely it matched Keras."""
    heads = []
    for name, stats in parity.get("outputs", {}).items():
        agree = stats.get("argmax_agreement")
        heads.append(f"{name} {stats['max_abs_diff']:.3g}"
                     + ("" if agree is None else f" (argmax agreement {agree:.0%})"))
    return (f"matches Keras on {parity.get('samples')} samples ({parity.get('data')}): "
            f"max abs diff {', '.join(heads)}; tolerance {parity.get('atol'):g} + "
            f"{parity.get('rtol'):g}*|keras|"
            + ("" if parity.get("accuracy") is None else
               f"; top-1 accuracy {parity['accuracy']:.2%} on {parity.get('samples')} "
               "labelled images under the spec"))


def pixels_summary(spec: dict[str, Any]) -> list[str]:
    """How each image input's preprocessing was decided, and export's per-preset table."""
    from ..export.accuracy import format_table

    lines = []
    for name, decided in spec.get("extra", {}).get("pixels", {}).items():
        preset = decided.get("preset")
        how = decided.get("how")
        if how == "auto":
            lines.append(format_table(decided["accuracy"], preset,
                                      spec.get("parity", {}).get("samples", 0)))
        why = f": {decided['why']}" if decided.get("why") else ""
        lines.append(f"input {name!r}: " + (f"preset {preset} ({how}{why})" if preset else
                                             "scale/mean/std as given"))
    return lines


def export_command(args: argparse.Namespace) -> int:
    """`dlinfer export` (also `python -m training export`): parsed arguments in, exit status out."""
    export = import_optional("dlinfer.export", "export", "`dlinfer export`")
    preset, changes = arg.preprocess_changes(args)
    given = {k: changes.pop(k) for k in ("scale", "mean", "std", "color") if k in changes}
    proto = export.export_file(args.keras_file, args.out, labels=_labels(args.labels),
                               task=args.task, preprocess=preset, image=changes,
                               strict=args.strict, data=args.data, samples=args.samples,
                               atol=args.atol, rtol=args.rtol,
                               unsafe_deserialization=args.unsafe_deserialization, **given)
    spec = json.loads(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY))
    for line in pixels_summary(spec):
        print(line)
    print(f"wrote {args.out}: {parity_summary(spec['parity'])}")
    return 0


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a saved .keras or .h5 model to ONNX, checked "
                       "against Keras",
                       description="Convert a .keras file (or a legacy .h5 one) to ONNX (opset "
                       "17) with dlinfer's "
                       "spec in its metadata, then check that the file takes the model's inputs, "
                       "gives its outputs and matches Keras on sample inputs; nothing is written "
                       "if it does not. Needs the export extra (TensorFlow, tf2onnx).")
    add_export_arguments(p)
    p.set_defaults(func=export_command)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `dlinfer export` (the training CLI's export takes the same)."""
    p.add_argument("keras_file", metavar="KERAS_FILE", type=arg.existing_file)
    p.add_argument("--out", required=True, type=arg.output_file, help="the .onnx file to write")
    p.add_argument("--labels", action="append", metavar="FILE|a,b,c",
                   help="class labels: a file with one per line, or comma-separated; for a "
                        "model with several outputs, NAME=FILE or NAME=a,b,c per output "
                        "(default for a classifier: 0..n-1)")
    p.add_argument("--task", default=None,
                   choices=["classification", "binary_classification", "regression",
                            "generation"],
                   help="default: classification with --labels or a softmax output (binary "
                        "for one sigmoid unit and two labels), else regression")
    arg.add_preprocess_flags(p, extra_presets=("auto",), scale_help=(
        "default: what the model says (0..255 when it scales its own pixels, a "
        "keras.applications base's convention), else 1/255, announced"))
    p.add_argument("--data", metavar="NPY|NPZ|DIR", default=None, type=arg.existing_path,
                   help="real samples to check the export on: .npy (one input), .npz keyed by "
                        "input name, an image folder, or a labelled folder (one sub-folder "
                        "of images per class, named by label: also reports top-1 accuracy; "
                        "needed by --preprocess auto) (default: random valid inputs)")
    p.add_argument("--unsafe-deserialization", action="store_true",
                   help="load Lambda layers, which Keras's safe mode refuses: this runs the "
                        "Python code stored in the file, so use it only on files you trust")
    p.add_argument("--strict", action="store_true",
                   help="refuse an export whose outputs do not depend on the inputs (the "
                        "self-check would prove nothing)")
    p.add_argument("--samples", type=arg.int_range(1, arg.MAX_SAMPLES), default=16,
                   help="at most this many samples (16)")
    p.add_argument("--atol", type=arg.finite_float(0), default=DEFAULT_ATOL,
                   help=f"absolute tolerance against Keras (default {DEFAULT_ATOL:g})")
    p.add_argument("--rtol", type=arg.finite_float(0), default=DEFAULT_RTOL,
                   help=f"relative tolerance against Keras (default {DEFAULT_RTOL:g})")
