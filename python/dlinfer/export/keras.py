"""Keras -> ONNX, checked against Keras, with dlinfer's spec in the file's metadata.

The steps live beside this module, in the order they run:

- :mod:`.prepare`: the model as it must be traced (augmentation removed, no cuDNN
  recurrences, grouped convolutions without XLA), and which layer a node came from;
- :mod:`.convert`: trace, freeze, check every TensorFlow op, convert with tf2onnx;
- :mod:`.validate`: the graph's inputs and outputs are the model's, and its outputs
  match Keras on sample inputs; a failed check writes nothing;
- :mod:`.onnx_file`: the spec in the file, and saving it whole.

This module decides what the spec says: each input's kind and preprocessing, each
output's kind and labels, the task, and the measured parity.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import onnx

from ..errors import ExportError
from ..preprocessing.presets import apply_preprocess
from ..spec import InputSpec, ModelSpec, OutputSpec, index_labels
from ..spec_graph import one_unit_problem
from ..verification.compare import DEFAULT_ATOL, DEFAULT_RTOL
from ._tf import import_tensorflow
from .accuracy import Head, choose_preset
from .convert import (
    IR_VERSION,
    OPSET,
    RANDOM_OPS,
    Traced,
    convert,
    describe,
    onnx_names,
    random_nodes,
)
from .onnx_file import read_spec, save, set_spec
from .pixels import ASSUMED_PRESET, PixelConvention, detect_convention
from .prepare import all_layers, functional_model, inference_model, is_augmentation
from .validate import check_io, check_parity, session_for

__all__ = [
    "IR_VERSION",
    "OPSET",
    "RANDOM_OPS",
    "ExportError",
    "export_file",
    "inference_model",
    "is_augmentation",
    "random_nodes",
    "read_spec",
    "save",
    "set_spec",
    "to_onnx",
    "versions",
]

logger = logging.getLogger("dlinfer")

Labels = Sequence[str] | Mapping[str, Sequence[str]] | None


def versions() -> dict[str, str]:
    import tf2onnx

    from .. import __version__

    keras, tf = import_tensorflow()

    return {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "opset": str(OPSET),
        "dlinfer": __version__,
    }


# ---- inputs ---------------------------------------------------------------------------


def _infer_kind(shape: tuple[int | None, ...], dtype: np.dtype, task: str | None) -> str:
    if dtype.kind in "iu":
        return "tokens"
    if len(shape) == 4 and (shape[-1] in (1, 3) or shape[1] in (1, 3)):
        return "image"
    if len(shape) == 3:
        return "series"
    return "latent" if task == "generation" and len(shape) == 2 else "features"


def _vocab_size(model: Any) -> int | None:
    sizes = [int(lay.input_dim) for lay in all_layers(model) if hasattr(lay, "input_dim")]
    return min(sizes) if sizes else None


_DEFAULT_INPUT_NAMES = {"image": "images", "tokens": "tokens", "series": "series",
                        "latent": "latent", "features": "features"}


def _input_specs(model: Any, traced: Traced, chosen: list[str | None], *, kind: str | None,
                 task: str | None) -> list[InputSpec]:
    """One spec per input, named as the user named it, else after its kind; an image
    input's pixel pipeline is set afterwards (:func:`_pixel_pipelines`)."""
    single = len(traced.input_tensors) == 1
    described = []
    for tensor in traced.input_tensors:
        shape = (None, *(None if d is None else int(d) for d in tuple(tensor.shape)[1:]))
        dtype = np.dtype(str(tensor.dtype))
        described.append((shape, dtype, kind if single and kind else
                          _infer_kind(shape, dtype, task)))
    names = onnx_names([c or _DEFAULT_INPUT_NAMES[k] for c, (_, _, k) in zip(chosen, described)],
                       "input")
    specs = []
    for name, (shape, dtype, this_kind) in zip(names, described):
        common = dict(name=name, shape=shape, dtype=dtype.name, kind=this_kind)
        if this_kind == "image":
            layout = "NHWC" if shape[-1] in (1, 3) else "NCHW"
            channels = shape[-1] if layout == "NHWC" else shape[1]
            specs.append(InputSpec(**common, layout=layout, scale=1.0 / 255.0,
                                   color="GRAY" if channels == 1 else "RGB"))
        else:
            layout = {3: "NTC", 2: "NC"}.get(len(shape), "NC")
            specs.append(InputSpec(**common, layout=layout, color=None, scale=1.0,
                                   vocab_size=_vocab_size(model) if this_kind == "tokens"
                                   else None))
    return specs


# ---- outputs and the task -------------------------------------------------------------


