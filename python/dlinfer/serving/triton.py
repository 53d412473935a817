"""A Triton Inference Server model repository from an exported model (``dlinfer export-triton``).

Writes ``REPO/NAME/``::

    config.pbtxt        platform onnxruntime_onnx, tensors with their dims (the batch axis
                        left out), dynamic_batching, instance_group, label_filename
    labels.txt          the classification output's labels, one per line
    1/model.onnx        the model (normalization baked in with bake_normalization=True)
    dlinfer_spec.json   the preprocessing spec, for clients: size, layout, colour, resize
                        mode, interpolation, pad, scale, mean and std

Triton generates only a minimal config for ONNX and knows nothing of labels or
preprocessing; this repository carries both.  Triton runs the graph only: what the graph
cannot do (decoding, the resize with its mode, crop and pad, the colour order, and
without ``bake_normalization`` the normalization) stays in ``dlinfer_spec.json`` for the
client, and the notes name it.  With ``bake_normalization`` the image input takes raw
pixel values (0..255, as float) and a Sub/Div front computes ``(x * scale - mean) / std``
inside the graph, so a plain Triton client only resizes.  KServe serves the same folder
(``modelFormat: onnx``, protocol v2).

The default entry name is the spec's name, with the variant of an optimized model
(``_int8``, ``_fp16``, ``_graph``) appended so that it does not replace the float32 entry.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._optional import import_optional
from ..checks import check_int
from ..errors import InputError, SpecError
from ..runtime.model import Model
from ..runtime.providers import parse_device
from ..spec import ModelSpec

__all__ = ["TRITON_DATATYPES", "EntryExistsError", "TritonRepository", "entry_name",
           "export_triton"]

# NumPy dtype names -> Triton's model_config DataType.
TRITON_DATATYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32", "uint64": "TYPE_UINT64", "int8": "TYPE_INT8",
    "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "object": "TYPE_STRING", "str": "TYPE_STRING",
}
# dlinfer serve's defaults: --max-batch-size 32, --max-delay-ms 2.
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_QUEUE_DELAY_US = 2_000
_VERSION = "1"


class EntryExistsError(InputError):
    """The repository already has an entry of that name (``target``)."""

    def __init__(self, target: str, replace_with: str = "overwrite=True") -> None:
        super().__init__(f"{target} already exists; pass {replace_with} to replace it, or "
                         "another name")
        self.target = target


@dataclass(frozen=True)
class TritonRepository:
    """What :func:`export_triton` wrote, and what a reader of the config should know."""

    path: str  # REPO/NAME
    config: str  # the text of config.pbtxt
    labels: tuple[str, ...]
    baked: bool
    notes: tuple[str, ...]

    @property
    def model_file(self) -> str:
        return os.path.join(self.path, _VERSION, "model.onnx")


def export_triton(
    model: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    *,
    name: str | None = None,
    max_batch_size: int | None = None,
    preferred_batch_sizes: Sequence[int] = (),
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instances: int = 1,
    device: str = "cpu",
    bake_normalization: bool = False,
    overwrite: bool = False,
) -> TritonRepository:
    """Write a Triton model repository entry for ``model`` under ``repo`` (see the module).

    ``max_batch_size`` defaults to 32 for a model with a dynamic batch axis and must be
    0 for one without.  ``device``: ``cpu`` (KIND_CPU), ``cuda``/``cuda:N`` (KIND_GPU,
    on GPU N) or ``tensorrt[:N]`` (KIND_GPU with the TensorRT accelerator).  The entry is
    written whole or not at all; an existing one is replaced only with ``overwrite``.
    """
    source = os.fspath(model)
    m = Model(source, device="cpu")
    spec = m.spec
    name = entry_name(source, spec, name)
    target = os.path.join(os.fspath(repo), name)
    if os.path.exists(target) and not overwrite:
        raise EntryExistsError(target)

    batched = all(t.shape and t.shape[0] is None for t in (*m.inputs, *m.outputs))
    if max_batch_size is None:
        max_batch_size = DEFAULT_MAX_BATCH_SIZE if batched else 0
    check_int(max_batch_size, "max_batch_size", min=0)
    if max_batch_size and not batched:
        raise SpecError(f"{source} has a fixed batch axis ({_shapes(m)}); Triton can batch it "
                        "only with max_batch_size 0")
    sizes = [check_int(s, "preferred batch size", min=1) for s in preferred_batch_sizes]
    if max_batch_size and any(s > max_batch_size for s in sizes):
        raise InputError(f"preferred batch sizes {sizes} exceed max_batch_size {max_batch_size}")
    if sizes and not max_batch_size:
        raise InputError("preferred batch sizes need max_batch_size > 0")
    check_int(max_queue_delay_us, "max_queue_delay_us", min=0)
    check_int(instances, "instances", min=1)
    where = parse_device(device)
    if where.kind == "auto":
        raise InputError("device='auto' cannot be written into a Triton config; choose cpu, "
                         "cuda[:N] or tensorrt[:N]")

    labels, label_output, notes = _labels(spec, m)
    proto_bytes, written_spec = None, spec
    if bake_normalization:
        proto_bytes, written_spec = _baked(source, spec)
        notes.append("normalization baked into the graph: send raw pixel values (0..255)")
    notes += client_steps(written_spec)
    config = _config_text(name, m, max_batch_size, sizes, max_queue_delay_us, instances, where,
                          label_output, written_spec)

    os.makedirs(os.fspath(repo), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=os.fspath(repo))
    try:
        os.makedirs(os.path.join(staging, _VERSION))
        model_file = os.path.join(staging, _VERSION, "model.onnx")
        if proto_bytes is None:
            shutil.copyfile(source, model_file)
        else:
            with open(model_file, "wb") as f:
                f.write(proto_bytes)
        _write(os.path.join(staging, "config.pbtxt"), config)
        if labels:
            _write(os.path.join(staging, "labels.txt"), "".join(f"{x}\n" for x in labels))
        if written_spec is not None:
            _write(os.path.join(staging, "dlinfer_spec.json"),
                   json.dumps(json.loads(written_spec.to_json()), indent=2) + "\n")
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=f".{name}.old.", dir=os.fspath(repo))
            os.replace(target, os.path.join(old, name))
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TritonRepository(target, config, tuple(labels), bake_normalization, tuple(notes))


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def entry_name(source: str, spec: ModelSpec | None, name: str | None = None) -> str:
    """The repository entry's name: ``name``, else the spec's name (else the file stem)
    with an optimized variant's mode appended (``mnist_cnn_int8``)."""
    if name is None:
        name = (spec.name if spec is not None else None) or _stem(source)
        optimized = spec.extra.get("optimize") if spec is not None else None
        mode = optimized.get("mode") if isinstance(optimized, dict) else None
        if isinstance(mode, str) and mode and not name.endswith(f"_{mode}"):
            name = f"{name}_{mode}"
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"model name {name!r} cannot be a folder name in a model repository")
    return name


