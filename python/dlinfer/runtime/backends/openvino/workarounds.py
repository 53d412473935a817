"""What OpenVINO's CPU plugin computes wrongly, rewritten before it compiles a model.

Each fix names the OpenVINO release it was measured on and how wrong the answers were;
each has a test against float64 or onnxruntime (tests/test_openvino_precision.py).
:func:`apply` runs them all, on every model dlinfer reads for OpenVINO.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import ModelLoadError

__all__ = ["apply", "own_backprop_weights", "whole_lrn_bias"]

_BACKPROP = ("ConvolutionBackpropData", "GroupConvolutionBackpropData")
_PASS_THROUGH = ("Reshape", "Unsqueeze", "Squeeze", "Transpose", "Convert")


def apply(model: Any) -> None:
    """Every fix below, in place."""
    whole_lrn_bias(model)
    own_backprop_weights(model)


def whole_lrn_bias(model: Any) -> None:
    """Each LRN with a fractional bias ``k`` rewritten as ``LRN(x, bias=1, alpha/k) *
    k**-beta``, the same function: OpenVINO 2026.4's CPU plugin drops the fraction (bias
    1.5 computed as 1: answers 20% off, silently; 2.0 and 1.0 are right)."""
    from openvino import opset13 as ops

    for node in list(model.get_ordered_ops()):
        if node.get_type_name() != "LRN":
            continue
        attrs = node.get_attributes()
        bias, beta = float(attrs["bias"]), float(attrs["beta"])
        if bias == int(bias):
            continue
        if bias <= 0:
            raise ModelLoadError(f"LRN {node.get_friendly_name()!r} has bias {bias}: OpenVINO's "
                                 "CPU plugin would compute it as an integer; use onnxruntime")
        lrn = ops.lrn(node.input(0).get_source_output(), node.input(1).get_source_output(),
                      float(attrs["alpha"]) / bias, beta, 1.0, int(attrs["size"]))
        scaled = ops.multiply(lrn, ops.constant(np.float32(bias ** -beta)),
                              name=node.get_friendly_name())
        node.output(0).replace(scaled.output(0))


def own_backprop_weights(model: Any) -> None:
    """A transposed convolution gets its own copy of weights that another op also reads.

    dlinfer.explain's backward pass of a convolution is a ConvTranspose of the same
    weights.  OpenVINO 2026.4's CPU plugin gave that ConvTranspose wrong answers when it
    shared the weight constant with the forward convolution (a 16 -> 16 channel 3x3
    convolution: every gradient off, by 1.5 times their largest value); with a copy of
    the constant, its answers are onnxruntime's."""
    from openvino import opset13 as ops

    for node in list(model.get_ordered_ops()):
        if node.get_type_name() not in _BACKPROP:
            continue
        port = node.input(1)
        source = port.get_source_output()
        while source.get_node().get_type_name() in _PASS_THROUGH:  # to the constant
            port = source.get_node().input(0)
            source = port.get_source_output()
        constant = source.get_node()
        if constant.get_type_name() == "Constant" and len(source.get_target_inputs()) > 1:
            own = ops.constant(np.array(constant.get_data(), copy=True),
                               name=f"{constant.get_friendly_name()}/own")
            port.replace_source_output(own.output(0))
