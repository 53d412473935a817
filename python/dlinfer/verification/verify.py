"""``dlinfer verify``: do Keras, onnxruntime and dlinfer's reference executor agree?

Three opinions on the same samples: Keras (the source of truth the user
trained), onnxruntime (what dlinfer deploys) and :mod:`dlinfer.reference`
(dlinfer's own kernels, sharing no code with either).  With ``per_layer`` the
verifier walks the Keras layers in order, finds the ONNX tensor that carries
each layer's output, and names the first layer whose outputs part ways.

Memory stays flat: the Keras side keeps one activation at a time (layers are
run as a chain), and the ONNX side computes only the few candidate tensors of
the layer being checked.

TensorFlow is imported only when a Keras model is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from . import reference
from .compare import DEFAULT_ATOL, DEFAULT_RTOL, Comparison, close, compare
from .samples import load_samples

__all__ = ["LayerResult", "VerifyReport", "verify"]

# How many same-shaped ONNX tensors after the previous match are tried for a
# layer (Conv, Add, Relu of one Keras Conv2D are three); the best one wins.
_CANDIDATES = 8


@dataclass
class LayerResult:
    index: int
    layer: str
    layer_type: str
    shape: tuple[int, ...]
    onnx_tensor: str | None
    layout: str | None  # "NHWC" (as is) or "NCHW" (transposed back for comparison)
    comparison: Comparison | None  # the reference executor's tensor vs Keras
    # For the first diverging layer only: onnxruntime's value of the same tensor
    # vs Keras, so that a bug in dlinfer's own kernels cannot pass for a bad export.
    onnxruntime: Comparison | None = None

    @property
    def ok(self) -> bool:
        return self.comparison is not None and self.comparison.ok


@dataclass
class VerifyReport:
    keras_path: str | None
    onnx_path: str
    samples: int
    data_source: str
    atol: float
    rtol: float
    outputs: list[Comparison] = field(default_factory=list)
    layers: list[LayerResult] | None = None
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why

    @property
    def first_bad_layer(self) -> LayerResult | None:
        for layer in self.layers or []:
            if not layer.ok:
                return layer
        return None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs) and self.first_bad_layer is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        bad = self.first_bad_layer
        d["first_bad_layer"] = bad.layer if bad else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        lines = [
            f"keras: {self.keras_path or '-'}",
            f"onnx:  {self.onnx_path}",
            f"data:  {self.samples} samples ({self.data_source}); tolerance |a-b| <= "
            f"{self.atol:g} + {self.rtol:g}*|b|",
            "",
        ]
        lines.append(
            f"{'comparison':<34} {'max abs':>10} {'mean abs':>10} {'p99 abs':>10} "
            f"{'flips':>7}  result"
        )
        for c in self.outputs:
            lines.append(_row(c.name, c))
        lines += [f"note: {n}" for n in self.notes]
        if self.layers is not None:
            lines += [
                "",
                f"{'#':>3} {'keras layer':<28} {'type':<18} {'onnx tensor':<40} "
                f"{'max abs':>10} {'mean abs':>10} {'p99 abs':>10} {'flips':>7}  result",
            ]
            for lr in self.layers:
                c = lr.comparison
                tensor = lr.onnx_tensor or "(not found)"
                if len(tensor) > 40:
                    tensor = "..." + tensor[-37:]
                if c is None:
                    lines.append(
                        f"{lr.index:>3} {lr.layer:<28} {lr.layer_type:<18} {tensor:<40} "
                        f"{'-':>10} {'-':>10} {'-':>10} {'-':>7}  NO MATCH"
                    )
                else:
                    lines.append(
                        f"{lr.index:>3} {lr.layer:<28} {lr.layer_type:<18} {tensor:<40} {_stats(c)}"
                    )
        lines.append("")
        bad = self.first_bad_layer
        if bad is not None:
            lines.append(
                f"MISMATCH: first diverging layer is #{bad.index} {bad.layer!r} ({bad.layer_type})"
            )
            if bad.onnxruntime is not None:
                verdict = (
                    "onnxruntime agrees with the reference: the export differs from Keras"
                    if not bad.onnxruntime.ok
                    else "onnxruntime matches Keras here: suspect dlinfer's reference kernels"
                )
                lines.append(f"  onnxruntime at {bad.onnx_tensor}: {_stats(bad.onnxruntime)}")
                lines.append(f"  {verdict}")
        elif not self.ok:
            lines.append("MISMATCH: outputs differ")
        else:
            lines.append(
                "OK: all outputs agree" + (" layer by layer" if self.layers is not None else "")
            )
        return "\n".join(lines)


def _stats(c: Comparison) -> str:
    flips = "-" if c.argmax_flips is None else f"{c.argmax_flips}/{c.rows}"
    return (
        f"{c.max_abs:10.3g} {c.mean_abs:10.3g} {c.p99_abs:10.3g} {flips:>7}  "
        f"{'ok' if c.ok else 'MISMATCH'}"
    )


def _row(name: str, c: Comparison) -> str:
    return f"{name:<34} {_stats(c)}"


# ---- data ---------------------------------------------------------------------


def _input_specs(model: Any) -> list[Any]:
    """The spec's inputs, or, for a file without one, plain arrays of each input's type."""
    from ..spec import InputSpec

    if model.spec is not None:
        return list(model.spec.inputs)
    return [InputSpec(name=t.name, shape=t.shape, dtype=t.dtype.name, kind="features",
                      layout="NC", color=None) for t in model.inputs]


# ---- Keras side ----------------------------------------------------------------------


def _load_keras(keras_model: Any) -> Any:
    if not isinstance(keras_model, (str, os.PathLike)):
        return keras_model
    from ..export._tf import import_tensorflow

    keras, _ = import_tensorflow()
    if not os.path.exists(keras_model):
        raise InputError(f"Keras file not found: {keras_model}")
    return keras.models.load_model(keras_model, compile=False)


def _flat_layers(model: Any) -> list[Any]:
    """The model's layers as one chain, nested Sequential/Functional chains expanded."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) and len(layer.inputs) == 1 and len(layer.outputs) == 1:
            out += _flat_layers(layer)
        else:
            out.append(layer)
    return out