def client_steps(spec: ModelSpec | None) -> list[str]:
    """What a Triton client must do before sending an image, which the graph does not:
    the notes export-triton prints (the same fields are in dlinfer_spec.json)."""
    if spec is None:
        return []
    steps = []
    for i in spec.inputs:
        if i.kind != "image":
            continue
        size = "x".join(str(d) for d in i.image_size) if i.image_size else "its own size"
        resize = {"stretch": "stretch", "letterbox": "letterbox (centred)",
                  "pad-end": "pad-end (fit the height, pad the right)",
                  "center-crop": f"center-crop (fraction {i.crop_fraction:g})"}[i.resize]
        how = i.interpolation + (" antialiased" if i.antialias else "")
        text = f"input {i.name!r}: clients resize to {size} ({resize}, {how}), {i.color} {i.layout}"
        if i.pad_value is not None or i.pad_pixel is not None:
            text += (f", pad {i.pad_value:g} after normalization" if i.pad_value is not None
                     else f", pad pixel {i.pad_pixel:g}")
        if (i.scale, i.mean, i.std) != (1.0, (0.0,), (1.0,)):
            text += (f", then (x * {i.scale:.6g} - {_values(i.mean)}) / {_values(i.std)}")
        steps.append(text + " (dlinfer_spec.json)")
    return steps


