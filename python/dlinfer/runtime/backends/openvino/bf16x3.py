"""Float32 convolutions on bfloat16 matrix engines: three bfloat16 products each.

AMX multiplies bfloat16 (8 significant bits) and accumulates in float32.  Split each
float32 value in two: ``xh = bf16(x)`` and ``xl = bf16(x - xh)`` (``x - xh`` is exact in
float32), and the weights likewise.  Then
``x*w - (xh*wh + xl*wh + xh*wl) = xh*(w - wh - wl) + (x - xh - xl)*wh + (x - xh)*(w - wh)``,
three terms of at most 2^-18 of ``|x*w|`` each: a sum of products off by about 1e-5 of
``sum |x*w|``, where one bfloat16 product is off by 2^-9 and a float32 one by 2^-24.  One
convolution computes all three products: its input is ``[xh, xl, xh]`` stacked on the
channel axis, its weights ``[wh, wh, wl]`` on theirs.  MatMuls by a constant (dense
layers, and their backward passes) are split the same way.

Everything else (the split itself, biases, activations, pooling, a backward pass's ops)
must stay float32: the CPU plugin, told to infer in bfloat16, would round it too.  Three
things keep it float32, and a check makes sure they did:

- OpenVINO keeps a node in float32 when it carries the ``precise`` runtime attribute.
  Python cannot set it (it takes only OpenVINO's own C++ class), but OpenVINO's IR reader
  creates it from ``<attribute name="precise" version="0"/>``: the rewritten model goes
  through its IR once, with that attribute on every layer but the split products.
- The plugin's own rewrites make new nodes without the attribute.  The ones that did on
  the zoo, MobileNetV2 and ResNet50 are done before marking: OpenVINO's graph fusions
  (a batch normalization folded into a convolution), MaxPool-8 to MaxPool-1, a Subtract
  as an Add of the negation.
- The plugin keeps in float32 whatever leads to a model output without passing a matrix
  op; each residual ``x - xh`` gets an output (one element of it), so the ops computing a
  product's input do.  A clamp to float32's range after each product, fused into it,
  makes its output float32 (the plugin gives a bfloat16 op a bfloat16 output otherwise).

:func:`compile` then reads the compiled graph's precisions (:func:`bfloat16_ops`), and
where any op but a split product would compute in bfloat16, compiles the model in float32
instead.  On a CPU without AMX, bfloat16 products are no faster than float32 ones and
three would be slower: :func:`available` says no there.

Measured on the 2-core AMX VM, Grad-CAM (forward and backward) at batch 32:
vgg16_transfer 677 ms split, 1111 ms onnxruntime float32, 1082 ms OpenVINO float32, and
plain bfloat16 moved its maps beyond the parity bound; the maps of the six parity models
stayed within 5.3e-5 of TensorFlow's maximum (onnxruntime: 3.5e-6; the bound: 1e-4).
"""

from __future__ import annotations

import logging
import os
import tempfile
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from ..choice import cpu_flags

__all__ = ["PRECISION", "PREFIX", "available", "bfloat16_ops", "compile", "float32_precision",
           "rewrite", "to_bf16"]

logger = logging.getLogger("dlinfer")

PRECISION = "bf16x3"  # the loader's name for it (not a precision a file is gated for)
PREFIX = "dlinfer_bf16x3/"  # the nodes left to run in bfloat16
_F32 = "dlinfer_bf16x3_f32/"  # float32 nodes the split adds
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Fewer input channels than this stay float32: AMX multiplies 32 bfloat16 channels at a
# time, and small_convnet's first convolution (3 channels, 9 split) took 11.6 ms split
# and 9.8 ms in float32 at batch 32.
_MIN_CHANNELS = 16
_PRECISE = {"name": "precise", "version": "0"}


def available() -> bool:
    """This CPU has AMX's bfloat16 tiles (Linux's ``/proc/cpuinfo`` says so; elsewhere no
    way to tell without a probe, so no)."""
    return "amx_bf16" in cpu_flags()


def float32_precision() -> str:
    """The precision that gives float32's answers fastest here: this, where AMX has it."""
    return PRECISION if available() else "f32"


