"""The model spec: what a runtime needs to know about a model, stored inside it.

Training writes the spec as JSON into the ONNX file's ``metadata_props`` under
the key :data:`METADATA_KEY`.  The runtime reads it back, so a user passes an
image and gets an answer without knowing the model's input layout, colour mode
or normalization.

A model has one or more inputs and outputs, each described by name (the ONNX
tensor's).  The *primary* input is the first image input (else the first input),
the one :class:`~dlinfer.Classifier` preprocesses; the *primary* output is the
first output with labels (else the first), the one a classifier reads.

Preprocessing of an image input is defined as::

    model_input[..., c] = (pixels[..., c] * scale - mean[c]) / std[c]

where ``pixels`` are uint8, after the resize the input describes (``resize``:
``stretch``, ``center-crop`` with ``crop_fraction``, ``letterbox`` or ``pad-end``;
``interpolation`` and ``antialias``; the border ``pad_value`` in model-input units or
``pad_pixel`` in pixels).  A float image given to the runtime is taken to be
``pixels * scale`` already, at the model's size, so it must lie in ``value_range``.

Version 3 holds one description per tensor (``inputs``, ``outputs``); versions 1
(one input and output, labels at the top level) and 2 (version 3 plus copies of the
primary input and output at the top level) are still read.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import SpecError
from .json_limits import loads_limited

__all__ = ["METADATA_KEY", "READABLE_VERSIONS", "SPEC_VERSION", "InputSpec", "ModelSpec",
           "OutputSpec"]

METADATA_KEY = "dlinfer.spec"
# Version 3 describes every input and output once, with the whole image pipeline.
# Version 2 did too, and also stored the primary ones again under version 1's keys (which
# a reader ignored, so editing them changed nothing); version 1 had exactly one of each,
# with the labels and threshold at the top level.  All three are read; 3 is written.
SPEC_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

TASKS = ("classification", "binary_classification", "regression", "generation")
INPUT_KINDS = ("image", "tokens", "series", "latent", "features")
# probabilities: softmax or sigmoid already applied; logits: a classifier applies softmax
OUTPUT_KINDS = ("probabilities", "logits", "value", "images")
COLORS = ("GRAY", "RGB", "BGR")
LAYOUTS = ("NHWC", "NCHW", "NC", "NTC")
# How an image of any size becomes the input's height and width (docs/spec.md):
# stretch to it; scale the shorter side to size / crop_fraction and cut the centre;
# fit it whole, centred, padding the rest; fit the height keeping the aspect ratio, the
# width up to the input's, padding the right (text lines for OCR).
RESIZE_MODES = ("stretch", "center-crop", "letterbox", "pad-end")
INTERPOLATIONS = ("bilinear", "nearest", "area")
# Fields that describe an image's pipeline: written for image inputs only.
IMAGE_FIELDS = ("color", "scale", "mean", "std", "resize", "crop_fraction", "pad_value",
                "pad_pixel", "interpolation", "antialias")


def index_labels(width: int) -> tuple[str, ...]:
    """The labels of a classifier exported or described without any: "0" .. "width-1"."""
    return tuple(str(i) for i in range(width))


def shape_text(shape: Sequence[int | None]) -> str:
    """A shape for messages: ``(N, 3, 224, 224)``, N for a dynamic size."""
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def scaled_pixel_range(scale: float) -> tuple[float, float]:
    """The range of ``pixels * scale`` for uint8 pixels (a negative scale flips it)."""
    lo, hi = 0.0, 255.0 * scale
    return (min(lo, hi), max(lo, hi))


IMAGE_DTYPES = ("float32", "float16")
# Largest finite float32 (np.finfo(np.float32).max): the native pass computes in float32.
_FLOAT32_MAX = 3.4028234663852886e38
_DTYPE_MAX = {"float32": _FLOAT32_MAX, "float16": 65504.0}


def is_number(value: object) -> bool:
    """A real number (int, float, NumPy scalar), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def channel_values(value: Any, what: str = "value") -> tuple[float, ...]:
    """One number, or one per channel, as a tuple of floats: ``0.5`` -> ``(0.5,)``.

    The one rule for "a number or a per-channel sequence" (mean, std): the Python API,
    the spec JSON and the CLI take either.
    """
    if is_number(value):
        return (float(value),)  # type: ignore[arg-type]
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise SpecError(f"{what} must be a number or a sequence of numbers, got {value!r}")
    values = list(value)
    if not values or not all(is_number(v) for v in values):
        raise SpecError(f"{what} must be a number or a non-empty sequence of numbers, got "
                        f"{value!r}")
    return tuple(float(v) for v in values)