def _keras_chain(layers: list[Any], x: np.ndarray) -> Iterator[tuple[Any, np.ndarray]]:
    """Yields (layer, output) one layer at a time, keeping a single activation."""
    act = x
    for layer in layers:
        try:
            act = np.asarray(layer(act, training=False))
        except Exception as exc:  # Keras raises ValueError, TypeError, TF errors...
            raise InputError(
                f"per-layer needs a model whose layers form a chain (Sequential, or nested "
                f"chains); layer {layer.name!r} cannot take the previous layer's output: {exc}"
            ) from exc
        yield layer, act


# ---- per-layer matching -------------------------------------------------------------------


def _onnx_tensor_shapes(graph: Any, x: np.ndarray) -> list[tuple[str, tuple[int, ...]]]:
    """Every node output, in graph order, with its shape at this batch (values dropped)."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    reference.run(
        graph, x, outputs=[], on_tensor=lambda name, v: shapes.append((name, tuple(v.shape)))
    )
    return shapes


def _layouts(kshape: tuple[int, ...], oshape: tuple[int, ...]) -> list[str]:
    out = []
    if oshape == kshape:
        out.append("NHWC")
    if len(kshape) == 4 and oshape == (kshape[0], kshape[3], kshape[1], kshape[2]):
        out.append("NCHW")
    return out


def _per_layer(
    keras_model: Any, graph: Any, x: np.ndarray, expected: np.ndarray, atol: float, rtol: float
) -> list[LayerResult]:
    """Walks the layers; `expected` is the model's own output, to check the chain walk."""
    layers = _flat_layers(keras_model)
    tensors = _onnx_tensor_shapes(graph, x)
    results: list[LayerResult] = []
    position = 0  # index in `tensors` of the previous match; a layer may reuse it (Dropout)
    for index, (layer, kout) in enumerate(_keras_chain(layers, x)):
        kshape = tuple(kout.shape)
        cands = [
            (i, name, lay)
            for i, (name, shape) in enumerate(tensors[position:], start=position)
            for lay in _layouts(kshape, shape)
        ][:_CANDIDATES]
        best: tuple[Comparison, int, str, str] | None = None
        if cands:
            values = reference.run(
                graph, x, outputs=list(dict.fromkeys(name for _, name, _ in cands))
            )
            for i, name, lay in cands:
                v = values[name] if lay == "NHWC" else values[name].transpose(0, 2, 3, 1)
                c = compare(layer.name, v, kout, atol, rtol)
                # Prefer a tensor within tolerance, then the smallest error; among
                # equals the later one (Conv -> BiasAdd -> Relu: the Relu carries the layer).
                key = (c.ok, -c.max_abs, i)
                if best is None or key >= (best[0].ok, -best[0].max_abs, best[1]):
                    best = (c, i, name, lay)
            del values
        if best is None:
            results.append(
                LayerResult(index, layer.name, type(layer).__name__, kshape, None, None, None)
            )
            continue
        c, i, name, lay = best
        results.append(LayerResult(index, layer.name, type(layer).__name__, kshape, name, lay, c))
        position = i
    if (
        results
        and kout.shape == expected.shape
        and not close(kout, expected, atol, rtol)
    ):
        # The chain walk assumed each layer feeds the next; a branching model breaks that.
        raise InputError(
            f"per-layer needs a model whose layers form a chain (Sequential, or nested chains); "
            f"walking {getattr(keras_model, 'name', 'the model')}'s layers in order does not "
            "reproduce its output"
        )
    return results


