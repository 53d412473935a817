"""The Keras model as it must be traced for an inference graph that ONNX can express.

Three things separate a trained Keras model from a graph tf2onnx converts well:

- augmentation and noise layers are identities at inference; they are swapped for
  ``Identity`` (nested models included) so no random op reaches the graph;
- recurrent layers traced where cuDNN is available emit ``CudnnRNNV3``, which has
  no ONNX conversion (keras#21799, tensorflow-onnx#2359); they are traced with
  ``use_cudnn=False``, set on the layer objects for the duration of the trace,
  because ``Bidirectional`` drops that option when it clones its layers
  (keras#21533);
- Keras compiles grouped convolutions (ConvNeXt's depthwise ``Conv2D(groups=C)``)
  with XLA on the TensorFlow backend, which leaves an opaque
  ``StatefulPartitionedCall`` in the graph; during the trace they go through plain
  ``tf.nn.convolution``, a grouped ``Conv2D`` that ONNX's ``Conv`` expresses with
  ``group``.  TensorFlow cannot *run* that op on a CPU, but it is only traced here.

Also here: which Keras layer a TensorFlow/ONNX node came from, for error messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import ExportError
from ._tf import import_tensorflow

__all__ = ["all_layers", "explain", "functional_model", "in_scope", "inference_model",
           "is_augmentation", "tracing"]

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


def functional_model(model: Any) -> Any:
    """``model`` as a model with symbolic inputs and outputs, which export traces.

    Functional and Sequential models are returned as they are.  A subclassed
    ``keras.Model`` has none: once called or built on one input, it is wrapped as
    ``keras.Model(inp, model(inp))`` with that input's shape (float32), sharing its
    weights; otherwise :class:`ExportError` says how to wrap it.
    """
    try:
        if model.inputs is not None:
            return model
    except AttributeError:  # a subclassed model has no symbolic inputs
        pass
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    shape = next(iter(shapes.values())) if len(shapes) == 1 else None
    name = getattr(model, "name", type(model).__name__)
    if not (isinstance(shape, (tuple, list)) and shape
            and all(d is None or isinstance(d, int) for d in shape)):
        raise ExportError(
            f"{name} is a subclassed keras.Model ({type(model).__name__}) and Keras knows no "
            "single input shape for it (it was never called, or takes several inputs), so "
            "there is nothing to trace. Call it once on a batch, or wrap it: "
            "inp = keras.Input(shape=(...)); wrapped = keras.Model(inp, model(inp)); then "
            "export `wrapped`")
    keras, _ = import_tensorflow()
    inp = keras.Input(shape=tuple(shape[1:]), name="inputs")
    return keras.Model(inp, model(inp), name=name)


def all_layers(model: Any) -> list[Any]:
    """Every layer inside ``model``, nested models and wrapped layers included."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=True))
    out = []
    for layer in getattr(model, "layers", ()):
        out.append(layer)
        out.extend(all_layers(layer))
    return out


@contextlib.contextmanager
def _recurrent_without_cudnn(model: Any) -> Iterator[None]:
    changed = [layer for layer in all_layers(model)
               if getattr(layer, "use_cudnn", False) not in (False, None)]
    saved = [layer.use_cudnn for layer in changed]
    for layer in changed:
        layer.use_cudnn = False
    try:
        yield
    finally:
        for layer, value in zip(changed, saved):
            layer.use_cudnn = value


@contextlib.contextmanager
def _grouped_conv_without_xla() -> Iterator[None]:
    try:
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # another Keras layout: nothing to patch, the checks still run
        yield
        return
    original = getattr(tf_nn, "conv", None)
    to_tf_format = getattr(tf_nn, "_convert_data_format", None)
    if original is None or to_tf_format is None:
        yield
        return
    _, tf = import_tensorflow()

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        data_format = tf_nn.backend.standardize_data_format(data_format)
        channels = inputs.shape[-1] if data_format == "channels_last" else inputs.shape[1]
        if channels == kernel.shape[-2] or len(inputs.shape) == 5:
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        return tf.nn.convolution(inputs, kernel, strides, padding.upper(),
                                 data_format=to_tf_format(data_format, len(inputs.shape)),
                                 dilations=dilation_rate)

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original


@contextlib.contextmanager
def tracing(model: Any) -> Iterator[None]:
    """While tracing ``model`` for export: no cuDNN recurrences, no XLA grouped convs."""
    with _recurrent_without_cudnn(model), _grouped_conv_without_xla():
        yield


def in_scope(part: str, layer_name: str) -> bool:
    """True when one ``/``-part of a TF/ONNX node name is the layer's name scope.

    tf.function adds "_1", "_2" ... to scope names.
    """
    return part == layer_name or (part.startswith(layer_name + "_")
                                  and part[len(layer_name) + 1:].isdigit())


def _layer_of(node_name: str, layers: list[Any]) -> Any | None:
    """The (innermost) Keras layer whose name scope produced a TF/ONNX node."""
    found = None
    for part in node_name.split("/"):
        for layer in layers:
            if in_scope(part, layer.name):
                found = layer
    return found


def explain(model: Any, nodes: list[tuple[str, str]], problem: str) -> ExportError:
    """An ExportError naming the layers (name and class) behind ``(node name, op)`` pairs."""
    layers = all_layers(model)
    names = []
    for node_name, op in nodes:
        layer = _layer_of(node_name, layers)
        where = (f"layer {layer.name!r} ({type(layer).__name__})" if layer is not None
                 else f"node {node_name!r}")
        names.append(where + (f" (op {op})" if op else ""))
    return ExportError(
        f"cannot export {model.name}: {problem}: {'; '.join(dict.fromkeys(names))}. "
        "Rebuild that part from standard Keras layers (Dense, Conv2D, pooling, "
        "normalization, recurrent, attention, activations), or move it out of the model "
        "into preprocessing or postprocessing, then export again."
    )
