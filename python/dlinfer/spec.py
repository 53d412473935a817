"""The model spec: what a runtime needs to know about a model, stored inside it.

Training writes the spec as JSON into the ONNX file's ``metadata_props`` under
the key :data:`METADATA_KEY`.  The runtime reads it back, so a user passes an
image and gets an answer without knowing the model's input layout, colour mode
or normalization.

Preprocessing is defined as::

    model_input[..., c] = (pixels[..., c] * scale - mean[c]) / std[c]

where ``pixels`` are uint8.  A float image given to the runtime is taken to be
``pixels * scale`` already, so it must lie in ``value_range``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SpecError

__all__ = ["METADATA_KEY", "SPEC_VERSION", "InputSpec", "ModelSpec", "OutputSpec"]

METADATA_KEY = "dlinfer.spec"
SPEC_VERSION = 1

TASKS = ("classification", "binary_classification", "regression", "generation")
COLORS = ("GRAY", "RGB", "BGR")
LAYOUTS = ("NHWC", "NCHW", "NC", "NTC")


def scaled_pixel_range(scale: float) -> tuple[float, float]:
    """The range of ``pixels * scale`` for uint8 pixels (a negative scale flips it)."""
    lo, hi = 0.0, 255.0 * scale
    return (min(lo, hi), max(lo, hi))


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    kind: str = "image"  # image | tokens | series | latent | features
    layout: str = "NHWC"
    color: str | None = "GRAY"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

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


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str = "probabilities"  # probabilities | value | images


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    input: InputSpec
    output: OutputSpec
    labels: tuple[str, ...] = ()
    threshold: float | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    spec_version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SpecError(f"task must be one of {TASKS}, got {self.task!r}")
        inp = self.input
        if inp.kind == "image":
            if inp.layout not in ("NHWC", "NCHW"):
                raise SpecError(f"image input layout must be NHWC or NCHW, got {inp.layout!r}")
            if len(inp.shape) != 4:
                raise SpecError(f"image input shape must have rank 4, got {list(inp.shape)}")
            if inp.color not in COLORS:
                raise SpecError(f"color must be one of {COLORS}, got {inp.color!r}")
            channels = inp.channels
            if channels not in (1, 3):
                raise SpecError(f"image input must have 1 or 3 channels, got {channels}")
            if (inp.color == "GRAY") != (channels == 1):
                raise SpecError(f"color {inp.color} does not fit {channels} channel(s)")
            for what, values in (("mean", inp.mean), ("std", inp.std)):
                if len(values) not in (1, channels):
                    raise SpecError(f"{what} needs 1 or {channels} values, got {len(values)}")
            if any(s == 0 for s in inp.std):
                raise SpecError("std values must be non-zero")
        if self.task == "classification" and not self.labels:
            raise SpecError("a classification spec needs its class labels")
        if self.task == "binary_classification":
            if len(self.labels) != 2:
                raise SpecError("a binary_classification spec needs exactly 2 labels")
            if self.threshold is None:
                raise SpecError("a binary_classification spec needs a threshold")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{METADATA_KEY} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise SpecError(f"{METADATA_KEY} must be a JSON object")
        version = raw.get("spec_version")
        if version != SPEC_VERSION:
            raise SpecError(
                f"spec_version {version!r} is not supported by this dlinfer "
                f"(it reads version {SPEC_VERSION}); upgrade dlinfer or re-export the model"
            )
        try:
            inp = dict(raw["input"])
            inp["shape"] = tuple(inp["shape"])
            inp["mean"] = tuple(inp.get("mean", (0.0,)))
            inp["std"] = tuple(inp.get("std", (1.0,)))
            return cls(
                name=raw["name"],
                task=raw["task"],
                input=InputSpec(**inp),
                output=OutputSpec(**raw["output"]),
                labels=tuple(raw.get("labels", ())),
                threshold=raw.get("threshold"),
                versions=dict(raw.get("versions", {})),
                parity=dict(raw.get("parity", {})),
                extra=dict(raw.get("extra", {})),
                spec_version=version,
            )
        except (KeyError, TypeError) as exc:
            raise SpecError(f"{METADATA_KEY} is malformed: {exc!r}") from exc
