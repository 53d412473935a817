"""Which ONNX tensor a layer name means, how it holds its channels, and the default layer.

A ``layer=`` argument is an ONNX tensor name, or, for a dlinfer export, a Keras layer
name.  tf2onnx names every node after the Keras name scopes it came from
(``mnist_cnn_1/conv2d_2_1/Relu:0``), so a Keras layer's output is the last float tensor
of its scope in graph order: Conv -> BiasAdd -> Relu, the activation included.  The
scope test is :func:`dlinfer.export.prepare.in_scope`, the one ``verify --per-layer``
uses; here there is no Keras model to compare values with, so two scopes that both
read as the layer's name (``conv2d_1`` is ``conv2d``'s first traced scope *and*
``conv2d_1`` written as is) are told apart by the rule tf.function follows when it
traces: every scope gets a ``_N`` suffix, so the suffixed one wins.

ONNX convolutions and pooling hold NCHW; tf2onnx keeps that layout between its
transposes, while a model's own NHWC input stays NHWC: :func:`layout_of` walks back
from a tensor to the op that fixed its layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._optional import import_optional
from ..errors import InputError

__all__ = ["GraphInfo", "LayerTensor", "graph_info", "save_temporary"]

# Ops whose 4-D tensors are NCHW by the ONNX standard.
_NCHW_OPS = frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "InstanceNormalization", "LRN", "DepthToSpace", "SpaceToDepth",
    "QLinearConv", "ConvInteger"})
# Ops whose output keeps the layout of their (first 4-D) input.
_SAME_LAYOUT = frozenset({
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
    "Selu", "PRelu", "Softplus", "Add", "Sub", "Mul", "Div", "Max", "Min", "Identity",
    "Dropout", "Concat", "Pad", "Cast", "Neg", "Abs", "Exp", "Sqrt", "Pow", "Resize",
    "Upsample", "Mish", "Gelu", "Erf", "Where", "Sum", "Mean"})
# What follows a convolution inside one "convolution block": bias, normalization, the
# activation, a residual join.  The default layer is the block's last tensor.
_BLOCK_TAIL = frozenset({
    "BatchNormalization", "Add", "Mul", "Sub", "Div", "Relu", "Clip", "LeakyRelu",
    "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "PRelu", "Softplus",
    "Mish", "Gelu", "Identity", "Dropout"})


@dataclass(frozen=True)
class LayerTensor:
    """An ONNX tensor chosen for a layer: its name, layout and the name asked for."""

    tensor: str
    layout: str  # "NCHW" or "NHWC" for 4-D tensors, else "" (no spatial axes)
    asked: str | None  # the layer= argument (None: the default layer)

    @property
    def channel_axis(self) -> int:
        return 3 if self.layout == "NHWC" else 1


class GraphInfo:
    """The parts of an ONNX graph explain needs: producers, consumers, float tensors."""

    def __init__(self, proto: Any, input_layout: str) -> None:
        onnx = import_optional("onnx", "reference", "dlinfer explain")
        self.proto = proto
        self.input_layout = input_layout
        graph = proto.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        self.order: list[str] = []  # node outputs in graph order
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                if name:
                    self.producer[name] = node
                    self.order.append(name)
        try:
            inferred = onnx.shape_inference.infer_shapes(proto).graph
        except Exception:  # noqa: BLE001 - a graph shape inference cannot read: no types
            inferred = graph
        self.types: dict[str, int] = {}
        self.ranks: dict[str, int] = {}
        for v in [*inferred.value_info, *inferred.output, *inferred.input]:
            t = v.type.tensor_type
            self.types[v.name] = t.elem_type
            if t.HasField("shape"):
                self.ranks[v.name] = len(t.shape.dim)
        self._float = onnx.TensorProto.FLOAT
        self.defaults: dict[tuple[int, ...], LayerTensor] = {}  # by input shape

    def is_float(self, name: str) -> bool:
        # Unknown types count as float: shape inference gives up on some custom graphs.
        return self.types.get(name, self._float) == self._float

    def has(self, name: str) -> bool:
        return name in self.producer or name in self.inputs

    # ---- layouts -------------------------------------------------------------------

    def layout_of(self, name: str) -> str:
        """"NCHW" or "NHWC" for a 4-D tensor (see the module docstring)."""
        seen = set()
        while name not in seen:
            seen.add(name)
            if name in self.inputs:
                return self.input_layout
            node = self.producer.get(name)
            if node is None:
                return "NCHW"
            if node.op_type in _NCHW_OPS:
                return "NCHW"
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                if perm == [0, 2, 3, 1]:
                    return "NHWC"
                if perm == [0, 3, 1, 2]:
                    return "NCHW"
                return "NCHW"
            if node.op_type not in _SAME_LAYOUT:
                return "NCHW"
            data = [i for i in node.input if i and i not in self.initializers
                    and self.ranks.get(i, 4) == 4]
            if not data:
                return "NCHW"
            name = data[0]
        return "NCHW"

    # ---- layer names -----------------------------------------------------------------

    def resolve(self, layer: str) -> LayerTensor:
        """The tensor ``layer`` names: an ONNX tensor, else a Keras layer's output."""
        if not isinstance(layer, str) or not layer:
            raise InputError(f"layer must be a tensor or layer name, got {layer!r}")
        if self.has(layer):
            return self._tensor(layer, layer)
        tensor = self._keras_output(layer)
        if tensor is None:
            raise InputError(
                f"layer {layer!r} is neither a tensor of {self.where} nor a Keras layer "
                f"of its export; some of its tensors: {self._examples()}")
        return self._tensor(tensor, layer)

    @property
    def where(self) -> str:
        return getattr(self, "path", "the model")

    def _tensor(self, name: str, asked: str | None) -> LayerTensor:
        rank = self.ranks.get(name)
        layout = self.layout_of(name) if rank in (4, None) else ""
        return LayerTensor(name, layout, asked)

    def _keras_output(self, layer: str) -> str | None:
        from ..export.prepare import in_scope

        scopes: dict[str, list[str]] = {}  # scope prefix -> its float tensors, in order
        for name in self.order:
            parts = name.split("/")[:-1]
            for depth, part in enumerate(parts):
                if in_scope(part, layer) and self.is_float(name):
                    scopes.setdefault("/".join(parts[:depth + 1]), []).append(name)
        if not scopes:
            return None
        suffixed = [s for s in scopes if s.rsplit("/", 1)[-1] != layer]
        chosen = (suffixed or list(scopes))[0]  # the first call of a shared layer
        return scopes[chosen][-1]

    def _examples(self, n: int = 8) -> list[str]:
        spatial = [t for t in self.order if self.ranks.get(t) == 4 and self.is_float(t)]
        return (spatial or self.order)[-n:]

    # ---- the default layer -------------------------------------------------------------

    def last_conv_block(self, shapes: dict[str, tuple[int, ...]]) -> LayerTensor:
        """The last convolution's block output (bias, normalization, activation and a
        residual add included) whose spatial size is > 1; ``shapes`` are the tensors'."""
        for node in reversed(self.proto.graph.node):
            if node.op_type not in ("Conv", "ConvTranspose") or node.output[0] not in shapes:
                continue
            shape = shapes[node.output[0]]
            if len(shape) != 4 or shape[2] * shape[3] <= 1:
                continue
            return self._tensor(self._block_end(node.output[0], shape), None)
        raise InputError(f"{self.where} has no convolution with a spatial output larger "
                         "than 1x1 to explain; name a 4-D tensor with layer=")

    def _block_end(self, name: str, shape: tuple[int, ...]) -> str:
        while True:
            users = self.consumers.get(name, [])
            if len(users) != 1 or users[0].op_type not in _BLOCK_TAIL:
                return name
            out = users[0].output[0]
            if out in self.outputs and len(self.proto.graph.output) == 1:
                return name  # the model's own output is not a block inside it
            name = out

    def conv_nodes(self) -> list[Any]:
        return [n for n in self.proto.graph.node if n.op_type == "Conv"]

    def conv_feeding(self, tensor: str) -> Any | None:
        """The Conv whose block ends in ``tensor`` (walking back the block's tail)."""
        name = tensor
        for _ in range(16):
            node = self.producer.get(name)
            if node is None:
                return None
            if node.op_type == "Conv":
                return node
            if node.op_type not in _BLOCK_TAIL:
                return None
            data = [i for i in node.input if i and i not in self.initializers]
            if len(data) != 1 and node.op_type not in ("Add",):
                return None
            name = data[0]
        return None

    def weights(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        init = self.initializers.get(name)
        return None if init is None else numpy_helper.to_array(init)


def save_temporary(proto: Any, stem: str) -> str:
    """``proto`` written to a temporary folder removed when the process exits: a graph
    derived from the model's (a tail, an extra output) for the gradient engine, which
    opens models by path."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="dlinfer-explain-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, f"{stem}.onnx")
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path


_CACHE: dict[tuple[str, float, str], GraphInfo] = {}
# Graphs kept (a server explaining several models); each holds its weights.
_CACHED_GRAPHS = 4


def graph_info(model: Any, input_layout: str) -> GraphInfo:
    """The :class:`GraphInfo` of ``model``'s file, read once per file version."""
    onnx = import_optional("onnx", "reference", "dlinfer explain")
    path = os.fspath(model.path)
    key = (path, os.path.getmtime(path), input_layout)
    info = _CACHE.get(key)
    if info is None:
        info = GraphInfo(onnx.load(path), input_layout)
        info.path = path
        if len(_CACHE) >= _CACHED_GRAPHS:  # the oldest out: a ResNet's weights are 100 MB
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = info
    return info
