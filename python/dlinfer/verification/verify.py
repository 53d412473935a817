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


def _spec_input(onnx_path: str):
    from ..runtime.model import Model

    model = Model(onnx_path, device="cpu", threads=1)
    return model, (model.spec.input if model.spec is not None else None)


def _load_data(data: Any, model: Any, spec: Any, samples: int, seed: int) -> tuple[np.ndarray, str]:
    info = model.inputs[0]
    if data is None:
        rng = np.random.default_rng(seed)
        shape = [samples] + [d if isinstance(d, int) else 1 for d in info.shape[1:]]
        if spec is not None and spec.kind == "image":
            from ..preprocessing.transform import PreprocessSpec

            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            batch = PreprocessSpec.from_model(spec)(pixels)
            return batch, f"random uint8 pixels normalized per the spec, seed {seed}"
        if spec is not None and spec.kind == "latent":
            return rng.standard_normal(shape).astype(
                info.dtype
            ), f"standard normal latents, seed {seed}"
        return rng.uniform(0, 1, shape).astype(info.dtype), f"uniform [0, 1) samples, seed {seed}"
    if isinstance(data, np.ndarray):
        arr, source = data, "array"
    elif os.path.isdir(data):
        if spec is None or spec.kind != "image":
            raise InputError("--data DIR needs an image model with a dlinfer spec")
        from ..preprocessing.decode import iter_image_files
        from ..preprocessing.transform import PreprocessSpec

        files = list(iter_image_files(data, recursive=False))
        if not files:
            raise InputError(f"no image files in {data}")
        batch = PreprocessSpec.from_model(spec)(files[:samples])
        return batch, f"{min(len(files), samples)} images from {data}"
    else:
        try:
            arr = np.load(data)
        except (OSError, ValueError) as exc:
            raise InputError(f"could not read --data {data!r} as a .npy file: {exc}") from exc
        source = str(data)
    arr = arr[:samples]
    if arr.dtype == np.uint8 and spec is not None and spec.kind == "image":
        from ..preprocessing.transform import PreprocessSpec

        return PreprocessSpec.from_model(spec)(
            arr
        ), f"{len(arr)} uint8 samples from {source}, normalized per the spec"
    return np.ascontiguousarray(arr, dtype=info.dtype), f"{len(arr)} samples from {source}"


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
    array, a ``.npy`` file or a folder of images (preprocessed with the model's
    spec); ``None`` draws ``samples`` random inputs from the spec's input range.
    ``per_layer`` also maps every Keras layer to the ONNX tensor that carries its
    output and compares them one at a time (``report.first_bad_layer``).
    """
    ort_model, spec = _spec_input(onnx_path)
    if len(ort_model.inputs) != 1:
        raise InputError(
            f"verify handles single-input models; {onnx_path} has {len(ort_model.inputs)}"
        )
    x, source = _load_data(data, ort_model, spec, samples, seed)
    graph = reference.Graph(onnx_path)
    out_name = ort_model.outputs[0].name
    ort_out = ort_model.session.run(None, {ort_model.inputs[0].name: x})[0]
    ref_out = reference.run(graph, x, outputs=[out_name])[out_name]

    report = VerifyReport(
        keras_path=None
        if keras_model is None
        else str(keras_model)
        if isinstance(keras_model, (str, os.PathLike))
        else getattr(keras_model, "name", "keras model"),
        onnx_path=str(onnx_path),
        samples=int(x.shape[0]),
        data_source=source,
        atol=atol,
        rtol=rtol,
    )
    if keras_model is not None:
        km = _load_keras(keras_model)
        k_out = np.asarray(km(x, training=False))
        if k_out.shape != ort_out.shape and k_out.size == ort_out.size:
            k_out = k_out.reshape(ort_out.shape)
        report.outputs.append(compare("onnxruntime vs keras", ort_out, k_out, atol, rtol))
        report.outputs.append(compare("reference vs keras", ref_out, k_out, atol, rtol))
    report.outputs.append(compare("reference vs onnxruntime", ref_out, ort_out, atol, rtol))
    if per_layer:
        if keras_model is None:
            raise InputError("per_layer needs the Keras model")
        report.layers = _per_layer(km, graph, x, k_out, atol, rtol)
        bad = report.first_bad_layer
        if bad is not None and bad.onnx_tensor is not None:
            value = _onnxruntime_tensor(graph.proto, bad.onnx_tensor, ort_model.inputs[0].name, x)
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