def to_bf16(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to bfloat16 (to nearest, ties to even), as float32.  Infinities
    and NaNs stay as they are."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32)
    return np.where(np.isfinite(values), rounded.view(np.float32), values)


def compile(ov: Any, core: Any, model: Any, config: dict[str, Any]) -> tuple[Any, str]:
    """``(compiled, precision)``: ``model`` compiled with its convolutions split, where
    OpenVINO then runs every other op in float32 (:func:`bfloat16_ops` checks the compiled
    graph), else compiled in float32 as it is.  ``model`` is left unchanged."""
    split, count = rewrite(ov, core, _fused(model.clone()))
    if count:
        compiled = core.compile_model(split, "CPU", {**config, "INFERENCE_PRECISION_HINT": "bf16"})
        try:
            stray = bfloat16_ops(compiled)
        except (KeyError, RuntimeError) as exc:  # an OpenVINO whose runtime model says less
            stray = [f"the compiled graph's precisions unreadable: {exc!r}"]
        if not stray:
            return compiled, PRECISION
        logger.info("OpenVINO would run %d op(s) beside the split convolutions in bfloat16 "
                    "(%s): float32 instead", len(stray), ", ".join(stray[:3]))
    return core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"}), "f32"


def _fused(model: Any) -> Any:
    """``model`` after OpenVINO's own graph fusions (what ``ov.convert_model`` runs): a batch
    normalization's scale folded into the convolution before it, and so on.  The plugin
    would fuse them after the split: new nodes without the float32 mark (MobileNetV2's
    depthwise convolutions ran in bfloat16), and scales multiplied into weights split
    exactly into bfloat16 parts, which they then no longer are."""
    try:
        from openvino._offline_transformations import apply_moc_transformations
    except ImportError:  # a later OpenVINO may move it: the check after compiling remains
        return model
    apply_moc_transformations(model, cf=True)
    return model


def bfloat16_ops(compiled: Any) -> list[str]:
    """The ops of a compiled split model that round to bfloat16 where float32 was meant,
    as "Type 'name'": any op but a split convolution (with the bias and activation fused
    into it) that computes in bfloat16, and a split convolution whose output is bfloat16.
    Reorders only change layout or feed a split convolution its bfloat16 input."""
    stray = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind == "Reorder":
            continue
        names = _names(op)
        ours = any(n.startswith(PREFIX) for n in names + _names(_producer(op)))
        if ours and kind in ("Convolution", "FullyConnected", "MatMul"):
            wrong = "bf16" in info["outputPrecisions"].astype(str)
        else:
            wrong = not ours and info["runtimePrecision"].astype(str) == "bf16"
        if wrong:
            stray.append(f"{kind} {names[0] if names else op.get_friendly_name()!r}")
    return stray


def _names(op: Any) -> list[str]:
    """The graph's ops that a compiled op carries out (its own and those fused into it)."""
    if op is None:
        return []
    return [n for n in op.get_rt_info()["originalLayersNames"].astype(str).split(",") if n]


def _producer(op: Any) -> Any:
    """What feeds a compiled op's first input, through reorders (None for an input)."""
    while op.get_input_size():
        op = op.input(0).get_source_output().get_node()
        if op.get_rt_info()["layerType"].astype(str) != "Reorder":
            return op
    return None


def rewrite(ov: Any, core: Any, model: Any) -> tuple[Any, int]:
    """``(model', count)``: ``model`` with each float32 convolution by constant weights
    split into three bfloat16 products, every other node marked float32, and how many
    convolutions were split.  Compile ``model'`` with ``INFERENCE_PRECISION_HINT: bf16``.
    A model with nothing to split comes back as it was."""
    from openvino import opset13 as ops

    count, residuals = 0, []
    for node in list(model.get_ordered_ops()):
        _plain_max_pool(ops, node)
        _plain_subtract(ops, node)
        split = _split(ops, node, count)
        if split is not None:
            product, residual = split
            # Fused into the product, a float32 op makes its output float32; a clamp to
            # float32's range changes no finite value.
            out = ops.clamp(product, -_FLOAT32_MAX, _FLOAT32_MAX, name=f"{_F32}{count}/out")
            node.output(0).replace(out.output(0))
            rank = residual.get_output_partial_shape(0).rank.get_length()
            corner = ops.slice(residual, *(ops.constant(np.full(rank, v, np.int64))
                                           for v in (0, 1, 1)), name=f"{_F32}{count}/corner")
            residuals.append(ops.result(corner, name=f"{_F32}{count}/residual"))
            count += 1
    if not count:
        return model, 0
    # One element of each residual is output: the whole of it cost small_convnet's batch
    # of 32 6 ms of reorders to the output's layout.
    model.add_results(residuals)
    model.validate_nodes_and_infer_types()
    return _mark_precise(ov, core, model), count


def _split(ops: Any, node: Any, count: int) -> tuple[Any, Any] | None:
    """The three-product op standing in for ``node`` and the residual ``x - bf16(x)`` it
    multiplies, or None where ``node`` is not a float32 Convolution or MatMul by a
    constant (grouped and int8 ones stay as they are)."""
    kind = node.get_type_name()
    if kind not in ("Convolution", "MatMul"):
        return None
    weights = node.input(1).get_source_output().get_node()
    x = node.input(0).get_source_output()
    if (weights.get_type_name() != "Constant" or x.get_element_type().get_type_name() != "f32"
            or weights.get_output_element_type(0) != x.get_element_type()):
        return None
    w = weights.get_data().astype(np.float32)
    if kind == "Convolution" and w.shape[1] < _MIN_CHANNELS:
        return None
    if kind == "MatMul":
        attrs = node.get_attributes()
        if attrs["transpose_a"] or w.ndim != 2 or x.get_partial_shape().rank.get_length() < 2:
            return None
        w = w.T if attrs["transpose_b"] else w  # (K, M)
    wh = to_bf16(w)
    wl = to_bf16(w - wh)
    # bf16(x) and back are exact in any precision the plugin picks for them: ours.  The
    # residual is not: float32, an Add of the negation (see _plain_subtract).
    xh = ops.convert(ops.convert(x, "bf16", name=f"{PREFIX}{count}/bf16"), "f32",
                     name=f"{PREFIX}{count}/high")
    xl = ops.add(x, ops.multiply(xh, ops.constant(np.float32(-1))), name=f"{_F32}{count}/low")
    axis = 1 if kind == "Convolution" else -1  # the axis the weights sum over
    stacked = ops.concat([xh, xl, xh], axis, name=f"{PREFIX}{count}/input")
    kernel = ops.constant(np.concatenate([wh, wh, wl], axis=1 if kind == "Convolution" else 0),
                          name=f"{PREFIX}{count}/weights")
    if kind == "MatMul":
        return ops.matmul(stacked, kernel, False, False, name=f"{PREFIX}{count}/matmul"), xl
    attrs = node.get_attributes()
    return ops.convolution(stacked, kernel, attrs["strides"], attrs["pads_begin"],
                           attrs["pads_end"], attrs["dilations"], attrs["auto_pad"],
                           name=f"{PREFIX}{count}/convolution"), xl


def _plain_subtract(ops: Any, node: Any) -> None:
    """``a - b`` becomes ``a + b * -1``, as the CPU plugin would rewrite it, so that the
    nodes doing it carry the float32 mark (the plugin's own do not)."""
    if (node.get_type_name() != "Subtract"
            or node.get_output_element_type(0).get_type_name() != "f32"):
        return
    a, b = (node.input(i).get_source_output() for i in range(2))
    negated = ops.multiply(b, ops.constant(np.float32(-1)))
    node.output(0).replace(ops.add(a, negated, name=node.get_friendly_name()).output(0))


def _plain_max_pool(ops: Any, node: Any) -> None:
    """An ONNX MaxPool (OpenVINO's MaxPool-8, which also returns indices) becomes the
    MaxPool-1 that the CPU plugin would make of it.  The plugin's replacement does not
    inherit ``precise``, and the pooling then ran in bfloat16 behind each convolution."""
    if (node.get_type_name() != "MaxPool" or node.get_output_size() != 2
            or node.output(1).get_target_inputs()):
        return
    attrs = node.get_attributes()
    if any(int(d) != 1 for d in attrs["dilations"]):
        return
    from openvino import opset1

    pool = opset1.max_pool(node.input(0).get_source_output(), attrs["strides"],
                           attrs["pads_begin"], attrs["pads_end"], attrs["kernel"],
                           attrs["rounding_type"], attrs["auto_pad"],
                           name=node.get_friendly_name())
    node.output(0).replace(pool.output(0))


def _mark_precise(ov: Any, core: Any, model: Any) -> Any:
    """``model`` through its IR, every layer but the split convolutions marked precise."""
    with tempfile.TemporaryDirectory(prefix="dlinfer-bf16x3-") as folder:
        xml_path = os.path.join(folder, "model.xml")
        ov.save_model(model, xml_path, compress_to_fp16=False)
        tree = ET.parse(xml_path)
        for layer in tree.getroot().iter("layer"):
            if layer.get("name", "").startswith(PREFIX):
                continue
            rt_info = layer.find("rt_info")
            if rt_info is None:
                rt_info = ET.Element("rt_info")
                layer.insert(0, rt_info)
            ET.SubElement(rt_info, "attribute", _PRECISE)
        text = ET.tostring(tree.getroot(), encoding="unicode")
        weights = np.fromfile(os.path.join(folder, "model.bin"), dtype=np.uint8)
    return core.read_model(text, ov.Tensor(weights))
