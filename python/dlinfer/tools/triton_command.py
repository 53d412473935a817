"""`dlinfer export-triton`: a Triton Inference Server model repository from an exported model."""

from __future__ import annotations

import argparse
import os
from typing import Any

from . import args as arg

__all__ = ["add_triton_parser", "triton_command"]


def triton_command(args: argparse.Namespace) -> int:
    from ..serving.triton import EntryExistsError, export_triton

    try:
        repo = export_triton(
            args.model, args.repo, name=args.name, max_batch_size=args.max_batch_size,
            preferred_batch_sizes=args.preferred_batch_sizes or (),
            max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
            device=args.device, bake_normalization=args.bake_normalization,
            overwrite=args.force)
    except EntryExistsError as exc:  # in the command line's words
        raise EntryExistsError(exc.target, "--force") from None
    print(f"wrote {repo.path}/ (config.pbtxt, {'labels.txt, ' if repo.labels else ''}"
          "1/model.onnx, dlinfer_spec.json)")
    for note in repo.notes:
        print(f"note: {note}")
    return 0


def _repo_dir(text: str) -> str:
    if not text or (os.path.exists(text) and not os.path.isdir(text)):
        raise argparse.ArgumentTypeError(f"must be a folder (new or existing), got {text!r}")
    return text


def _model_name(text: str) -> str:
    # The name is a folder of the repository and what clients call the model.
    if not text or text.startswith(".") or any(c in text for c in "/\\\0"):
        raise argparse.ArgumentTypeError(f"must be a folder name without '/', got {text!r}")
    return text


repo_dir = arg.validating(_repo_dir, "folder")
model_name = arg.validating(_model_name, "model name")


def add_triton_parser(sub: Any) -> None:
    from ..serving.triton import DEFAULT_MAX_QUEUE_DELAY_US

    p = sub.add_parser(
        "export-triton", help="write a Triton Inference Server model repository entry",
        description="Write REPO/NAME/ with config.pbtxt (platform onnxruntime_onnx, dims without "
        "the batch axis, dynamic_batching, instance_group, label_filename), labels.txt, "
        "1/model.onnx and the preprocessing spec (dlinfer_spec.json) for clients.")
    p.add_argument("model", type=arg.existing_file, help="the exported .onnx file")
    p.add_argument("--repo", type=repo_dir, required=True, metavar="DIR",
                   help="the model repository folder")
    p.add_argument("--name", type=model_name, default=None,
                   help="model name in the repository (default: the spec's name, else the "
                   "file stem; an optimized model's gets _int8, _fp16 or _graph)")
    p.add_argument("--max-batch-size", type=arg.int_range(0, arg.MAX_BATCH), default=None,
                   help="Triton's max_batch_size (default 32; 0 for a model without a batch axis)")
    p.add_argument("--preferred-batch-sizes", type=arg.batch_sizes(), default=None,
                   metavar="N,N", help="dynamic_batching preferred_batch_size, comma-separated")
    p.add_argument("--max-queue-delay-us", type=arg.int_range(0, 60_000_000),
                   default=DEFAULT_MAX_QUEUE_DELAY_US,
                   help=f"dynamic_batching delay (default {DEFAULT_MAX_QUEUE_DELAY_US}, "
                   "dlinfer serve's 2 ms)")
    p.add_argument("--instances", type=arg.int_range(1, 1024), default=1,
                   help="instance_group count (default 1)")
    p.add_argument("--device", type=arg.device, default="cpu",
                   help="cpu (KIND_CPU), cuda[:N] (KIND_GPU) or tensorrt[:N] (KIND_GPU + TensorRT)")
    p.add_argument("--bake-normalization", action="store_true",
                   help="put (x*scale - mean)/std into the graph: clients send raw pixel values")
    p.add_argument("--force", action="store_true", help="replace an existing REPO/NAME")
    p.set_defaults(func=triton_command)
