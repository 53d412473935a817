"""Old opsets before per-channel int8: upgrade to opset 13, checked, or fall back per tensor.

``DequantizeLinear`` takes an ``axis`` (one scale per output channel) only from opset
13.  Quantizing an opset-11/12 graph per channel (PaddleOCR's detector, recogniser and
classifier) writes a file onnxruntime refuses: ``INVALID_GRAPH ... Unrecognized
attribute: axis for operator DequantizeLinear``.  So such a graph is first upgraded
with onnx's version converter, and the upgrade is kept only when it runs and gives the
original's outputs on a calibration run; otherwise int8 goes per tensor, with a note.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

__all__ = ["PER_CHANNEL_OPSET", "opset_of", "upgrade_for_per_channel"]

PER_CHANNEL_OPSET = 13
# The converter renames nothing and only rewrites ops whose signature changed (Split,
# Squeeze, ReduceSum, ...): outputs must agree to float32 rounding of a reordered sum.
_ATOL, _RTOL = 1e-5, 1e-4


def opset_of(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _run(path: str, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feed))


def upgrade_for_per_channel(src: str, workdir: str, feed: Mapping[str, np.ndarray],
                            settings: dict[str, Any]) -> str:
    """``src``, or an opset-13 copy of it, fit for per-channel QDQ; else per tensor.

    ``feed``: one run of calibration inputs the check runs both graphs on.  Records what
    was done in ``settings`` (``opset``, and ``per_channel`` False with ``notes`` when
    the upgrade failed).
    """
    proto = onnx.load(src)
    old = opset_of(proto)
    if not settings.get("per_channel") or old >= PER_CHANNEL_OPSET:
        return src
    try:
        upgraded = onnx.version_converter.convert_version(proto, PER_CHANNEL_OPSET)
        dst = os.path.join(workdir, f"opset{PER_CHANNEL_OPSET}.onnx")
        onnx.save(upgraded, dst)
        for a, b in zip(_run(src, feed), _run(dst, feed), strict=True):
            if a.shape != b.shape or not np.allclose(b, a, atol=_ATOL, rtol=_RTOL,
                                                     equal_nan=True):
                raise ValueError("the upgraded graph's outputs differ from the original's")
    except Exception as exc:  # noqa: BLE001 - the converter raises whatever its rewrite hits
        settings["per_channel"] = False
        settings.setdefault("notes", []).append(
            f"opset {old} has no per-channel DequantizeLinear and the upgrade to opset "
            f"{PER_CHANNEL_OPSET} failed ({type(exc).__name__}: {exc}): int8 per tensor")
        return src
    settings["opset"] = f"{old} -> {PER_CHANNEL_OPSET}"
    settings.setdefault("notes", []).append(
        f"opset {old} upgraded to {PER_CHANNEL_OPSET} for per-channel int8 (DequantizeLinear "
        "takes an axis only from opset 13); the upgraded graph gave the original's outputs")
    return dst
