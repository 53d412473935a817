"""Convolution rewrites for onnxruntime's fast CPU kernels, exact up to summation order.

onnxruntime's CPU provider runs ``Conv`` in its blocked NCHWc layout, 16 output channels
at a time with AVX-512.  A convolution with fewer output channels wastes most of each
block: DCGAN's final layer (128 -> 1 channel, 7x7, on 28x28) took 58% of the
generator's time for 7% of its multiplies, about 5 GFLOP/s against about 100 for the
transposed convolutions before it (one thread, batch 16, onnxruntime's profiler).

Space-to-depth fixes the shape of the work rather than the kernel: with block ``b``,
``b x b`` output pixels of one channel become ``b*b`` channels of one pixel, so the
same layer becomes SpaceToDepth -> Conv (``M*b*b`` >= 16 output channels) ->
DepthToSpace.  It does 3x the multiplies (the taps a block does not need are zeros) in
full blocks: the DCGAN generator went from 2,436 to 1,378 us of CPU per image.

Padding the layer to 4 output channels instead did not help (-5%).

A stride-``s`` ``ConvTranspose`` is ``s * s`` ordinary convolutions of its input, one per
output phase, interleaved: one Conv producing every phase's channels, then
DepthToSpace (the "sub-pixel" form).  In float32 that is *slower* (3,080 us against
2,436): onnxruntime's GEMM + col2im ConvTranspose already runs near the machine's peak
(about 227 GFLOP/s on 2 threads) and the sub-pixel form adds 2.25x the multiplies (the
zero taps each phase does not use).  But onnxruntime has no int8 ConvTranspose, and a
Conv quantizes: with both rewrites, int8 ran the generator at 2,106 images/s at batch
32 against 1,207 for float32 with the narrow-conv rewrite alone (2 threads), with a
relative RMS error of 0.12%.  So int8 uses it (``rewrite_for_cpu(for_int8=True)``) and
the graph mode does not.

Each rewrite is checked where it is made: onnxruntime runs the old node and its
replacement on the same random input, and the replacement stays only if they agree
within :data:`TOLERANCE`; otherwise the node is left as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..verification.compare import close

__all__ = ["TOLERANCE", "block_narrow_convs", "subpixel_conv_transposes"]

# The replacement sums the same products in another order: float32 rounding, relative to
# the layer's own output scale (atol scaled by the output's max magnitude).
TOLERANCE = 1e-5
# Convs with fewer output channels than this are rewritten (see the module doc) ...
_CHANNEL_MULTIPLE = 4
# ... into convs with at least this many: one AVX-512 block of float32.
_BLOCK_CHANNELS = 16


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _blocked(node: onnx.NodeProto, weights: dict[str, np.ndarray], in_hw: tuple[int, int]
             ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """A narrow stride-1 Conv as SpaceToDepth -> Conv -> DepthToSpace, or None.

    With block ``b``, output pixel ``(b*q + a)`` of channel ``m`` becomes channel
    ``(a_h*b + a_w)*M + m`` at ``q``, and input pixel ``(b*q' + p)`` of channel ``c``
    becomes channel ``(p_h*b + p_w)*C + c`` at ``q'``: the same products, now with
    ``M*b*b`` output channels, enough to fill a SIMD block.
    """
    a = _attrs(node)
    w = weights.get(node.input[1])
    if (w is None or w.ndim != 4 or w.shape[0] >= _CHANNEL_MULTIPLE or a.get("group", 1) != 1
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or any(v != 1 for v in a.get("strides", [1, 1]))
            or any(v != 1 for v in a.get("dilations", [1, 1]))):
        return None
    channels_out, channels_in, kh, kw = w.shape
    block = 1
    while channels_out * block * block < _BLOCK_CHANNELS:
        block *= 2
    pads = list(a.get("pads", [0, 0, 0, 0]))
    begin, end, lows = [], [], []
    for axis, (k, length) in enumerate(zip((kh, kw), in_hw)):
        out_len = length + pads[axis] + pads[axis + 2] - k + 1
        if length % block or out_len % block or out_len <= 0:
            return None
        low = (0 - pads[axis]) // block
        high = (block - 1 + k - 1 - pads[axis]) // block
        pad_begin = -low
        pad_end = out_len // block - 1 + (high - low + 1) - length // block - pad_begin
        if pad_begin < 0 or pad_end < 0:
            return None
        begin.append(pad_begin)
        end.append(pad_end)
        lows.append((low, high - low + 1))
    (low_h, th), (low_w, tw) = lows
    kernel = np.zeros((channels_out * block * block, channels_in * block * block, th, tw),
                      w.dtype)
    for ah in range(block):
        for aw in range(block):
            rows = slice((ah * block + aw) * channels_out, (ah * block + aw + 1) * channels_out)
            for ph in range(block):
                for pw in range(block):
                    cols = slice((ph * block + pw) * channels_in,
                                 (ph * block + pw + 1) * channels_in)
                    for dh in range(th):
                        i = block * (dh + low_h) + ph - ah + pads[0]
                        for dw in range(tw):
                            j = block * (dw + low_w) + pw - aw + pads[1]
                            if 0 <= i < kh and 0 <= j < kw:
                                kernel[rows, cols, dh, dw] = w[:, :, i, j]
    name = node.name or node.output[0]
    inits = [numpy_helper.from_array(kernel, f"{name}/blocked_weight")]
    inputs = [f"{name}/blocked_input", inits[0].name]
    if len(node.input) > 2 and node.input[2]:
        bias = weights.get(node.input[2])
        if bias is None:
            return None
        inits.append(numpy_helper.from_array(np.tile(bias, block * block),
                                             f"{name}/blocked_bias"))
        inputs.append(inits[1].name)
    nodes = [helper.make_node("SpaceToDepth", [node.input[0]], [inputs[0]],
                              name=f"{name}/to_blocks", blocksize=block),
             helper.make_node("Conv", inputs, [f"{name}/blocked"], name=f"{name}/blocked",
                              kernel_shape=[th, tw], pads=begin + end),
             helper.make_node("DepthToSpace", [f"{name}/blocked"], list(node.output), name=name,
                              blocksize=block, mode="DCR")]
    return nodes, inits


def _agrees(proto: onnx.ModelProto, old: onnx.NodeProto, new: list[onnx.NodeProto],
            inits: list[onnx.TensorProto], shape: list[int], seed: int) -> bool:
    """Whether ``new`` computes what ``old`` does, run by onnxruntime on random input."""
    import onnxruntime as ort

    from ..runtime.session import session_options

    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    used = {t for n in (old, *new) for t in n.input[1:]}
    constants = [t for t in proto.graph.initializer if t.name in used] + list(inits)
    results = []
    for nodes in ([old], new):
        graph = helper.make_graph(
            nodes, "check", [helper.make_tensor_value_info(old.input[0], onnx.TensorProto.FLOAT,
                                                           shape)],
            [helper.make_tensor_value_info(old.output[0], onnx.TensorProto.FLOAT, None)],
            [t for t in constants if t.name in {i for n in nodes for i in n.input}])
        model = helper.make_model(graph, opset_imports=list(proto.opset_import))
        model.ir_version = proto.ir_version
        session = ort.InferenceSession(model.SerializeToString(), session_options(1),
                                       providers=["CPUExecutionProvider"])
        results.append(session.run(None, {old.input[0]: x})[0])
    scale = float(np.abs(results[0]).max()) or 1.0
    return close(results[1], results[0], atol=TOLERANCE * scale, rtol=0.0)


def _rewrite(proto: onnx.ModelProto, op: str, shapes: dict[str, list[int]],
             build: Any) -> int:
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    done = 0
    for index, node in enumerate(list(proto.graph.node)):
        if node.op_type != op or node.input[0] not in shapes:
            continue
        shape = shapes[node.input[0]]
        if len(shape) != 4:
            continue
        made = build(node, weights, tuple(shape[2:]))
        if made is None or not _agrees(proto, node, made[0], made[1], shape, index):
            continue
        position = list(proto.graph.node).index(node)
        proto.graph.node.remove(node)
        for offset, replacement in enumerate(made[0]):
            proto.graph.node.insert(position + offset, replacement)
        proto.graph.initializer.extend(made[1])
        done += 1
    return done


def block_narrow_convs(proto: onnx.ModelProto, shapes: dict[str, list[int]]) -> int:
    """Replace, in place, each Conv with fewer than 4 output channels that fits by its
    SpaceToDepth form (:func:`_blocked`)."""
    return _rewrite(proto, "Conv", shapes, _blocked)


def _phase_taps(stride: int, kernel: int, pad: int) -> tuple[int, int, list[list[int]]]:
    """For one spatial axis of a transposed conv: the Conv's input offset range and, per
    output phase, which transposed-kernel tap each of the Conv's taps is (-1: none).

    A transposed conv writes input ``i`` through tap ``k`` to output ``i*s + k - pad``,
    so output ``o = s*q + r`` reads input ``q + (r + pad - k) / s`` for the taps ``k``
    congruent to ``r + pad`` mod ``s``.
    """
    offsets: list[dict[int, int]] = []
    for r in range(stride):
        first, base = (r + pad) % stride, (r + pad) // stride
        offsets.append({base - j: first + stride * j
                        for j in range((kernel - first + stride - 1) // stride)})
    low = min(min(o) for o in offsets if o)
    high = max(max(o) for o in offsets if o)
    return low, high, [[o.get(u, -1) for u in range(low, high + 1)] for o in offsets]


def _subpixel(node: onnx.NodeProto, weights: dict[str, np.ndarray], in_hw: tuple[int, int]
              ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """A 2D stride-s ConvTranspose as Conv (every output phase's channels) + DepthToSpace."""
    a = _attrs(node)
    w = weights.get(node.input[1])
    if (w is None or w.ndim != 4 or a.get("group", 1) != 1 or "output_shape" in a
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or any(d != 1 for d in a.get("dilations", [1, 1]))):
        return None
    strides = list(a.get("strides", [1, 1]))
    if strides[0] != strides[1] or strides[0] < 2:
        return None
    s = strides[0]
    channels_in, channels_out, kh, kw = w.shape
    pads = list(a.get("pads", [0, 0, 0, 0]))
    extra = list(a.get("output_padding", [0, 0]))
    begin, end, taps = [], [], []
    for axis, (k, length) in enumerate(zip((kh, kw), in_hw)):
        out_len = s * (length - 1) + extra[axis] + k - pads[axis] - pads[axis + 2]
        if out_len <= 0 or out_len % s:
            return None
        low, high, axis_taps = _phase_taps(s, k, pads[axis])
        pad_end = out_len // s - 1 + (high - low + 1) - length + low
        if low > 0 or pad_end < 0:
            return None
        begin.append(-low)
        end.append(pad_end)
        taps.append(axis_taps)
    th, tw = len(taps[0][0]), len(taps[1][0])
    # Conv channel (rh*s + rw)*M + m: DepthToSpace's DCR order.
    kernel = np.zeros((s * s * channels_out, channels_in, th, tw), w.dtype)
    for rh in range(s):
        for rw in range(s):
            block = (rh * s + rw) * channels_out
            for t, src_h in enumerate(taps[0][rh]):
                for u, src_w in enumerate(taps[1][rw]):
                    if src_h >= 0 and src_w >= 0:
                        kernel[block:block + channels_out, :, t, u] = w[:, :, src_h, src_w].T
    name = node.name or node.output[0]
    inits = [numpy_helper.from_array(kernel, f"{name}/subpixel_weight")]
    inputs = [node.input[0], inits[0].name]
    if len(node.input) > 2 and node.input[2]:
        bias = weights.get(node.input[2])
        if bias is None:
            return None
        inits.append(numpy_helper.from_array(np.tile(bias, s * s), f"{name}/subpixel_bias"))
        inputs.append(inits[1].name)
    conv = helper.make_node("Conv", inputs, [f"{name}/subpixel"], name=f"{name}/subpixel",
                            kernel_shape=[th, tw], pads=begin + end)
    shuffle = helper.make_node("DepthToSpace", [f"{name}/subpixel"], list(node.output),
                               name=name, blocksize=s, mode="DCR")
    return [conv, shuffle], inits


def subpixel_conv_transposes(proto: onnx.ModelProto, shapes: dict[str, list[int]]) -> int:
    """Replace, in place, each strided 2D ConvTranspose that fits by Conv + DepthToSpace."""
    return _rewrite(proto, "ConvTranspose", shapes, _subpixel)
