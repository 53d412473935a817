"""Reading spec versions 1 and 2, which dlinfer no longer writes, as version 3.

Version 1 holds exactly one input and output, with the labels and threshold at the top
level.  Version 2 is version 3 plus copies ("views") of the primary input and output at
the top level, and keeps the primary input's resize, crop and pad in
``extra["preprocess"]``.  :meth:`dlinfer.spec.ModelSpec.from_json` calls these.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from .errors import SpecError
from .spec import METADATA_KEY, InputSpec, ModelSpec, _input_from, _plain, is_number

__all__ = ["check_views", "version_1_tensors", "with_old_preprocess"]


def version_1_tensors(raw: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The raw input and output lists of a version-1 spec, its labels and threshold moved
    into the output."""
    output = dict(raw["output"], labels=raw.get("labels", ()), threshold=raw.get("threshold"))
    return [raw["input"]], [output]


def check_views(raw: dict[str, Any], spec: ModelSpec) -> None:
    """A version-2 file stores the primary input and output twice; when the copies
    disagree (someone edited one of them) neither can be trusted to be the edit."""
    listed = next((i for i in raw["inputs"] if i.get("name") == spec.input.name), None)
    views = {"labels": list(spec.labels), "threshold": spec.threshold,
             "input": listed and _plain(_input_from(dict(listed)))}
    for key, value in views.items():
        if key not in raw:
            continue
        given = raw[key]
        if key == "input" and isinstance(given, dict):
            given = _plain(_input_from(dict(given)))
        if given != value:
            raise SpecError(
                f"{METADATA_KEY} (version 2) has a top-level {key!r} that differs from the "
                f"one in \"inputs\"/\"outputs\" ({_short(raw[key])} vs {_short(value)}); "
                "version 2 stores the primary input and output twice and reads the lists, so "
                "edit those (or rewrite the spec with `dlinfer spec set`)")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def with_old_preprocess(inputs: list[InputSpec], old: dict[str, Any]) -> list[InputSpec]:
    """A version-2 ``extra["preprocess"]`` (PreprocessSpec's resize, crop and pad, for the
    primary input) as the version-3 fields of that input."""
    primary = next((i for i in inputs if i.kind == "image"), None)
    if primary is None:
        return inputs
    crop = old.get("crop")
    changes: dict[str, Any] = {"interpolation": old.get("resize", primary.interpolation)}
    if crop == "letterbox":
        changes.update(resize="letterbox", pad_pixel=float(old.get("pad", 0.0)))
    elif crop == "center":
        changes.update(resize="center-crop")
    elif is_number(crop):
        changes.update(resize="center-crop", crop_fraction=float(crop))
    return [replace(i, **changes) if i is primary else i for i in inputs]
