"""python -m training {list,train,export,demo}."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the zoo: names, parameter counts, data sources")

    p = sub.add_parser("train", help="train a zoo model, export it to ONNX, check parity")
    p.add_argument("name")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--data", default=None, help="data source (see `list`); default: offline")
    p.add_argument("--out", default="artifacts")

    p = sub.add_parser("export", help="export a saved .keras model to ONNX")
    p.add_argument("keras_file")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--labels", default=None, help="comma-separated class labels")

    p = sub.add_parser("demo", help="the `make demo` job: train, export, check, classify, time")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", default="artifacts")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        from . import zoo

        print(f"{'name':<20} {'params':>12}  data")
        for e in zoo.ZOO.values():
            print(f"{e.name:<20} {e.params:>12,}  {e.data_help}")
        return 0
    if args.command == "train":
        from .train import train

        result = train(args.name, epochs=args.epochs, data=args.data, out=args.out,
                       batch_size=args.batch_size)
        print(f"wrote {result.keras_path}, {result.onnx_path}, {result.report_path}")
        return 0
    if args.command == "export":
        from . import export
        from ._tf import keras

        model = keras.models.load_model(args.keras_file)
        labels = tuple(args.labels.split(",")) if args.labels else ()
        task = "classification" if labels else "regression"
        export.to_onnx(model, args.out, task=task, labels=labels)
        print(f"wrote {args.out}")
        return 0
    if args.command == "demo":
        from .demo import run

        return run(epochs=args.epochs, out=args.out)
    return 2


if __name__ == "__main__":
    sys.exit(main())
