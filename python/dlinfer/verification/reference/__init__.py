"""An independent ONNX executor built on dlinfer's own kernels.

``run(model, inputs)`` executes an ONNX graph node by node with
:mod:`dlinfer.kernels` for the compute (Conv, ConvTranspose, pooling, MatMul/
Gemm, Softmax, BatchNormalization) and NumPy only for shape plumbing (Reshape,
Transpose, Concat, Gather, Slice, ...) and elementwise arithmetic.  It shares
no code with onnxruntime or TensorFlow, which makes it a third opinion when the
two disagree.  It is written to be obviously right, not fast: NCHW tensors are
transposed to NHWC and back around every convolution.

Any tensor of the graph, not only its outputs, can be returned by name; tensors
nobody asked for are freed as soon as their last consumer has run.

Needs the ``onnx`` package, imported on first use.
"""

from __future__ import annotations

from . import (  # noqa: F401 - each registers its ops
    ops_control,
    ops_math,
    ops_nn,
    ops_norm,
    ops_pool,
    ops_reduce,
    ops_resize,
    ops_rnn,
    ops_tensor,
)
from .graph import Graph, load, run
from .node import OPS, UnsupportedOpError

__all__ = ["SUPPORTED_OPS", "Graph", "UnsupportedOpError", "load", "run"]

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(OPS))
_OPS = OPS  # the registry's name when this package was one module; tests patch it
