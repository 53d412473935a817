"""Keras -> ONNX export through tf2onnx, with dlinfer's spec in the metadata.

``tf2onnx.convert.from_keras`` fails on Keras 3 (``KeyError: 'keras_tensor_N'``),
so the model is traced as a ``tf.function`` with a named ``TensorSpec`` and
converted with ``from_function``.  The function returns a dict, which names the
ONNX output; otherwise it would come out as ``Identity:0``.

The path works for any single-input Sequential or Functional Keras 3 model built
from standard layers:

- augmentation layers (``RandomFlip``, ``RandomRotation``, ``GaussianNoise``, ...)
  are identities at inference, so they are swapped for ``Identity`` before tracing,
  nested models included, and the exported graph is then checked to hold no random
  op at all;
- a layer whose ops ONNX cannot express fails with :class:`ExportError` naming the
  layer and what to do about it, instead of a checker error about a TF op.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx

from ..errors import ExportError
from ..spec import InputSpec, ModelSpec, OutputSpec
from ._tf import import_tensorflow
from .onnx_file import read_spec, save, set_spec

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

# Opset 17 covers every op the zoo needs (LayerNormalization-free, so no need for
# 18+), and IR version 8 is what opset 17 implies; onnxruntime 1.31 loads IR <= 11.
OPSET = 17
IR_VERSION = 8


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


# ONNX ops that draw random numbers: none may reach an inference graph.
RANDOM_OPS = frozenset(
    {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial",
     "Bernoulli"}
)
# Layers that only act in training and are the identity at inference.  RandomCrop is
# not among them: at inference it centre-crops, which changes the output.
_NOISE_LAYERS = frozenset(
    {"GaussianNoise", "GaussianDropout", "AlphaDropout", "AugMix", "CutMix", "MixUp",
     "RandAugment", "Solarization"}
)


def is_augmentation(layer: Any) -> bool:
    """True for a training-only augmentation/noise layer (the identity at inference)."""
    cls = type(layer).__name__
    return (cls.startswith("Random") and cls != "RandomCrop") or cls in _NOISE_LAYERS


def _has_augmentation(model: Any) -> bool:
    return any(
        is_augmentation(layer) or (hasattr(layer, "layers") and _has_augmentation(layer))
        for layer in getattr(model, "layers", ())
    )


def inference_model(model: Any) -> Any:
    """``model`` with every augmentation layer replaced by ``Identity``, weights shared.

    Returns ``model`` itself when it has none.  Nested models are handled.
    """
    if not _has_augmentation(model):
        return model

    keras, _ = import_tensorflow()

    def clone(layer: Any) -> Any:
        if is_augmentation(layer):
            return keras.layers.Identity(name=f"{layer.name}_removed")
        if hasattr(layer, "layers") and _has_augmentation(layer):
            return inference_model(layer)
        return layer  # the same object: its weights are shared, not copied

    return keras.models.clone_model(model, clone_function=clone)


def _subgraph_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraph_nodes(attr.g)
            for g in attr.graphs:
                yield from _subgraph_nodes(g)


def random_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of a graph (subgraphs included) that draw random numbers."""
    return [n for n in _subgraph_nodes(proto.graph)
            if n.op_type in RANDOM_OPS or "Random" in n.op_type]


def _layer_of(node_name: str, model: Any) -> Any | None:
    """The (innermost) Keras layer whose name scope produced a TF/ONNX node."""
    found = None
    candidates = _all_layers(model)
    for part in node_name.split("/"):
        for layer in candidates:
            # tf.function adds "_1", "_2" ... to scope names
            if part == layer.name or (part.startswith(layer.name + "_")
                                      and part[len(layer.name) + 1:].isdigit()):
                found = layer
    return found


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", ()):
        out.append(layer)
        out.extend(_all_layers(layer))
    return out


def _unsupported_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in _subgraph_nodes(proto.graph)
            if not onnx.defs.has(n.op_type, n.domain or "")]


def _explain(model: Any, nodes: list[Any], problem: str) -> ExportError:
    names = []
    for node in nodes:
        node_name = node if isinstance(node, str) else node.name
        op = "" if isinstance(node, str) else f" (op {node.op_type})"
        layer = _layer_of(node_name, model)
        where = (f"layer {layer.name!r} ({type(layer).__name__})" if layer is not None
                 else f"node {node_name!r}")
        names.append(where + op)
    return ExportError(
        f"cannot export {model.name}: {problem}: {'; '.join(dict.fromkeys(names))}. "
        "Rebuild that part from standard Keras layers (Dense, Conv2D, pooling, "
        "normalization, recurrent, activations), or move it out of the model into "
        "preprocessing or postprocessing, then export again."
    )


def _input_signature(model: Any, input_name: str) -> Any:
    if len(model.inputs) != 1:
        raise ExportError(
            f"to_onnx handles single-input models; {model.name} has {len(model.inputs)} inputs. "
            "Export each part separately, or concatenate the inputs in front of the model."
        )
    _, tf = import_tensorflow()
    shape = list(model.inputs[0].shape)
    shape[0] = None  # a dynamic batch dimension, whatever the model was built with
    dtype = tf.as_dtype(model.inputs[0].dtype)
    return tf.TensorSpec(shape, dtype, name=input_name)