def _values(values: Sequence[float]) -> str:
    return f"{values[0]:g}" if len(values) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _shapes(m: Model) -> str:
    return ", ".join(f"{t.name} {list(t.shape)}" for t in (*m.inputs, *m.outputs))


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _labels(spec: ModelSpec | None, m: Model) -> tuple[list[str], str | None, list[str]]:
    """The labels, the output Triton's classification extension may label, and notes."""
    if spec is None or not spec.output.labels:
        return [], None, ["no labels in the model's spec: no labels.txt"]
    out = spec.output
    tensor = next((t for t in m.outputs if t.name == out.name), m.outputs[0])
    width = None if None in tensor.shape[1:] else int(np.prod(tensor.shape[1:]))
    if width != len(out.labels):
        # A single sigmoid unit holds P(labels[1]); Triton would label its one column 0.
        return list(out.labels), None, [
            f"output {tensor.name!r} has {width} values per item for {len(out.labels)} labels: "
            "labels.txt is written but not attached (threshold the probability yourself)"]
    return list(out.labels), tensor.name, []


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _datatype(dtype: Any) -> str:
    key = np.dtype(dtype).name if np.dtype(dtype).kind not in "OSU" else "object"
    if key not in TRITON_DATATYPES:
        raise SpecError(f"dtype {key} has no Triton data type")
    return TRITON_DATATYPES[key]


def _tensor_block(t: Any, batched: bool, extra: list[str]) -> list[str]:
    dims = [-1 if d is None else int(d) for d in (t.shape[1:] if batched else t.shape)]
    lines = ["  {", f"    name: {_quote(t.name)}", f"    data_type: {_datatype(t.dtype)}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:
        # A tensor holding only the batch axis: Triton needs a dim, reshaped away.
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return lines + [f"    {x}" for x in extra] + ["  }"]


def _config_text(name: str, m: Model, max_batch_size: int, sizes: list[int], delay_us: int,
                 instances: int, where: Any, label_output: str | None,
                 spec: ModelSpec | None) -> str:
    batched = max_batch_size > 0
    images = {i.name: i.layout for i in spec.inputs if i.kind == "image"} if spec else {}
    lines = [f"name: {_quote(name)}", 'platform: "onnxruntime_onnx"',
             f"max_batch_size: {max_batch_size}", "input ["]
    blocks = [_tensor_block(t, batched, [f"format: FORMAT_{images[t.name]}"]
                            if t.name in images and len(t.shape) == 4 else [])
              for t in m.inputs]
    lines += _join(blocks) + ["]", "output ["]
    blocks = [_tensor_block(t, batched, ['label_filename: "labels.txt"']
                            if t.name == label_output else []) for t in m.outputs]
    lines += _join(blocks) + ["]"]
    if batched:
        lines.append("dynamic_batching {")
        if sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, sorted(set(sizes))))} ]")
        lines += [f"  max_queue_delay_microseconds: {delay_us}", "}"]
    gpu = where.kind in ("cuda", "tensorrt")
    lines += ["instance_group [", "  {", f"    count: {instances}",
              f"    kind: {'KIND_GPU' if gpu else 'KIND_CPU'}"]
    if gpu:
        lines.append(f"    gpus: [ {where.index} ]")
    lines += ["  }", "]"]
    if where.kind == "tensorrt":
        lines += ["optimization {", "  execution_accelerators {",
                  '    gpu_execution_accelerator: [ { name: "tensorrt" } ]', "  }", "}"]
    return "\n".join(lines) + "\n"