def _activation(tensor: Any) -> str | None:
    """The name of the activation that produced a Keras output, if it is one."""
    history = getattr(tensor, "_keras_history", None)
    layer = getattr(history, "operation", None) or (history[0] if history else None)
    if layer is None:
        return None
    if type(layer).__name__ == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", None) if act is not None else None


def _output_specs(model: Any, traced: Traced, chosen: list[str | None], *,
                  task: str | None, labels: Labels, kind: str | None,
                  threshold: float | None, taken: Sequence[str] = ()
                  ) -> tuple[str, list[OutputSpec]]:
    """The task, and one spec per output, named as the user named it, else after its kind."""
    tensors = traced.output_tensors
    count = len(tensors)
    widths = [None if t.shape[-1] is None else int(t.shape[-1]) for t in tensors]
    activations = [_activation(t) for t in tensors]
    given: dict[int, tuple[str, ...]] = {}
    if isinstance(labels, Mapping):
        for key, names in labels.items():
            if key not in chosen:
                raise ExportError(f"labels given for {key!r}, which is not a named output of "
                                  f"{model.name}; its named outputs are "
                                  f"{[c for c in chosen if c]}")
            given[chosen.index(key)] = tuple(names)
    elif labels:
        if count > 1:
            raise ExportError(f"{model.name} has {count} outputs: give labels as a dict "
                              "{output name: labels}")
        given[0] = tuple(labels)
    if task is None:
        if given:
            head = min(given)
            task = ("binary_classification" if widths[head] == 1 and len(given[head]) == 2
                    else "classification")
        else:
            task = "classification" if "softmax" in activations else "regression"
    classifying = task in ("classification", "binary_classification")
    heads = set(given) or ({activations.index("softmax") if "softmax" in activations else 0}
                           if classifying else set())
    kinds = [kind if kind and count == 1 else "probabilities" if i in heads
             else "images" if len(t.shape) == 4 else "value" for i, t in enumerate(tensors)]
    names = onnx_names([c or k for c, k in zip(chosen, kinds)], "output", taken)
    outputs = []
    for i, (name, width, this_kind) in enumerate(zip(names, widths, kinds)):
        out_labels = given.get(i, ())
        this_threshold = None
        if i in heads and task == "binary_classification":
            this_threshold = 0.5 if threshold is None else float(threshold)
            out_labels = out_labels or ("0", "1")
        elif i in heads and task == "classification" and one_unit_problem(task, width):
            raise ExportError(f"output {name!r} {one_unit_problem(task, width)} (--labels "
                              "no,yes; Python: task='binary_classification', labels=[...])")
        elif i in heads and task == "classification" and not out_labels:
            if width is None:
                raise ExportError(f"output {name!r} has no fixed width: give its labels")
            out_labels = index_labels(width)
            logger.warning("%s: no labels given for output %r; using index labels '0'..'%d' "
                           "(set real ones with `dlinfer spec set --labels`)",
                           model.name, name, width - 1)
        if out_labels:
            want = 2 if task == "binary_classification" and width == 1 else width
            if want is not None and len(out_labels) != want:
                raise ExportError(f"output {name!r} has {width} unit(s) but {len(out_labels)} "
                                  "labels were given" + (" (a single sigmoid unit takes 2)"
                                                         if width == 1 else ""))
        outputs.append(OutputSpec(name=name, kind=this_kind, labels=tuple(out_labels),
                                  threshold=this_threshold))
    return task, outputs


# ---- how pixels are scaled --------------------------------------------------------------

_ASSUMPTION = ("%s: input %r: nothing in the model or the arguments says how its pixels are "
               "scaled, so export assumed preset 'unit' (pixels / 255, in [0, 1]). If the "
               "model was trained otherwise, say how: --preprocess keras-tf|keras-torch|"
               "keras-caffe|torchvision|raw, or --scale/--mean/--std (Python: preprocess=, "
               "scale=, mean=, std=); with --data on a labelled folder, --preprocess auto "
               "tries every preset")


def _pixel_pipelines(model: Any, inputs: list[InputSpec], *, preprocess: str | None,
                     given: dict[str, Any], changes: dict[str, Any]
                     ) -> tuple[list[InputSpec], dict[str, dict[str, Any]]]:
    """Each image input's pipeline: what the caller said, else what the model says
    (:mod:`.pixels`), else the announced assumption; and how each was decided."""
    if preprocess == "auto" and given:
        raise ExportError(f"--preprocess auto chooses {', '.join(sorted(given))} itself: "
                          "give a preset or those values, not both")
    result, how = [], {}
    for spec in inputs:
        if spec.kind != "image":
            result.append(spec)
            continue
        # The model's front is read only when the image is its one input: with several,
        # the first layer found may sit on another input's branch.
        found = (detect_convention(model, spec.channels or 3) if len(inputs) == 1 else
                 PixelConvention(ASSUMED_PRESET, "the model has several inputs",
                                 assumed=True))
        if preprocess not in (None, "auto") or given:
            preset = None if preprocess == "auto" else preprocess
            result.append(apply_preprocess(spec, preset, **given, **changes))
            how[spec.name] = {"preset": preset, "how": "given"}
            if not found.assumed and preset is not None and preset != found.preset:
                logger.warning("%s: input %r: preprocessing %r as given, although %s "
                               "(preset %r)", model.name, spec.name, preset, found.reason,
                               found.preset)
            continue
        result.append(apply_preprocess(spec, found.preset, **changes))
        how[spec.name] = {"preset": found.preset, "why": found.reason,
                          "how": "assumed" if found.assumed else "detected"}
        if found.assumed and preprocess != "auto":
            logger.warning(_ASSUMPTION, model.name, spec.name)
    return result, how