def to_onnx(
    model: Any,
    path: str | None = None,
    *,
    name: str | None = None,
    task: str = "classification",
    labels: list[str] | tuple[str, ...] = (),
    input_name: str = "images",
    input_kind: str = "image",
    output_name: str = "probabilities",
    output_kind: str = "probabilities",
    color: str | None = None,
    scale: float = 1.0 / 255.0,
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
    threshold: float | None = None,
    parity: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> onnx.ModelProto:
    """Convert a Keras 3 model to ONNX with named input/output and dlinfer metadata.

    ``input_kind`` is ``image`` (NHWC), ``tokens``, ``series``, ``latent`` or
    ``features``; ``task`` one of ``classification``, ``binary_classification``
    (give ``threshold``), ``regression`` or ``generation``.  A series input records
    its window length as ``extra["n_steps"]``, a latent input its size as
    ``extra["latent_size"]``.  Augmentation layers are left out of the graph.

    Returns the ModelProto and, when ``path`` is given, saves it there.

    Raises:
        ExportError: a layer that ONNX cannot express (named in the message), a
            random op left in the graph, or a model with several inputs.
    """
    import tf2onnx

    _, tf = import_tensorflow()
    signature = _input_signature(model, input_name)
    runnable = inference_model(model)

    @tf.function(input_signature=[signature])
    def inference(x):  # noqa: ANN001 - traced by TensorFlow
        return {output_name: runnable(x, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(
            inference, input_signature=[signature], opset=OPSET
        )
    except Exception as exc:  # tf2onnx raises untyped errors; name the layer if we can
        layers = [lay for lay in _all_layers(model) if lay.name in str(exc)]
        raise _explain(model, [lay.name for lay in layers] or [model.name],
                       f"tf2onnx failed ({type(exc).__name__}: {exc})") from exc
    unsupported = _unsupported_nodes(proto)
    if unsupported:
        raise _explain(runnable, unsupported, "ONNX has no equivalent for the TensorFlow ops of")
    randoms = random_nodes(proto)
    if randoms:
        raise _explain(runnable, randoms, "the inference graph holds random ops from")
    proto.ir_version = IR_VERSION
    proto.producer_name = "dlinfer.export"

    shape = tuple(None if d is None else int(d) for d in signature.shape)
    if input_kind == "image" and color is None:
        color = "GRAY" if shape[-1] == 1 else "RGB"
    extra = dict(extra or {})
    if input_kind == "series":
        extra.setdefault("n_steps", shape[1])
    if input_kind == "latent":
        extra.setdefault("latent_size", shape[1])
    layout = "NHWC" if input_kind == "image" else ("NTC" if len(shape) == 3 else "NC")
    spec = ModelSpec(
        name=name or model.name,
        task=task,
        input=InputSpec(
            name=input_name,
            shape=shape,
            dtype=np.dtype(signature.dtype.as_numpy_dtype).name,
            kind=input_kind,
            layout=layout,
            color=color if input_kind == "image" else None,
            scale=float(scale),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        ),
        output=OutputSpec(name=output_name, kind=output_kind),
        labels=tuple(labels),
        threshold=threshold,
        versions=versions(),
        parity=dict(parity or {}),
        extra=extra,
    )
    set_spec(proto, spec)
    onnx.checker.check_model(proto)
    if path is not None:
        save(proto, path)
    return proto


def export_file(
    keras_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: tuple[str, ...] = (),
    task: str | None = None,
    scale: float | None = None,
) -> onnx.ModelProto:
    """Export a saved ``.keras`` file, inferring what the spec needs from the model.

    The input kind follows the input: rank 4 is an image, integers are tokens, a
    generation model takes a latent vector, anything else is a series.  Without
    ``task`` a model with ``labels`` is a classifier (binary for one sigmoid unit
    and two labels), and one without is a regression.  ``scale`` defaults to
    1/255 for images.
    """
    keras, _ = import_tensorflow()
    keras_file = os.fspath(keras_file)
    if not os.path.isfile(keras_file):
        raise ExportError(f"Keras file not found: {keras_file}")
    try:
        model = keras.models.load_model(keras_file, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors ...
        raise ExportError(f"cannot load {keras_file} as a Keras model: {exc}") from exc
    out_units = int(model.outputs[0].shape[-1])
    task = task or (("binary_classification" if out_units == 1 and len(labels) == 2
                     else "classification") if labels else "regression")
    dtype = str(model.inputs[0].dtype)
    if len(model.inputs[0].shape) == 4:
        kind, name = "image", "images"
    elif "int" in dtype:
        kind, name = "tokens", "tokens"
    elif task == "generation":
        kind, name = "latent", "latent"
    else:
        kind, name = "series", "series"
    output_name = {"classification": "probabilities", "binary_classification": "probabilities",
                   "regression": "value"}.get(task, "images" if len(model.outputs[0].shape) == 4
                                               else "value")
    if scale is None:
        scale = 1 / 255 if kind == "image" else 1.0
    return to_onnx(
        model, out, task=task, labels=labels, input_name=name, input_kind=kind,
        output_name=output_name, output_kind="probabilities" if "class" in task else output_name,
        scale=scale, threshold=0.5 if task == "binary_classification" else None,
    )