def _keras_outputs(keras_model: Any, feed: dict[str, np.ndarray], input_names: list[str],
                   output_shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Keras's outputs in the ONNX outputs' order; the exporter keeps the model's order."""
    from ..export.convert import describe

    traced, _, _ = describe(keras_model)
    result = keras_model(traced.feed([feed[n] for n in input_names]), training=False)
    outs = [np.asarray(o) for o in traced.outputs(result)]
    # A (N, 1) Keras output may be exported flat, and the other way round.
    return [k.reshape(shape) if k.shape != shape and k.size == int(np.prod(shape)) else k
            for k, shape in zip(outs, output_shapes)]


def verify(
    keras_model: Any,
    onnx_path: str,
    data: Any = None,
    *,
    per_layer: bool = False,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    samples: int = 16,
    seed: int = 0,
) -> VerifyReport:
    """Compare Keras, onnxruntime and dlinfer's reference executor on samples.

    ``keras_model``: a ``.keras`` path, a Keras model, or ``None`` to compare only
    onnxruntime with the reference executor (no TensorFlow import).  ``data``: an
    array, a dict by input name, a ``.npy``/``.npz`` file or a folder of images
    (preprocessed with the model's spec); ``None`` draws ``samples`` random inputs
    from the spec (see :mod:`dlinfer.verification.samples`).  Every output is
    compared.  A graph with an op the reference executor lacks is still checked
    against Keras; the report notes what was skipped.
    ``per_layer`` (a single-input, single-output chain model) also maps every Keras
    layer to the ONNX tensor that carries its output and compares them one at a
    time (``report.first_bad_layer``).
    """
    from ..runtime.model import Model

    ort_model = Model(onnx_path, device="cpu", threads=1)
    feed, source = load_samples(data, _input_specs(ort_model), samples, seed)
    input_names = [t.name for t in ort_model.inputs]
    out_names = [t.name for t in ort_model.outputs]
    ort_outs = ort_model.session.run(out_names, feed)
    try:
        graph: reference.Graph | None = reference.Graph(onnx_path)
    except reference.UnsupportedOpError as exc:
        graph, skipped = None, f"reference executor skipped: {exc}"
    ref_outs = reference.run(graph, feed, outputs=out_names) if graph is not None else None

    report = VerifyReport(
        keras_path=None
        if keras_model is None
        else str(keras_model)
        if isinstance(keras_model, (str, os.PathLike))
        else getattr(keras_model, "name", "keras model"),
        onnx_path=str(onnx_path),
        samples=int(next(iter(feed.values())).shape[0]),
        data_source=source,
        atol=atol,
        rtol=rtol,
    )
    if graph is None:
        report.notes.append(skipped)
    suffixes = [f": {n}" if len(out_names) > 1 else "" for n in out_names]
    if keras_model is not None:
        km = _load_keras(keras_model)
        k_outs = _keras_outputs(km, feed, input_names, [o.shape for o in ort_outs])
        for suffix, name, o, k in zip(suffixes, out_names, ort_outs, k_outs):
            report.outputs.append(compare("onnxruntime vs keras" + suffix, o, k, atol, rtol))
            if ref_outs is not None:
                report.outputs.append(compare("reference vs keras" + suffix, ref_outs[name], k,
                                              atol, rtol))
    if ref_outs is not None:
        for suffix, name, o in zip(suffixes, out_names, ort_outs):
            report.outputs.append(compare("reference vs onnxruntime" + suffix, ref_outs[name], o,
                                          atol, rtol))
    if per_layer:
        if keras_model is None:
            raise InputError("per_layer needs the Keras model")
        if graph is None:
            raise InputError(f"per_layer runs dlinfer's reference executor, which cannot run "
                             f"this graph: {skipped}")
        if len(input_names) != 1 or len(out_names) != 1:
            raise InputError("per_layer needs a single-input, single-output chain model; "
                             f"{onnx_path} has inputs {input_names} and outputs {out_names}")
        x = feed[input_names[0]]
        report.layers = _per_layer(km, graph, x, k_outs[0], atol, rtol)
        bad = report.first_bad_layer
        if bad is not None and bad.onnx_tensor is not None:
            value = _onnxruntime_tensor(graph.proto, bad.onnx_tensor, input_names[0], x)
            if bad.layout == "NCHW":
                value = value.transpose(0, 2, 3, 1)
            k_layer = _keras_layer_output(km, bad.index, x)
            bad.onnxruntime = compare(bad.layer, value, k_layer, atol, rtol)
    return report


def _onnxruntime_tensor(proto: Any, name: str, input_name: str, x: np.ndarray) -> np.ndarray:
    """One intermediate tensor from onnxruntime: the graph with `name` as an extra output."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = type(proto)()
    model.CopyFrom(proto)
    if name not in [o.name for o in model.graph.output]:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([name], {input_name: x})[0]


def _keras_layer_output(keras_model: Any, index: int, x: np.ndarray) -> np.ndarray:
    for i, (_, out) in enumerate(_keras_chain(_flat_layers(keras_model), x)):
        if i == index:
            return out
    raise IndexError(index)
