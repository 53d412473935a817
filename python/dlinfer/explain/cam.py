"""`Classifier.explain`: Grad-CAM, saliency and occlusion maps, one :class:`Explanation`
per image.

- **gradcam** (Selvaraju et al. 2017): A = the layer's activations, alpha_k = the mean
  over the map of d score / d A^k, raw = ReLU(sum_k alpha_k A^k) at the layer's
  resolution.  The score is the class logit: the pre-softmax value for a softmax head
  (:func:`dlinfer.explain.gradient.value_and_gradient` with ``logits=True``), and for a
  single sigmoid unit z for labels[1] and -z for labels[0] (P(labels[0]) = sigmoid(-z)).
- **saliency** (Simonyan et al. 2014): raw = d score / d input, shaped like the model's
  input; the heatmap is max over channels of |raw|.
- **occlusion** (Zeiler and Fergus 2014), in :mod:`.occlusion`: no gradients.

Images go through the model's own preprocessing, as in ``Classifier.predict``; the
heatmap is mapped back through the same resize, crop or letterbox onto the image as
it was given (:class:`~dlinfer.preprocessing.transform.Geometry`), and scaled to [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checks import MAX_BATCH, check_int
from ..errors import InputError
from ..preprocessing.transform import Geometry, empty_batch
from .layers import LayerTensor, graph_info

__all__ = ["METHODS", "Explanation", "explain"]

METHODS = ("gradcam", "saliency", "occlusion")


@dataclass
class Explanation:
    """Why a classifier chose ``target`` for one image.

    ``layer`` is the ONNX tensor the map was computed on (the model's input for
    saliency and occlusion); ``raw`` the unnormalized map (gradcam: the layer's
    height x width; saliency: the input gradient, shaped like one model input;
    occlusion: the drop in the target's probability per input pixel);
    ``heatmap`` a float32 (height, width) map of the image as given, in [0, 1].
    """

    method: str
    layer: str
    target: int
    label: str
    probability: float
    raw: np.ndarray
    heatmap: np.ndarray
    # raw as a (height, width) map in [0, 1] (saliency: max |gradient| over channels)
    map: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def to_dict(self, values: bool = True) -> dict[str, Any]:
        """JSON-ready numbers; with ``values``, ``map``: :attr:`map` rounded to 4 decimals."""
        out: dict[str, Any] = {
            "method": self.method, "layer": self.layer, "target": self.target,
            "label": self.label, "probability": round(float(self.probability), 6),
            "image_size": list(self.heatmap.shape), "raw_max": float(self.raw.max()),
        }
        if values:
            out["map"] = np.round(self.map.astype(np.float64), 4).tolist()
        return out


# ---- images in, batch out -----------------------------------------------------------


@dataclass
class Prepared:
    """A model-input batch and, per image, where it came from."""

    batch: np.ndarray
    sizes: list[tuple[int, int]]  # each image's (height, width) as given
    geometries: list[Geometry]
    pixels: list[Any] | None  # decoded (array, colour order) per image, for overlays


def prepare(clf: Any, images: Any) -> Prepared:
    """``images`` (anything ``Classifier.predict`` takes, or decoded pixels) as a batch."""
    spec = clf.preprocessing
    if spec is None or clf._multi:
        raise InputError(f"explain needs a classifier with a single image input; "
                         f"{clf.model.path} takes {[i.kind for i in clf._inputs]}")
    if _floats(images):
        batch = clf.preprocess(images)
        hw = _spatial(batch, spec.layout)
        n = len(batch)
        return Prepared(batch, [hw] * n, [Geometry(hw, (0, 0), (1.0, 1.0))] * n, None)
    if _is_pixels(images):
        pixels = list(images)
    else:
        # Decoded at full size (no JPEG draft): the heatmap is drawn on the image as it
        # is, so a large JPEG's input can differ from predict()'s drafted one slightly.
        pixels = _full_size(spec).pixels(images, clf.threads)
    if spec.size is None:
        batch = spec.model_input([p for p, _ in pixels], clf.threads)
    else:
        batch = empty_batch(spec.batch_shape(len(pixels)), spec.dtype)
        spec.fill(pixels, batch, clf.threads)
    sizes = [tuple(p.shape[:2]) for p, _ in pixels]
    return Prepared(batch, sizes, [spec.geometry(*s) for s in sizes], pixels)


@functools.lru_cache(maxsize=16)
def _full_size(spec: Any) -> Any:
    """``spec`` without JPEG draft decoding (a frozen dataclass: built once per spec)."""
    return spec.replace(draft=False)


def _is_pixels(images: Any) -> bool:
    return (isinstance(images, list) and bool(images) and all(
        isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], np.ndarray)
        and isinstance(i[1], str) for i in images))


def _floats(images: Any) -> bool:
    items = images if isinstance(images, (list, tuple)) else [images]
    return bool(items) and all(isinstance(i, np.ndarray) and i.dtype.kind == "f" for i in items)


def _spatial(batch: np.ndarray, layout: str) -> tuple[int, int]:
    return (batch.shape[1], batch.shape[2]) if layout == "NHWC" else (batch.shape[2],
                                                                      batch.shape[3])


# ---- targets --------------------------------------------------------------------------


def targets_for(clf: Any, n: int, target: Any) -> list[int]:
    """One class index per image from ``target``: one index or label, or one per image."""
    k = len(clf.labels)
    many = isinstance(target, (Sequence, np.ndarray)) and not isinstance(target, str)
    chosen = list(target) if many else [target] * n
    if len(chosen) != n:
        raise InputError(f"target has {len(chosen)} entries for {n} images")
    out = []
    for t in chosen:
        if isinstance(t, str):
            if t not in clf.labels:
                raise InputError(f"target {t!r} is not one of the labels {clf.labels[:20]}")
            t = clf.labels.index(t)
        out.append(check_int(t, "target", min=0, max=k - 1))
    return out


def _score_index(clf: Any, targets: list[int]) -> tuple[list[int], np.ndarray]:
    """The output element to differentiate per image, and the sign of its gradient.

    A single sigmoid unit z is P(labels[1]); labels[0]'s logit is -z.
    """
    if clf._binary:
        return [0] * len(targets), np.array([1.0 if t == 1 else -1.0 for t in targets],
                                            np.float32)
    return targets, np.ones(len(targets), np.float32)


# ---- the methods ----------------------------------------------------------------------


def explain(clf: Any, images: Any, method: str = "gradcam", layer: str | None = None,
            target: Any = None, *, batch_size: int = 32, precision: str = "bf16x3"
            ) -> list[Explanation]:
    """See :meth:`dlinfer.Classifier.explain`."""
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    batch_size = check_int(batch_size, "batch_size", min=1, max=MAX_BATCH)
    from .gradient import check_precision

    check_precision(precision)
    if method != "gradcam" and layer is not None:
        raise InputError(f"{method} works on the model's input; layer= is for gradcam")
    prepared = prepare(clf, images)
    n = len(prepared.batch)
    chosen = None if target is None else targets_for(clf, n, target)
    info = graph_info(clf.model, clf.preprocessing.layout)
    used = clf.model.inputs[0].name
    raws: list[np.ndarray] = []
    probas: list[np.ndarray] = []
    targets: list[int] = []
    if method == "occlusion":
        from .occlusion import occlusion_maps

        proba = np.concatenate([clf.run_batch(prepared.batch[i:i + batch_size])
                                for i in range(0, n, batch_size)])
        targets = chosen or [int(t) for t in proba.argmax(axis=1)]
        raws = occlusion_maps(clf, prepared.batch, targets, batch_size=batch_size)
        probas = list(proba)
    else:
        wrt = None
        if method == "gradcam":
            wrt = resolve_layer(clf, info, layer, prepared.batch[:1])
            used = wrt.tensor
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            values, grads, proba, ts = class_gradients(
                clf, prepared.batch[part], None if chosen is None else chosen[part],
                used, None if wrt is None else _SPATIAL[wrt.layout], precision)
            raws.extend(gradcam(values, grads, wrt.layout) if wrt is not None else grads)
            probas.extend(proba)
            targets.extend(ts)
    layout = clf.preprocessing.layout
    in_hw = _spatial(prepared.batch, layout)
    flats = [map_2d(method, raw, layout) for raw in raws]
    heats = _heatmaps(flats, in_hw, prepared)
    if len({f.shape for f in flats}) == 1:  # one map size: scaled in one NumPy pass
        maps = list(scaled_each(np.stack(flats), in_place=True))
    else:
        maps = [scaled(f) for f in flats]
    return [Explanation(method, used, t, clf.labels[t], float(probas[i][t]), raws[i],
                        heats[i], maps[i]) for i, t in enumerate(targets)]


_SPATIAL = {"NCHW": (2, 3), "NHWC": (1, 2)}  # a layer's map axes, by its layout


def class_gradients(clf: Any, batch: np.ndarray, targets: list[int] | None, wrt: str,
                    summed_over: tuple[int, ...] | None = None, precision: str = "float32",
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """``wrt``'s values, d class score / d ``wrt``, the probabilities and the classes.

    ``summed_over``: the gradient summed over those axes of ``wrt`` (kept, size 1), all
    that Grad-CAM's channel weights need (see ``value_and_gradient``).

    ``targets`` None: the predicted classes, found in the same onnxruntime run as their
    gradients (``index=None``: an ArgMax inside the graph).  A separate forward pass in
    the classifier's own session cost more than the gradient: each session's idle
    threads spun and held the cores the other needed.  A single sigmoid unit has one
    element to differentiate, right for both classes up to the sign.
    """
    from .gradient import value_and_gradient

    binary_guess = targets is None and clf._binary
    classes = [0] * len(batch) if binary_guess else targets
    index, sign = (None, np.ones(len(batch), np.float32)) if classes is None else \
        _score_index(clf, classes)
    values, grads, outputs = value_and_gradient(clf.model, batch, output=clf.output.name,
                                                index=index, wrt=wrt, logits=True,
                                                summed_over=summed_over, precision=precision)
    grads = np.asarray(grads, np.float32) * _logit_factor(clf, sign, outputs, np.ndim(grads))
    proba = clf.probabilities(outputs)
    found = targets if targets is not None else [int(t) for t in proba.argmax(axis=1)]
    if binary_guess and any(found):  # the run gave -dz (class 0); class 1's score is z
        flip = np.array([-1.0 if t == 1 else 1.0 for t in found], np.float32)
        grads = grads * flip.reshape((-1,) + (1,) * (grads.ndim - 1))
    return np.asarray(values, np.float32), grads, proba, found


def gradcam(values: np.ndarray, grads: np.ndarray, layout: str) -> list[np.ndarray]:
    """ReLU(sum_k alpha_k A^k) per image, (height, width) of the layer; ``grads`` is the
    gradient, or its sum over the map (height and width of size 1)."""
    if layout == "NHWC":
        values, grads = values.transpose(0, 3, 1, 2), grads.transpose(0, 3, 1, 2)
    # (N, C): the channel weights, each the mean of its gradient over the map.
    alpha = grads.sum(axis=(2, 3)) / (values.shape[2] * values.shape[3])
    # einsum without optimize= runs its own loops, no BLAS call (see _bilinear), and no
    # weighted copy of the activations (32 maps of 128 x 15 x 15: 0.67 -> 0.15 ms).
    return list(np.maximum(np.einsum("nc,nchw->nhw", alpha, values), 0.0))


def _heatmaps(flats: list[np.ndarray], in_hw: tuple[int, int],
              prepared: Prepared) -> list[np.ndarray]:
    """Each map on its image, scaled to [0, 1]; images of one size and geometry (a batch
    array, a folder of one camera's photos) are sampled together in one NumPy pass."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (size, geometry) in enumerate(zip(prepared.sizes, prepared.geometries)):
        groups.setdefault((size, tuple(geometry)), []).append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(flats)
    for members in groups.values():
        i0 = members[0]
        stack = to_image(np.stack([flats[i] for i in members]), in_hw, prepared.sizes[i0],
                         prepared.geometries[i0])
        for i, heat in zip(members, scaled_each(stack, in_place=True)):
            out[i] = heat
    return out


def resolve_layer(clf: Any, info: Any, layer: str | None, sample: np.ndarray) -> LayerTensor:
    """``layer`` as an ONNX tensor; None: the last convolution block (shapes from a run)."""
    if layer is not None:
        found = info.resolve(layer)
    elif sample.shape[1:] in info.defaults:
        found = info.defaults[sample.shape[1:]]
    else:
        from ..verification.per_layer import onnxruntime_tensors

        convs = [n.output[0] for n in info.conv_nodes()]
        if not convs:
            raise InputError(f"{clf.model.path} has no convolution to explain; name a 4-D "
                             "tensor with layer=, or use method='occlusion'")
        values = onnxruntime_tensors(info.proto, {clf.model.inputs[0].name: sample}, convs)
        found = info.last_conv_block({k: v.shape for k, v in values.items()})
        info.defaults[sample.shape[1:]] = found  # one run per input size, not per call
    if found.layout == "":
        raise InputError(f"layer {found.asked or found.tensor!r} ({found.tensor}) has no "
                         "spatial axes: Grad-CAM needs a 4-D convolutional tensor")
    return found


def _logit_factor(clf: Any, sign: np.ndarray, outputs: dict[str, np.ndarray],
                  ndim: int) -> np.ndarray:
    """Per sample, what turns the gradient of the differentiated output into the
    gradient of the class score.

    ``logits=True`` steps under a Softmax only; a single sigmoid unit p = sigmoid(z) is
    differentiated as p, and dp = p (1 - p) dz, so dividing by p (1 - p) gives the
    logit's gradient (float64: p is far from 0 and 1 unless the model is saturated, where
    p (1 - p) underflows and the gradient carries no direction anyway).
    """
    factor = sign.astype(np.float64)
    if clf._binary and _ends_in_sigmoid(clf):
        p = np.asarray(outputs[clf.output.name], np.float64).reshape(len(sign), -1)[:, 0]
        factor = factor / np.maximum(p * (1.0 - p), np.finfo(np.float64).tiny)
    return factor.astype(np.float32).reshape((-1,) + (1,) * (ndim - 1))


def _ends_in_sigmoid(clf: Any) -> bool:
    info = graph_info(clf.model, clf.preprocessing.layout)
    name = clf.output.name if clf.output.name in info.outputs else info.outputs[0]
    node = info.producer.get(name)
    while node is not None and node.op_type == "Identity":
        node = info.producer.get(node.input[0])
    return node is not None and node.op_type == "Sigmoid"


# ---- maps to images ---------------------------------------------------------------------


def map_2d(method: str, raw: np.ndarray, layout: str) -> np.ndarray:
    """The (height, width) map of ``raw``: saliency's channel-wise max |gradient|."""
    if method != "saliency" or raw.ndim == 2:
        return raw.astype(np.float32, copy=False)
    axis = -1 if layout == "NHWC" else 0
    return np.abs(raw).max(axis=axis).astype(np.float32)


def scaled_each(stack: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """:func:`scaled` for each map of a (k, H, W) stack; ``in_place`` overwrites ``stack``.

    All-zero maps are divided by infinity (giving zeros): a plain division, where a
    masked one (``where=``) and a fresh zero array cost 4 of 6.6 ms on 32 heatmaps of
    150 x 150.
    """
    m = np.maximum(stack, 0.0, out=stack if in_place else None)
    if not m.size:
        return m.astype(np.float32, copy=False)
    top = m.reshape(len(m), -1).max(axis=1)
    top = np.where(top > 0, top, np.inf).astype(m.dtype).reshape(-1, 1, 1)
    return np.divide(m, top, out=m).astype(np.float32, copy=False)


def scaled(m: np.ndarray) -> np.ndarray:
    """``m`` in [0, 1]: negatives (evidence against) cut, divided by the maximum."""
    m = np.maximum(m, 0.0)
    top = float(m.max()) if m.size else 0.0
    return (m / top if top > 0 else np.zeros_like(m)).astype(np.float32)


def to_image(m: np.ndarray, in_hw: tuple[int, int], size: tuple[int, int],
             geometry: Geometry) -> np.ndarray:
    """A map (or a (k, h, w) stack of maps) covering the model's input, sampled
    bilinearly at each pixel of the image as given (height, width ``size``) through the
    preprocessing's ``geometry``; image pixels the model never saw (a centre crop's
    sides) get 0."""
    stack = m[None] if m.ndim == 2 else m
    (h_in, w_in), (h, w) = in_hw, size
    (top, left), (sy, sx) = geometry.offset, geometry.scale
    # Pixel centres of the image -> model-input coordinates -> map coordinates.
    y_in = (np.arange(h, dtype=np.float64) + 0.5) * sy + top
    x_in = (np.arange(w, dtype=np.float64) + 0.5) * sx + left
    ys = y_in * stack.shape[1] / h_in - 0.5
    xs = x_in * stack.shape[2] / w_in - 0.5
    out = _bilinear(stack.astype(np.float32, copy=False), ys, xs)
    out[:, (y_in < 0) | (y_in >= h_in), :] = 0.0
    out[:, :, (x_in < 0) | (x_in >= w_in)] = 0.0
    return out[0] if m.ndim == 2 else out


def _bilinear(m: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A (k, h, w) stack at the grid ys x xs (map coordinates), clamped at the edges.

    Bilinear sampling is separable: each output column blends two map columns (on the
    small map), then each output row two of those rows (whole-row gathers), by gathers
    and element-wise blends.  No BLAS: NumPy's OpenBLAS threads spin for a while after
    a matrix product and took a core from the next batch's onnxruntime run
    (small_convnet Grad-CAM at batch 32 on 2 cores: 113 -> 67 ms).
    """
    lo, hi, frac = _taps(xs, m.shape[2])
    cols = m[:, :, lo] * (1 - frac) + m[:, :, hi] * frac
    lo, _, frac = _taps(ys, m.shape[1])
    # Each output row: its upper map row plus the step to the next one, times its weight
    # (the steps taken on the small map; the last row's is zero, as hi clamps there).
    steps = np.zeros_like(cols)
    np.subtract(cols[:, 1:], cols[:, :-1], out=steps[:, :-1])
    out = cols[:, lo, :]  # a new array (fancy indexing): blended in place
    if len(m) * cols.shape[2] >= _ROW_AT_A_TIME:
        # Many maps: one output row of all of them at a time, into a small buffer.  A
        # second full-size temporary cost more in page faults than the loop (32 maps to
        # 150 x 150: 2.5 -> 1.7 ms).
        row = np.empty((len(m), cols.shape[2]), np.float32)
        for r in np.flatnonzero(frac):
            np.multiply(steps[:, lo[r], :], frac[r], out=row)
            out[:, r, :] += row
    else:
        step = steps[:, lo, :]
        step *= frac[:, None]
        out += step
    return out.astype(np.float32, copy=False)


# Values per output row (maps x image width) from which _bilinear blends row by row: a
# Python step costs about 4 us, a value of a full-size temporary about 1.5 ns.
_ROW_AT_A_TIME = 4096


def _taps(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each coordinate's two neighbours on the map and the weight of the upper one,
    coordinates clamped to the map."""
    c = np.clip(coords, 0, size - 1)
    lo = np.floor(c).astype(np.intp)
    return lo, np.minimum(lo + 1, size - 1), (c - lo).astype(np.float32)
