"""`dlinfer explain`, `dlinfer activations`, `dlinfer filters`: what a convnet sees, as PNGs."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from . import args as arg
from .provider_flags import provider_kwargs

__all__ = ["add_explain_parsers"]


def _classifier(args: argparse.Namespace) -> Any:
    from ..tasks.classifier import Classifier

    return Classifier(args.model, device=args.device, threads=args.threads,
                      **provider_kwargs(args))


def _save_png(image: Any, path: str) -> None:
    from ..files import write_atomic

    write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def _stem(path: str, used: set[str]) -> str:
    """A file name for ``path``'s overlay, unique among this run's."""
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return name


def explain_command(args: argparse.Namespace) -> int:
    from ..escape import file_name, visible
    from ..explain.cam import prepare
    from ..explain.render import overlay
    from ..files import write_atomic

    clf = _classifier(args)
    prepared = prepare(clf, args.images)  # decoded once: the overlays need the pixels
    results = clf.explain(prepared.pixels, method=args.method, layer=args.layer,
                          target=args.target, batch_size=args.batch_size,
                          precision=args.precision)
    os.makedirs(args.out, exist_ok=True)
    used: set[str] = set()
    records = []
    for path, (pixels, order), e in zip(args.images, prepared.pixels, results):
        png = os.path.join(args.out, f"{_stem(path, used)}_{e.method}.png")
        _save_png(overlay(pixels, e.heatmap, order), png)
        records.append({"file": file_name(path), "overlay": os.path.basename(png),
                        **e.to_dict(values=True)})
        print(f"{visible(path)}: {visible(e.label)} ({e.probability:.3f}) -> {visible(png)}")
    report = os.path.join(args.out, "explanations.json")
    text = json.dumps({"model": file_name(args.model), "method": args.method,
                       "explanations": records}, indent=1, allow_nan=False)
    write_atomic(report, lambda tmp: open(tmp, "w").write(text + "\n"))
    print(f"numbers -> {visible(report)}")
    return 0


def activations_command(args: argparse.Namespace) -> int:
    from ..escape import visible
    from ..explain.features import activations
    from ..explain.render import grid, tile_image

    clf = _classifier(args)
    found, value = activations(clf, args.image, args.layer)
    if value.ndim != 3:
        from ..errors import InputError

        raise InputError(f"layer {args.layer!r} ({found.tensor}) has shape "
                         f"{list(value.shape)}: no channels of a spatial map to draw")
    channels = value[: args.max_channels]
    _save_png(grid([tile_image(c) for c in channels]), args.out)
    print(f"{visible(found.tensor)}: {value.shape[0]} channels of {value.shape[1]}x"
          f"{value.shape[2]} ({len(channels)} drawn) -> {visible(args.out)}")
    return 0


def filters_command(args: argparse.Namespace) -> int:
    from ..escape import visible
    from ..explain.features import filters
    from ..explain.render import grid

    clf = _classifier(args)
    patterns = filters(clf, args.layer, count=args.count, steps=args.steps, seed=args.seed)
    _save_png(grid(patterns.tiles, cmap=None), args.out)
    how = ("kernels" if patterns.kind == "kernels" else
           f"input patterns, {args.steps} gradient-ascent steps")
    print(f"{visible(patterns.layer.tensor)}: {len(patterns.tiles)} filters ({how}) -> "
          f"{visible(args.out)}")
    return 0


def _target(text: str) -> int | str:
    if not text:
        raise argparse.ArgumentTypeError("must be a class index or a label, got ''")
    return int(text) if text.lstrip("-").isdigit() else text


def _layer(text: str) -> str:
    # Checked against the graph when the model is open (InputError, exit 1).
    if not text:
        raise argparse.ArgumentTypeError("must be a tensor or Keras layer name, got ''")
    return text


target = arg.validating(_target, "class")
layer_name = arg.validating(_layer, "layer")


_LAYER_HELP = ("an ONNX tensor name or, for a dlinfer export, a Keras layer name (its "
               "output, activation included); default: the last convolution block with "
               "a spatial size > 1")


# dlinfer.explain.cam.METHODS and dlinfer.explain.gradient.PRECISIONS, spelled here so
# that building the parser imports nothing
METHODS = ("gradcam", "saliency", "occlusion")
PRECISIONS = ("float32", "bf16x3")


def add_explain_parsers(sub: Any) -> None:
    from .cli import _add_device  # --device, --threads and the provider flags, as predict's
    from .triton_command import repo_dir as out_dir  # a folder, new or existing

    p = sub.add_parser(
        "explain", help="Grad-CAM, saliency or occlusion heatmaps over images",
        description="Write one overlay PNG per image (the heatmap over the image as given) "
        "and explanations.json (target, label, probability, layer, the map's numbers) to "
        "--out. See docs/explain.md.")
    p.add_argument("model", type=arg.existing_file)
    p.add_argument("images", nargs="+", metavar="IMAGE", type=arg.existing_file)
    p.add_argument("--method", choices=METHODS, default="gradcam")
    p.add_argument("--layer", type=layer_name, default=None, help=_LAYER_HELP + " (gradcam only)")
    p.add_argument("--target", type=target, default=None,
                   help="class index or label to explain (default: the predicted class)")
    p.add_argument("--out", type=out_dir, required=True, metavar="DIR")
    p.add_argument("--batch-size", type=arg.int_range(1, arg.MAX_BATCH), default=32,
                   help="images per gradient pass (default 32)")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16x3",
                   help="the gradients' products: bf16x3 (default: three bfloat16 products "
                   "on AMX where --backend openvino runs the model, float32 elsewhere) or "
                   "float32 (docs/explain.md)")
    _add_device(p)
    p.set_defaults(func=explain_command)

    p = sub.add_parser(
        "activations", help="every channel of an intermediate tensor for one image, as a grid",
        description="Run the model on one image and draw each channel of --layer's tensor "
        "(each on its own range, viridis) into one PNG grid.")
    p.add_argument("model", type=arg.existing_file)
    p.add_argument("image", type=arg.existing_file)
    p.add_argument("--layer", type=layer_name, default=None, help=_LAYER_HELP)
    p.add_argument("--out", type=arg.output_file, required=True, metavar="PNG")
    p.add_argument("--max-channels", type=arg.int_range(1, 4096), default=256,
                   help="draw at most this many channels (default 256)")
    _add_device(p)
    p.set_defaults(func=activations_command)

    p = sub.add_parser(
        "filters", help="a layer's filters as pictures (kernels, or gradient-ascent patterns)",
        description="The first convolution's kernels as images; for a deeper layer, the "
        "input pattern that maximizes each filter's centre unit, by gradient ascent on the "
        "input from grey noise.")
    p.add_argument("model", type=arg.existing_file)
    p.add_argument("--layer", type=layer_name, default=None, help=_LAYER_HELP)
    p.add_argument("--out", type=arg.output_file, required=True, metavar="PNG")
    p.add_argument("--count", type=arg.int_range(1, 4096), default=16,
                   help="the first N filters (default 16)")
    p.add_argument("--steps", type=arg.int_range(1, 10_000), default=30,
                   help="gradient-ascent steps (default 30)")
    p.add_argument("--seed", type=arg.non_negative_int, default=0,
                   help="seed of the starting noise")
    _add_device(p)
    p.set_defaults(func=filters_command)