def _head(outputs: Sequence[OutputSpec], task: str) -> Head | None:
    """The classifier output whose accuracy a labelled folder measures."""
    if task not in ("classification", "binary_classification"):
        return None
    head = next((o for o in outputs if o.labels), None)
    return None if head is None else Head(head.name, head.labels, head.threshold)


# ---- the exporter ---------------------------------------------------------------------


def to_onnx(
    model: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    task: str | None = None,
    labels: Labels = None,
    input_name: str | None = None,
    input_kind: str | None = None,
    output_name: str | None = None,
    output_kind: str | None = None,
    color: str | None = None,
    scale: float | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    preprocess: str | None = None,
    image: Mapping[str, Any] | None = None,
    strict: bool = False,
    threshold: float | None = None,
    parity: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    data: Any = None,
    samples: int = 16,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> onnx.ModelProto:
    """Convert a Keras 3 model to ONNX, check it against Keras, and describe it in a spec.

    Any number of inputs and outputs.  ONNX names come from the Keras ones (dict
    keys, else the names given to the input and output layers), made valid and
    unique; where Keras named a layer itself (``input_layer_3``, ``dense_7``) the
    name says what the tensor is instead: ``images``, ``tokens``, ``series``,
    ``features`` or ``latent`` for inputs, ``probabilities``, ``images`` or
    ``value`` for outputs.  ``input_name``/``output_name`` name a single one.

    Each input's kind is inferred (integers: ``tokens``; rank 4 with 1 or 3
    channels: ``image``; rank 3: ``series``; else ``features``, or ``latent`` for
    ``task="generation"``) unless ``input_kind`` says it for a single input.  Image
    inputs take ``color``, ``scale``, ``mean`` and ``std`` (model input =
    ``(pixels * scale - mean) / std``; mean and std one number or one per channel), after
    the named convention ``preprocess`` sets (``"keras-tf"``, ``"torchvision"``, ...: see
    ``dlinfer.preprocessing.presets``); ``image`` sets further fields (``resize``,
    ``size``, ``interpolation`` ...).  Without ``preprocess``, ``scale``, ``mean`` or
    ``std`` the model says it where it can (:mod:`dlinfer.export.pixels`): 0..255 when it
    scales its own pixels (``Rescaling``, ``Normalization``, an affine ``Lambda``,
    ``preprocess_input`` called inside it), a ``keras.applications`` base's own
    convention, else ``x / 255``, logged as an assumption every time.
    ``preprocess="auto"`` keeps the preset that scores best on a labelled ``data`` folder.

    ``task`` defaults to ``classification`` when ``labels`` are given or an output
    is a softmax, else ``regression``.  ``labels`` name a single output's classes,
    or ``{output name: labels}``; a classifier without labels gets ``"0"``..``"n-1"``
    (logged).  ``binary_classification`` is one sigmoid unit with two labels and a
    ``threshold`` (default 0.5).

    The graph is then checked: its inputs and outputs must be the model's, and on
    ``samples`` inputs (``data``: an array, a dict by input name, a ``.npy``/``.npz``
    file or an image folder; default drawn from the spec) every output must match
    Keras within ``atol + rtol * |keras|``.  The measured figures go into the
    spec's ``parity`` (``parity`` adds to them), with the top-1 accuracy when ``data``
    is a labelled folder (one sub-folder of images per class, named by label).
    Outputs that do not depend on the inputs prove nothing: that is logged, and with
    ``strict`` refused.  Nothing is written unless every check passes.

    Raises:
        ExportError: a layer that ONNX cannot express (named, with its class), a
            broken graph (an input or output that is not the model's), outputs that
            differ from Keras (which and by how much), or inconsistent arguments.
    """
    model = functional_model(model)
    traced, in_chosen, out_chosen = describe(model)
    for what, given, chosen in (("input", (input_name, input_kind), in_chosen),
                                ("output", (output_name, output_kind), out_chosen)):
        if any(g is not None for g in given) and len(chosen) != 1:
            raise ExportError(f"{what}_name/{what}_kind describe a single {what}; {model.name} "
                              f"has {len(chosen)} (their names and kinds come from the model)")
    inputs = _input_specs(model, traced, [input_name] if input_name else in_chosen,
                          kind=input_kind, task=task)
    given = {k: v for k, v in (("scale", scale), ("mean", mean), ("std", std))
             if v is not None}
    changes = {**({"color": color} if color else {}), **(image or {})}
    inputs, pixels = _pixel_pipelines(model, inputs, preprocess=preprocess, given=given,
                                      changes=changes)
    task, outputs = _output_specs(model, traced, [output_name] if output_name else out_chosen,
                                  task=task, labels=labels, kind=output_kind,
                                  threshold=threshold, taken=[i.name for i in inputs])
    traced = replace(traced, input_names=[i.name for i in inputs],
                     output_names=[o.name for o in outputs])
    runnable = inference_model(model)
    proto = convert(runnable, traced)
    check_io(proto, traced, model.name)
    head = _head(outputs, task)
    if preprocess == "auto":
        image_input = next(i for i in inputs if i.kind == "image")
        inputs, chosen, table = choose_preset(session_for(proto, model.name), inputs, data,
                                              head or Head("", ()), samples, seed,
                                              pixels[image_input.name]["preset"], changes)
        pixels[image_input.name] = {"preset": chosen, "how": "auto", "accuracy": table}
    measured = check_parity(proto, runnable, traced, inputs, data=data, samples=samples,
                            atol=atol, rtol=rtol, seed=seed, head=head, strict=strict)
    extra = dict(extra or {})
    if pixels:
        extra.setdefault("pixels", pixels)
    first = inputs[0]
    if len(inputs) == 1 and first.kind == "series":
        extra.setdefault("n_steps", first.shape[1])
    if len(inputs) == 1 and first.kind == "latent":
        extra.setdefault("latent_size", first.shape[1])
    spec = ModelSpec(
        name=name or model.name,
        task=task,
        inputs=inputs,
        outputs=outputs,
        versions=versions(),
        parity={**measured, **(parity or {})},
        extra=extra,
    )
    set_spec(proto, spec)
    onnx.checker.check_model(proto)
    if path is not None:
        save(proto, path)
    return proto


def load_keras_file(keras_file: str | os.PathLike[str],
                    error: type[Exception] = ExportError, *,
                    unsafe_deserialization: bool = False) -> Any:
    """A saved ``.keras`` (zip) or legacy ``.h5`` (HDF5) model, or ``error`` saying why not.

    Keras reports any file it cannot open as a zip as "File not found", so a file that
    is there but is no Keras model is told apart here first.  Keras's safe mode refuses
    Lambda layers, whose Python code would run on load; ``unsafe_deserialization``
    (``--unsafe-deserialization``) lifts it, with a warning, for files the user trusts.
    """
    keras_file = os.fspath(keras_file)
    if not os.path.isfile(keras_file):
        raise error(f"Keras file not found: {keras_file}")
    with open(keras_file, "rb") as f:
        head = f.read(8)
    if not (zipfile.is_zipfile(keras_file) or head == b"\x89HDF\r\n\x1a\n"):
        raise error(f"cannot load {keras_file} as a Keras model: it is neither a .keras "
                    "(zip) nor an .h5 (HDF5) file")
    keras, _ = import_tensorflow()
    if unsafe_deserialization:
        logger.warning("%s: loading with --unsafe-deserialization runs the Python code stored "
                       "in the file (its Lambda layers): do this only for files you trust",
                       keras_file)
    try:
        return keras.models.load_model(keras_file, compile=False,
                                       safe_mode=not unsafe_deserialization)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors ...
        if "safe_mode" in str(exc):
            raise error(f"cannot load {keras_file}: it holds a Lambda layer, whose Python code "
                        "Keras would run while loading, and that is refused by default. If "
                        "you trust the file, pass --unsafe-deserialization (Python: "
                        "unsafe_deserialization=True)") from exc
        raise error(f"cannot load {keras_file} as a Keras model: {exc}") from exc


def export_file(
    keras_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: Labels = None,
    task: str | None = None,
    scale: float | None = None,
    unsafe_deserialization: bool = False,
    **options: Any,
) -> onnx.ModelProto:
    """Export a saved ``.keras`` or legacy ``.h5`` file; see :func:`to_onnx` for the defaults
    and ``options``, and :func:`load_keras_file` for ``unsafe_deserialization``."""
    model = load_keras_file(keras_file, unsafe_deserialization=unsafe_deserialization)
    return to_onnx(model, out, labels=labels, task=task, scale=scale, **options)
