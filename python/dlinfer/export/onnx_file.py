"""The dlinfer spec inside an ONNX file: read it, set it, save the file whole.

No TensorFlow here: ``dlinfer spec`` edits files made by any exporter.
"""

from __future__ import annotations

import os
from typing import Any

import onnx

from ..errors import SpecError
from ..files import write_atomic  # (re-exported: its callers import it from here)
from ..json_limits import loads_limited
from ..spec import METADATA_KEY, ModelSpec

__all__ = ["read_spec", "save", "set_spec", "write_atomic"]


def set_spec(proto: onnx.ModelProto, spec: ModelSpec) -> None:
    """Write (or replace) the dlinfer spec in the model's metadata_props."""
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    proto.metadata_props.add(key=METADATA_KEY, value=spec.to_json())


def save(proto: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write ``proto`` to ``path`` whole or not at all (:func:`write_atomic`)."""
    write_atomic(path, lambda tmp: onnx.save(proto, tmp))


def read_spec(path: str) -> dict[str, Any]:
    """The raw dlinfer spec JSON of an exported file, as a dict."""
    proto = onnx.load(path, load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return loads_limited(prop.value, what=METADATA_KEY, error=SpecError)
    raise KeyError(f"{path} has no {METADATA_KEY} metadata")
