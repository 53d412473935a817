"""The model the hardening tests feed bad input to: 28x28 GRAY -> 10 softmax, seeded
random weights, and its spec as raw JSON that a test may edit into what ModelSpec itself
would refuse to build (tests/test_hardening.py, tests/test_hardening_images.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
from dlinfer.spec import METADATA_KEY
from onnx_models import Dense, build_mlp, digit_spec

SEED = 19


def digits_proto() -> onnx.ModelProto:
    """A 28x28 GRAY -> 10 softmax model with seeded random weights: fast, no MNIST."""
    rng = np.random.default_rng(SEED)
    layer = Dense(rng.normal(0, 0.05, (784, 10)).astype(np.float32),
                  np.zeros(10, np.float32), "softmax")
    return build_mlp("digits", (None, 28, 28, 1), "probabilities", [layer])


def with_raw_spec(folder, name: str, change, proto: onnx.ModelProto | None = None) -> str:
    """The digits model with its spec JSON edited by ``change(raw)``: a spec written by
    hand or another tool, which ModelSpec itself would refuse to build."""
    raw = json.loads(digit_spec("digits", {}, {}).to_json())
    change(raw)
    proto = proto or digits_proto()
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(raw))
    path = os.path.join(folder, f"{name}.onnx")
    onnx.save(proto, path)
    return path
