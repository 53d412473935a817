"""The ``dlinfer`` command line: ``info``, ``predict`` and ``verify``."""

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


def _predict(args: argparse.Namespace) -> int:
    clf = Classifier(args.model, device=args.device, threads=args.threads)
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


def _verify(args: argparse.Namespace) -> int:
    from .verify import verify

    report = verify(args.keras, args.onnx, args.data, per_layer=args.per_layer, atol=args.atol,
                    rtol=args.rtol, samples=args.samples)
    print(report.to_json() if args.json else report.format())
    return 0 if report.ok else 1


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

    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("model")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_device(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "verify",
        help="compare Keras, onnxruntime and dlinfer's reference kernels",
        description="Compare a Keras model with its ONNX export on the same samples: Keras, "
        "onnxruntime and dlinfer's reference executor. Exit status 1 on mismatch.",
    )
    p.add_argument("keras", metavar="KERAS_FILE")
    p.add_argument("onnx", metavar="ONNX_FILE")
    p.add_argument("--data", metavar="NPY|DIR",
                   help=".npy array or image folder (default: random inputs in the spec's range)")
    p.add_argument("--samples", type=int, default=16, help="at most this many samples (default 16)")
    p.add_argument("--per-layer", action="store_true",
                   help="find the first Keras layer that diverges")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=_verify)
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
