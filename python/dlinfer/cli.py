"""The ``dlinfer`` command line: ``info`` and ``predict``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .classifier import Classifier
from .errors import DlinferError
from .model import Model


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, tensorrt or auto")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all)")


def _info(args: argparse.Namespace) -> int:
    model = Model(args.model, device=args.device, threads=args.threads)
    spec = model.spec
    data: dict[str, Any] = {
        "path": model.path,
        "device": model.device,
        "providers": model.providers,
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name} for t in model.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name} for t in model.outputs],
        "spec": json.loads(spec.to_json()) if spec else None,
        "metadata_keys": sorted(model.metadata),
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"model:     {model.path}")
    print(f"device:    {model.device} (active providers: {', '.join(model.providers)})")
    for t in model.inputs:
        print(f"input:     {t}")
    for t in model.outputs:
        print(f"output:    {t}")
    if spec is None:
        print("spec:      none (not exported by dlinfer; Classifier cannot use it)")
        return 0
    inp = spec.input
    print(f"name:      {spec.name}")
    print(f"task:      {spec.task}")
    if spec.labels:
        print(f"labels:    {', '.join(spec.labels)}")
    if spec.threshold is not None:
        print(f"threshold: {spec.threshold}")
    if inp.kind == "image":
        print(
            f"images:    {inp.layout} {inp.color}, x * {inp.scale:.6g}, "
            f"mean {list(inp.mean)}, std {list(inp.std)}"
        )
    for key, value in sorted(spec.versions.items()):
        print(f"{key + ':':<10} {value}")
    for key, value in sorted(spec.parity.items()):
        print(f"parity.{key}: {value}")
    return 0


def _predict_folder(clf: Classifier, args: argparse.Namespace) -> int:
    """Stream a folder through the classifier, one CSV/text row per file as it comes."""
    import csv
    import os

    folder = args.images[0]
    handle = open(args.csv, "w", newline="") if args.csv else None
    try:
        writer = csv.writer(handle) if handle else None
        if writer:
            writer.writerow(["file", "label", "index", "probability", "top"])
        count = 0
        for path, pred in clf.predict_folder(
            folder, batch_size=args.batch_size, top_k=args.top_k,
            progress=not args.no_progress and sys.stderr.isatty() or args.progress,
            on_error="skip",
        ):
            count += 1
            rel = os.path.relpath(path, folder)
            top = ";".join(f"{c.label}:{c.probability:.6f}" for c in pred.top)
            if writer:
                writer.writerow([rel, pred.label, pred.index, f"{pred.probability:.6f}", top])
            elif args.json:
                print(json.dumps({"file": rel, **pred.to_dict()}))
            else:
                print(f"{rel}  {top.replace(';', '  ').replace(':', ' ')}")
    finally:
        if handle:
            handle.close()
    if args.csv:
        print(f"{count} images -> {args.csv}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    import os

    clf = Classifier(args.model, device=args.device, threads=args.threads)
    if len(args.images) == 1 and os.path.isdir(args.images[0]):
        return _predict_folder(clf, args)
    preds = clf.predict(args.images, top_k=args.top_k)
    if args.json:
        out = [{"file": path, **p.to_dict()} for path, p in zip(args.images, preds)]
        print(json.dumps(out, indent=2))
        return 0
    width = max(len(p) for p in args.images)
    for path, pred in zip(args.images, preds):
        cands = "  ".join(f"{c.label} {c.probability:.4f}" for c in pred.top)
        print(f"{path:<{width}}  {cands}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlinfer", description="Run Keras workshop models exported to ONNX."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show a model's inputs, outputs, metadata and providers")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_device(p)
    p.set_defaults(func=_info)

    p = sub.add_parser("predict", help="classify image files, or every image in a folder")
    p.add_argument("model")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, or one folder to walk (streamed in batches)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--batch-size", type=int, default=64, help="folder mode: images per batch")
    p.add_argument("--csv", metavar="OUT", help="folder mode: write file,label,... rows here")
    p.add_argument("--progress", action="store_true", help="folder mode: always show progress")
    p.add_argument("--no-progress", action="store_true", help="folder mode: never show it")
    _add_device(p)
    p.set_defaults(func=_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DlinferError as exc:
        print(f"dlinfer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
