"""`dlinfer optimize`: int8, float16 or an offline-optimized graph, gated on accuracy."""

from __future__ import annotations

import argparse
from typing import Any

from . import args as arg

__all__ = ["add_optimize_parser", "optimize_command"]


def optimize_command(args: argparse.Namespace) -> int:
    """Parsed arguments in, exit status out (a refusal raises OptimizeError: status 1)."""
    from ..optimize import optimize

    options: dict[str, Any] = {"method": args.method, "level": args.level,
                               "device": args.graph_device, "backend": args.backend}
    if args.per_tensor:
        options["per_channel"] = False
    if args.reduce_range is not None:
        options["reduce_range"] = args.reduce_range == "on"
    if args.quantize_first:
        options["keep_shallow"] = False
    if args.fp16_io:
        options["keep_io_types"] = False
    if args.bf16:
        options["bf16"] = True
    report = optimize(args.model, args.out, args.mode, calibrate=args.calibrate,
                      samples=args.samples, max_drop=args.max_drop, eval=args.eval,
                      json_path=args.json, seed=args.seed, **options)
    print(report.format())
    return 0


def add_optimize_parser(sub: Any) -> None:
    p = sub.add_parser(
        "optimize", help="int8 / float16 / optimized-graph copy of a model, gated on accuracy",
        description="Convert a float32 ONNX model and compare the result with it on held-out "
        "data (--eval, else the calibration data).  If the drop in accuracy (with labels) or "
        "in top-1 agreement exceeds --max-drop points, nothing is written, the layer adding "
        "the most error is named and the exit status is 1.  The report goes into the "
        "output's spec (extra.optimize).")
    p.add_argument("model", type=arg.existing_file, help="the float32 .onnx file")
    p.add_argument("--out", required=True, type=arg.output_file,
                   help="where to write the optimized model")
    p.add_argument("--mode", choices=("int8", "fp16", "graph", "bf16"), required=True,
                   help="bf16: the float32 graph, run in bfloat16 by OpenVINO on CPUs with "
                   "AMX or AVX-512 BF16 (docs/optimize.md)")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="the backend the result is gated on and recorded for (bf16: "
                   "openvino); docs/runtime.md")
    p.add_argument("--calibrate", metavar="DATA", type=arg.existing_path,
                   help="folder of images, or .npy/.npz of model inputs (uint8 images are "
                   "normalized per the spec); an .npz may hold a 'labels' array (int8: required)")
    p.add_argument("--samples", type=arg.int_range(1, arg.MAX_SAMPLES), default=512,
                   help="calibration samples (default 512)")
    p.add_argument("--max-drop", type=arg.finite_float(0, 100), default=0.5,
                   help="largest accepted drop, in percentage points (default 0.5)")
    p.add_argument("--eval", metavar="DATA", type=arg.existing_path,
                   help="held-out data, as --calibrate")
    p.add_argument("--json", metavar="PATH", type=arg.output_file,
                   help="also write the report as JSON")
    p.add_argument("--seed", type=arg.int_range(0, 2**32 - 1), default=0,
                   help="for inputs drawn at random")
    p.add_argument("--method", default="minmax",
                   choices=("minmax", "entropy", "percentile", "nncf"),
                   help="int8 calibration method (default minmax); nncf: NNCF's own int8 "
                   "route (pip install 'dlinfer[nncf]'), often faster on OpenVINO")
    p.add_argument("--bf16", action="store_true",
                   help="int8: what stays float (residual adds, softmax) runs in bfloat16 on "
                   "OpenVINO, gated as int8+bf16 (docs/optimize.md)")
    p.add_argument("--per-tensor", action="store_true",
                   help="int8: one weight scale per tensor instead of per output channel")
    p.add_argument("--reduce-range", choices=("on", "off"), default=None,
                   help="int8: 7-bit weights (default: on for x86 CPUs without VNNI)")
    p.add_argument("--quantize-first", action="store_true",
                   help="int8: quantize shallow first convolutions too (by default they stay "
                   "float32: int8 is slower there)")
    p.add_argument("--fp16-io", action="store_true",
                   help="fp16: float16 inputs and outputs too (default: float32 kept, so "
                   "callers do not change; Classifier feeds either)")
    p.add_argument("--level", default="extended", choices=("basic", "extended", "all"),
                   help="graph: onnxruntime optimization level (default extended)")
    p.add_argument("--graph-device", default="cpu", choices=("cpu", "cuda"),
                   help="graph: the provider the graph is optimized for (default cpu)")
    p.set_defaults(func=optimize_command)
