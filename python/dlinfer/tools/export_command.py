"""`dlinfer export`: a saved Keras model in, a checked ONNX file with its spec out."""

from __future__ import annotations

import argparse
from typing import Any

from .._optional import import_optional

__all__ = ["add_export_arguments", "add_export_parser", "export_command"]


def export_command(args: argparse.Namespace) -> int:
    """`dlinfer export` (also `python -m training export`): parsed arguments in, exit status out."""
    export = import_optional("dlinfer.export", "export", "`dlinfer export`")
    labels = tuple(x for x in args.labels.split(",") if x) if args.labels else ()
    export.export_file(args.keras_file, args.out, labels=labels, task=args.task, scale=args.scale)
    print(f"wrote {args.out}")
    return 0


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a saved .keras model to ONNX with its spec",
                       description="Convert a .keras file to ONNX (opset 17) with dlinfer's "
                       "spec in its metadata. Needs the export extra (TensorFlow, tf2onnx).")
    add_export_arguments(p)
    p.set_defaults(func=export_command)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `dlinfer export` (the training CLI's export takes the same)."""
    p.add_argument("keras_file", metavar="KERAS_FILE")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--labels", default=None, help="comma-separated class labels")
    p.add_argument("--task", default=None,
                   choices=["classification", "binary_classification", "regression",
                            "generation"],
                   help="default: classification with --labels (binary for a single sigmoid "
                        "output), else regression")
    p.add_argument("--scale", type=float, default=None,
                   help="pixel scale the model expects (default 1/255 for images)")