def normalization_problem(scale: object, mean: Sequence[object], std: Sequence[object],
                          dtype: str = "float32") -> str | None:
    """Why ``(pixels * scale - mean[c]) / std[c]`` would not be finite numbers in ``dtype``
    for some uint8 pixel, or None when it always is.

    The one rule for normalization parameters: the spec, :class:`PreprocessSpec` and the
    CLI all refuse what it names (``std: [1e-45]`` would turn every pixel into inf or NaN).
    """
    for what, values in (("scale", (scale,)), ("mean", mean), ("std", std)):
        bad = [v for v in values if not is_number(v) or not math.isfinite(float(v))]
        if bad:
            return f"{what} must be finite numbers, got {list(values)}"
    limit = _DTYPE_MAX.get(dtype, _FLOAT32_MAX)
    if 255 * abs(float(scale)) > _FLOAT32_MAX:
        return f"scale {scale} overflows float32 for pixel 255"
    for m in mean:
        for s in std:
            s, m = float(s), float(m)
            # The kernels multiply by 1/std, which must be finite in float32 too.
            if s == 0:
                return f"std values must be non-zero, got {list(std)}"
            if 1 / abs(s) > _FLOAT32_MAX:
                return f"|std| must be at least {1 / _FLOAT32_MAX:.3g}, got {s}"
            worst = max(abs(p * float(scale) - m) for p in (0.0, 255.0)) / abs(s)
            if worst > limit:
                return (f"std {s} with mean {m} and scale {float(scale):g} maps pixels to "
                        f"{worst:.3g}, beyond the largest {dtype} ({limit:.4g}); |std| is "
                        "too small")
    return None


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    kind: str = "image"  # one of INPUT_KINDS
    layout: str = "NHWC"
    color: str | None = "GRAY"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    vocab_size: int | None = None  # tokens: valid ids are 0 .. vocab_size - 1
    resize: str = "stretch"  # one of RESIZE_MODES
    crop_fraction: float = 1.0  # center-crop: the crop's share of the resized shorter side
    pad_value: float | None = None  # letterbox/pad-end border in model-input units, or
    pad_pixel: float | None = None  # ... as a pixel value 0..255, normalized like pixels
    interpolation: str = "bilinear"  # one of INTERPOLATIONS
    antialias: bool = False  # filter when downscaling, as Pillow and torchvision do
    # The axis that holds the items of a batch; None: the input takes no batch (one item
    # per call).  dlinfer's own exports batch on axis 0.
    batch_axis: int | None = 0

    def __post_init__(self) -> None:
        # One number or one per channel, as everywhere in the Python API: (0.5,) for 0.5.
        for key in ("mean", "std"):
            value = getattr(self, key)
            if is_number(value) or isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, key, tuple(np.atleast_1d(value).tolist()))

    @property
    def channels(self) -> int | None:
        if self.kind != "image":
            return None
        return self.shape[-1] if self.layout == "NHWC" else self.shape[1]

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of an image input."""
        if self.kind != "image":
            return None
        h, w = (self.shape[1], self.shape[2]) if self.layout == "NHWC" else self.shape[2:4]
        return (h, w) if h is not None and w is not None else None

    @property
    def value_range(self) -> tuple[float, float]:
        """Range of ``pixels * scale``: what a float image must lie in."""
        return scaled_pixel_range(self.scale)

    def validate(self) -> None:
        """Raise :class:`SpecError` naming what is inconsistent in this input."""
        where = f"input {self.name!r}"
        if self.kind not in INPUT_KINDS:
            raise SpecError(f"{where}: kind must be one of {INPUT_KINDS}, got {self.kind!r}")
        if not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0)
                   for d in self.shape):
            raise SpecError(f"{where}: shape must hold positive integers or null (a dynamic "
                            f"size), got {list(self.shape)}")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise SpecError(f"{where}: vocab_size must be >= 1, got {self.vocab_size}")
        if self.batch_axis is not None and not (
                isinstance(self.batch_axis, int) and not isinstance(self.batch_axis, bool)
                and 0 <= self.batch_axis < max(len(self.shape), 1)):
            raise SpecError(f"{where}: batch_axis must be null or an axis of shape "
                            f"{list(self.shape)}, got {self.batch_axis!r}")
        if self.kind != "image":
            return
        if self.layout not in ("NHWC", "NCHW"):
            raise SpecError(f"{where}: an image layout must be NHWC or NCHW, got {self.layout!r}")
        if len(self.shape) != 4:
            raise SpecError(f"{where}: an image shape must have rank 4, got {list(self.shape)}")
        if self.color not in COLORS:
            raise SpecError(f"{where}: color must be one of {COLORS}, got {self.color!r}")
        channels = self.channels
        if channels not in (1, 3):
            raise SpecError(f"{where}: an image must have 1 or 3 channels, got {channels}")
        if (self.color == "GRAY") != (channels == 1):
            raise SpecError(f"{where}: color {self.color} does not fit {channels} channel(s)")
        if self.dtype not in IMAGE_DTYPES:
            raise SpecError(f"{where}: an image input's dtype must be one of {IMAGE_DTYPES}, "
                            f"got {self.dtype!r}")
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise SpecError(f"{where}: {what} needs 1 or {channels} values, got {len(values)}")
        problem = normalization_problem(self.scale, self.mean, self.std, self.dtype)
        if problem is not None:
            raise SpecError(f"{where}: {problem}")
        if self.scale == 0:  # every image would look the same to the model
            raise SpecError(f"{where}: scale must be non-zero, got 0")
        self._validate_resize(where)

    def _validate_resize(self, where: str) -> None:
        for what, value, allowed in (("resize", self.resize, RESIZE_MODES),
                                     ("interpolation", self.interpolation, INTERPOLATIONS)):
            if value not in allowed:
                raise SpecError(f"{where}: {what} must be one of {allowed}, got {value!r}")
        if not isinstance(self.antialias, bool):
            raise SpecError(f"{where}: antialias must be true or false, got {self.antialias!r}")
        if not (is_number(self.crop_fraction) and 0 < float(self.crop_fraction) <= 1):
            raise SpecError(f"{where}: crop_fraction must be a number in (0, 1], got "
                            f"{self.crop_fraction!r}")
        if self.crop_fraction != 1 and self.resize != "center-crop":
            raise SpecError(f"{where}: crop_fraction applies to resize center-crop, not "
                            f"{self.resize}")
        if self.pad_value is not None and self.pad_pixel is not None:
            raise SpecError(f"{where}: give the pad as pad_value (model-input units) or "
                            "pad_pixel (0..255), not both")
        if self.pad_value is not None and not (is_number(self.pad_value)
                                               and math.isfinite(float(self.pad_value))):
            raise SpecError(f"{where}: pad_value must be a finite number, got "
                            f"{self.pad_value!r}")
        if self.pad_pixel is not None and not (is_number(self.pad_pixel)
                                               and 0 <= float(self.pad_pixel) <= 255):
            raise SpecError(f"{where}: pad_pixel is a pixel value in [0, 255], got "
                            f"{self.pad_pixel!r}")
        padded = self.pad_value is not None or self.pad_pixel is not None
        if padded and self.resize not in ("letterbox", "pad-end"):
            raise SpecError(f"{where}: a pad applies to resize letterbox or pad-end, not "
                            f"{self.resize}")


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str = "probabilities"  # one of OUTPUT_KINDS
    labels: tuple[str, ...] = ()  # a classification head's class names, in output order
    threshold: float | None = None  # a single sigmoid unit: P(labels[1]) >= threshold

    def validate(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise SpecError(f"output {self.name!r}: kind must be one of {OUTPUT_KINDS}, "
                            f"got {self.kind!r}")
        if not all(isinstance(label, str) for label in self.labels):
            raise SpecError(f"output {self.name!r}: labels must be strings, got "
                            f"{list(self.labels)[:12]}")
        if len(set(self.labels)) != len(self.labels):
            raise SpecError(f"output {self.name!r}: labels must be unique")
        if self.threshold is not None and not (
                is_number(self.threshold) and 0 <= float(self.threshold) <= 1):
            raise SpecError(f"output {self.name!r}: threshold must be a number in [0, 1] "
                            f"(a probability), got {self.threshold!r}")


@dataclass(frozen=True, init=False)
class ModelSpec:
    """Everything a runtime needs to know about a model.

    Built from ``inputs``/``outputs`` (each a sequence), or, for a one-input,
    one-output model, from ``input``/``output`` with ``labels`` and ``threshold``
    as in version 1 (they become the output's).
    """

    name: str
    task: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    versions: dict[str, Any]
    parity: dict[str, Any]
    extra: dict[str, Any]
    spec_version: int

    def __init__(
        self,
        name: str,
        task: str,
        input: InputSpec | None = None,  # noqa: A002 - the version-1 keyword
        output: OutputSpec | None = None,
        labels: Sequence[str] = (),
        threshold: float | None = None,
        versions: dict[str, Any] | None = None,
        parity: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        spec_version: int = SPEC_VERSION,
        *,
        inputs: Sequence[InputSpec] = (),
        outputs: Sequence[OutputSpec] = (),
    ) -> None:
        if (input is None) == (not inputs):
            raise SpecError("give either input= or inputs= (a non-empty sequence)")
        if (output is None) == (not outputs):
            raise SpecError("give either output= or outputs= (a non-empty sequence)")
        outputs = tuple(outputs) if outputs else (output,)
        if labels or threshold is not None:
            if len(outputs) != 1:
                raise SpecError("labels= and threshold= describe a single output; give each "
                                "output its labels in outputs=")
            first = outputs[0]
            outputs = (replace(first, labels=tuple(labels) or first.labels,
                               threshold=first.threshold if threshold is None else threshold),)
        assign = object.__setattr__  # frozen: set once, here
        assign(self, "name", name)
        assign(self, "task", task)
        assign(self, "inputs", tuple(inputs) if inputs else (input,))
        assign(self, "outputs", tuple(replace(o, labels=tuple(o.labels)) for o in outputs))
        assign(self, "versions", dict(versions or {}))
        assign(self, "parity", dict(parity or {}))
        assign(self, "extra", dict(extra or {}))
        assign(self, "spec_version", spec_version)
        self._validate()

    # ---- the primary input and output, and the version-1 names -----------------------

    @property
    def input(self) -> InputSpec:
        """The primary input: the first image input, else the first input."""
        return next((i for i in self.inputs if i.kind == "image"), self.inputs[0])

    @property
    def output(self) -> OutputSpec:
        """The primary output: the first output with labels, else the first output."""
        return next((o for o in self.outputs if o.labels), self.outputs[0])

    @property
    def labels(self) -> tuple[str, ...]:
        return self.output.labels

    @property
    def threshold(self) -> float | None:
        return self.output.threshold

    def input_named(self, name: str) -> InputSpec:
        return _named(self.inputs, name, "input")

    def output_named(self, name: str) -> OutputSpec:
        return _named(self.outputs, name, "output")

    def _validate(self) -> None:
        if self.task not in TASKS:
            raise SpecError(f"task must be one of {TASKS}, got {self.task!r}")
        for group, items in (("input", self.inputs), ("output", self.outputs)):
            names = [t.name for t in items]
            if len(set(names)) != len(names):
                raise SpecError(f"{group} names must be unique, got {names}")
            for item in items:
                item.validate()
        if self.task == "classification" and not self.labels:
            raise SpecError("a classification spec needs its class labels")
        if self.task == "binary_classification":
            if len(self.labels) != 2:
                raise SpecError("a binary_classification spec needs exactly 2 labels")
            if self.threshold is None:
                raise SpecError("a binary_classification spec needs a threshold")

    # ---- JSON --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The version-3 JSON object: one description per input and output."""
        raw = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        raw["spec_version"] = SPEC_VERSION
        return raw

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def summary(self) -> dict[str, Any]:
        """:meth:`to_dict` plus the primary input, output, labels and threshold at the top
        level: what ``dlinfer info --json`` prints for scripts (never written to a file)."""
        return {**self.to_dict(), "input": _plain(self.input),
                "output": {"name": self.output.name, "kind": self.output.kind},
                "labels": list(self.labels), "threshold": self.threshold}

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Read a spec of any version in :data:`READABLE_VERSIONS`."""
        raw = loads_limited(text, what=METADATA_KEY, error=SpecError)  # depth, size, UTF-8
        if not isinstance(raw, dict):
            raise SpecError(f"{METADATA_KEY} must be a JSON object")
        version = raw.get("spec_version")
        if version not in READABLE_VERSIONS:
            raise SpecError(
                f"spec_version {version!r} is not supported by this dlinfer "
                f"(it reads versions {list(READABLE_VERSIONS)}); upgrade dlinfer or re-export "
                "the model"
            )
        from . import spec_legacy  # versions 1 and 2: read only, never written

        try:
            if version == 1:
                inputs, outputs = spec_legacy.version_1_tensors(raw)
            else:
                inputs, outputs = raw["inputs"], raw["outputs"]
                _check_top_level(raw, version)
            extra = dict(raw.get("extra", {}))
            inputs = [_input_from(dict(i)) for i in inputs]
            if version < 3 and isinstance(extra.get("preprocess"), dict):
                inputs = spec_legacy.with_old_preprocess(inputs, extra.pop("preprocess"))
            spec = cls(
                name=raw["name"],
                task=raw["task"],
                inputs=inputs,
                outputs=[_output_from(dict(o)) for o in outputs],
                versions=dict(raw.get("versions", {})),
                parity=dict(raw.get("parity", {})),
                extra=extra,
                spec_version=SPEC_VERSION,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"{METADATA_KEY} is malformed: {exc!r}") from exc
        if version == 2:
            spec_legacy.check_views(raw, spec)
        return spec


_TOP_LEVEL = {f.name for f in fields(ModelSpec)}
_VIEWS = ("input", "output", "labels", "threshold")


def _check_top_level(raw: dict[str, Any], version: int) -> None:
    """Refuse keys a version-3 reader would ignore: an edit there would change nothing."""
    allowed = _TOP_LEVEL | (set(_VIEWS) if version == 2 else set())
    unknown = sorted(set(raw) - allowed)
    if unknown:
        hint = (" (version 3 keeps the labels, threshold and preprocessing in each of "
                "\"inputs\" and \"outputs\")" if set(unknown) & set(_VIEWS) else "")
        raise SpecError(f"{METADATA_KEY} has unknown top-level key(s) {unknown}{hint}")


def _named(items: Sequence[Any], name: str, what: str) -> Any:
    for item in items:
        if item.name == name:
            return item
    raise SpecError(f"no {what} named {name!r}; the {what}s are {[i.name for i in items]}")


def _input_from(raw: dict[str, Any]) -> InputSpec:
    raw["shape"] = tuple(raw["shape"])
    for key, default in (("mean", 0.0), ("std", 1.0)):
        value = raw.get(key, default)  # one number, or one per channel (validate checks)
        raw[key] = (value,) if is_number(value) else tuple(value)
    return InputSpec(**raw)


def _output_from(raw: dict[str, Any]) -> OutputSpec:
    raw["labels"] = tuple(raw.get("labels", ()))
    return OutputSpec(**raw)


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts, tuples as lists."""
    if isinstance(value, InputSpec) and value.kind != "image":
        # A token or feature input has no image pipeline: its fields stay out of the file.
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)
                if f.name not in IMAGE_FIELDS or getattr(value, f.name) != f.default}
    if isinstance(value, (InputSpec, OutputSpec)):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