def _join(blocks: list[list[str]]) -> list[str]:
    out: list[str] = []
    for i, block in enumerate(blocks):
        out += block[:-1] + [block[-1] + ("," if i < len(blocks) - 1 else "")]
    return out


def _raw_pad(path: str, image: Any, mean: np.ndarray, std: np.ndarray) -> float | None:
    """The pad of ``image`` as the raw pixel value the baked graph normalizes to it."""
    if image.pad_value is None:
        return image.pad_pixel
    raw = (image.pad_value * std + mean) / image.scale  # per channel
    if not np.allclose(raw, raw[0], rtol=0, atol=1e-6) or not 0 <= raw[0] <= 255:
        raise SpecError(f"{path}: the pad {image.pad_value:g} after normalization is the raw "
                        f"pixel value {list(np.round(raw, 4))}, which is not one pixel value "
                        "0..255; export without --bake-normalization")
    return float(raw[0])


def _baked(path: str, spec: ModelSpec | None) -> tuple[bytes, ModelSpec]:
    """The model with ``(x - mean/scale) / (std/scale)`` in front of its image input, and
    its spec saying it now takes raw pixel values."""
    onnx = import_optional("onnx", "triton", "baking normalization into the graph")
    from onnx import helper, numpy_helper

    from ..export.onnx_file import set_spec

    images = [i for i in spec.inputs if i.kind == "image"] if spec is not None else []
    if len(images) != 1:
        raise SpecError(f"{path}: baking normalization needs a spec with exactly one image "
                        f"input, found {len(images)}")
    image = images[0]
    if image.dtype not in ("float32", "float16"):
        raise SpecError(f"{path}: input {image.name!r} is {image.dtype}; only a float input "
                        "can take raw pixel values")
    channels = image.channels or 1
    mean = np.broadcast_to(np.asarray(image.mean, np.float64), (channels,))
    std = np.broadcast_to(np.asarray(image.std, np.float64), (channels,))
    shape = (channels,) if image.layout == "NHWC" else (channels, 1, 1)
    dtype = np.float16 if image.dtype == "float16" else np.float32
    offset = (mean / image.scale).astype(dtype).reshape(shape)
    divisor = (std / image.scale).astype(dtype).reshape(shape)

    proto = onnx.load(path)
    graph = proto.graph
    inner = f"{image.name}__dlinfer_normalized"
    for node in graph.node:
        node.input[:] = [inner if x == image.name else x for x in node.input]
    for out in graph.output:
        if out.name == image.name:
            raise SpecError(f"{path}: input {image.name!r} is also an output; cannot bake")
    centred = f"{image.name}__dlinfer_centred"
    graph.initializer.extend([numpy_helper.from_array(offset, f"{image.name}__dlinfer_offset"),
                              numpy_helper.from_array(divisor, f"{image.name}__dlinfer_divisor")])
    front = [helper.make_node("Sub", [image.name, f"{image.name}__dlinfer_offset"], [centred],
                              name="dlinfer_bake_sub"),
             helper.make_node("Div", [centred, f"{image.name}__dlinfer_divisor"], [inner],
                              name="dlinfer_bake_div")]
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    raw = dataclasses.replace(image, scale=1.0, mean=(0.0,), std=(1.0,), pad_value=None,
                              pad_pixel=_raw_pad(path, image, mean, std))
    baked = ModelSpec(
        spec.name, spec.task, versions=spec.versions, parity=spec.parity,
        extra={**spec.extra, "baked_normalization": {
            "scale": image.scale, "mean": list(image.mean), "std": list(image.std)}},
        spec_version=spec.spec_version,
        inputs=[raw if i.name == image.name else i for i in spec.inputs], outputs=spec.outputs)
    set_spec(proto, baked)
    onnx.checker.check_model(proto)
    return proto.SerializeToString(), baked
