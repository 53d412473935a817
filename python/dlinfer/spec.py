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

where ``pixels`` are uint8.  A float image given to the runtime is taken to be
``pixels * scale`` already, so it must lie in ``value_range``.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import SpecError
from .json_limits import loads_limited

__all__ = ["METADATA_KEY", "READABLE_VERSIONS", "SPEC_VERSION", "InputSpec", "ModelSpec",
           "OutputSpec"]

METADATA_KEY = "dlinfer.spec"
# Version 2 describes every input and output (version 1: exactly one of each, with the
# labels and threshold at the top level).  Both are read; version 2 is written.
SPEC_VERSION = 2
READABLE_VERSIONS = (1, 2)

TASKS = ("classification", "binary_classification", "regression", "generation")
INPUT_KINDS = ("image", "tokens", "series", "latent", "features")
# probabilities: softmax or sigmoid already applied; logits: a classifier applies softmax
OUTPUT_KINDS = ("probabilities", "logits", "value", "images")
COLORS = ("GRAY", "RGB", "BGR")
LAYOUTS = ("NHWC", "NCHW", "NC", "NTC")


def index_labels(width: int) -> tuple[str, ...]:
    """The labels of a classifier exported or described without any: "0" .. "width-1"."""
    return tuple(str(i) for i in range(width))


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

    def to_json(self) -> str:
        raw = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        # Version 1's keys, as views of the primary input and output, for scripts that
        # read the JSON themselves; from_json ignores them in version 2.
        raw.update(input=_plain(self.input), output={"name": self.output.name,
                                                     "kind": self.output.kind},
                   labels=list(self.labels), threshold=self.threshold)
        return json.dumps(raw, sort_keys=True)

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
        try:
            if version == 1:
                inputs = [raw["input"]]
                output = dict(raw["output"], labels=raw.get("labels", ()),
                              threshold=raw.get("threshold"))
                outputs = [output]
            else:
                inputs, outputs = raw["inputs"], raw["outputs"]
            return cls(
                name=raw["name"],
                task=raw["task"],
                inputs=[_input_from(dict(i)) for i in inputs],
                outputs=[_output_from(dict(o)) for o in outputs],
                versions=dict(raw.get("versions", {})),
                parity=dict(raw.get("parity", {})),
                extra=dict(raw.get("extra", {})),
                spec_version=SPEC_VERSION,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"{METADATA_KEY} is malformed: {exc!r}") from exc


def _named(items: Sequence[Any], name: str, what: str) -> Any:
    for item in items:
        if item.name == name:
            return item
    raise SpecError(f"no {what} named {name!r}; the {what}s are {[i.name for i in items]}")


def _input_from(raw: dict[str, Any]) -> InputSpec:
    raw["shape"] = tuple(raw["shape"])
    raw["mean"] = tuple(raw.get("mean", (0.0,)))
    raw["std"] = tuple(raw.get("std", (1.0,)))
    return InputSpec(**raw)


def _output_from(raw: dict[str, Any]) -> OutputSpec:
    raw["labels"] = tuple(raw.get("labels", ()))
    return OutputSpec(**raw)


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts, tuples as lists."""
    if isinstance(value, (InputSpec, OutputSpec)):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
