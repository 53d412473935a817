"""python -m training {list,train,export,make-images,demo}."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dlinfer.tools import args as arg
from dlinfer.tools.cli import add_debug_flag, print_error_line, run_command
from dlinfer.tools.export_command import add_export_arguments, export_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the zoo: names, parameter counts, data sources")

    p = sub.add_parser("train", help="train a zoo model, export it to ONNX, check parity")
    p.add_argument("name")
    p.add_argument("--epochs", type=arg.int_range(1, arg.MAX_ITERS), default=None,
                   help="training epochs (training steps for gan_1d); default: the model's")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--data", default=None,
                   help="data source (see `list`), or an image folder root/<class>/*.jpg for "
                        "small_convnet and vgg16_transfer; default: the offline one")
    p.add_argument("--out", default="artifacts")
    p.add_argument("--weights", default=None,
                   help="vgg16_transfer base weights: imagenet (online), none, or a file")
    p.add_argument("--image-size", type=arg.int_range(1, 65_536), default=150,
                   help="folder models' input size (small_convnet: at least 46, "
                        "vgg16_transfer: 32)")
    p.add_argument("--samples", type=int, default=None,
                   help="images per class in the generated default folder (500)")
    p.add_argument("--n-steps", type=int, default=3, help="time-series window length")
    p.add_argument("--fine-tune-epochs", type=int, default=1,
                   help="vgg16_transfer stage 2 (block5 unfrozen); 0 skips it")
    p.add_argument("--optimize", choices=["int8", "fp16", "graph"], default=None,
                   help="also write NAME.MODE.onnx with `dlinfer optimize`, gated on the "
                        "held-out split (int8 calibrates on training images)")
    p.add_argument("--max-drop", type=float, default=0.5,
                   help="--optimize: largest accuracy/agreement drop allowed, in points")

    p = sub.add_parser("export", help="export a saved .keras model to ONNX (as `dlinfer export`)")
    add_export_arguments(p)

    p = sub.add_parser("make-images",
                       help="write an image folder OUT/<class>/*.jpg from Fashion-MNIST classes")
    p.add_argument("out")
    p.add_argument("--classes", default="sneaker,ankle_boot",
                   help="comma-separated Fashion-MNIST class names (spaces as _)")
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--size", type=int, default=150)

    p = sub.add_parser("demo", help="the `make demo` job: train, export, check, classify, time")
    p.add_argument("--epochs", type=arg.int_range(1, arg.MAX_ITERS), default=5)
    p.add_argument("--out", default="artifacts")
    return parser


def _list() -> int:
    from . import zoo

    print(f"{'name':<18} {'params':>11}  {'metric':<22} data")
    for e in zoo.ZOO.values():
        print(f"{e.name:<18} {e.params:>11,}  {e.metric:<22} {e.data_help}")
        if e.notes:
            print(f"{'':<18} {'':>11}  {'':<22} ({e.notes})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """dlinfer's exit-status rule (docs/errors.md): an error while running is one line
    ``dlinfer: error: ...`` and exit 1, with the traceback only under ``--debug``."""
    parser = build_parser()
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    if args.command == "list":
        return _list()
    if args.command == "train":
        from dlinfer import OptimizeError

        from .data import DataUnavailableError
        from .train import train
        from .zoo import WeightsUnavailableError

        try:
            result = train(args.name, epochs=args.epochs, data=args.data, out=args.out,
                           batch_size=args.batch_size, weights=args.weights,
                           image_size=args.image_size, samples=args.samples,
                           n_steps=args.n_steps, fine_tune_epochs=args.fine_tune_epochs,
                           optimize=args.optimize, max_drop=args.max_drop)
        except (DataUnavailableError, WeightsUnavailableError, OptimizeError) as exc:
            # Missing data or weights is the user's to fix, not a bug: the message alone.
            print_error_line(str(exc))
            return 1
        except SystemExit as exc:  # an unknown model or --data source, named by the zoo
            if not isinstance(exc.code, str):
                raise
            print_error_line(exc.code)
            return 1
        print(f"wrote {result.keras_path}, {result.onnx_path}, {result.report_path}")
        return 0
    if args.command == "export":
        return export_command(args)
    if args.command == "make-images":
        from .data import make_images

        classes = tuple(c for c in args.classes.split(",") if c)
        make_images(args.out, classes, per_class=args.per_class, size=args.size)
        print(f"wrote {args.per_class} images per class for {', '.join(classes)} under {args.out}")
        return 0
    if args.command == "demo":
        from .demo import run

        return run(epochs=args.epochs, out=args.out)
    return 2


if __name__ == "__main__":
    sys.exit(main())
