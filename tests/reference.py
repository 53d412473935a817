"""Naive NumPy references for dlinfer's kernels, and one assertion helper.

References compute in float64 with plain loops or the most literal NumPy, so that
they are obviously right; the kernels are checked against them.
"""

from __future__ import annotations

import numpy as np


def normalize_u8_to_f32_nhwc(x: np.ndarray, scale: float, mean, std) -> np.ndarray:
    """(x * scale - mean[c]) / std[c] in float64, rounded once to float32.

    The kernel receives scale/mean/std as float32, so the reference uses the same
    float32 values promoted to float64.
    """
    c = x.shape[-1]
    scale64 = np.float64(np.float32(scale))
    mean64 = np.broadcast_to(np.asarray(mean, np.float32).astype(np.float64), (c,))
    std64 = np.broadcast_to(np.asarray(std, np.float32).astype(np.float64), (c,))
    return ((x.astype(np.float64) * scale64 - mean64) / std64).astype(np.float32)


def assert_close(actual: np.ndarray, expected: np.ndarray, *, atol: float = 0.0,
                 rtol: float = 0.0, context: str = "") -> None:
    """Shape, then dtype, then values within max(atol, rtol*|expected|).

    With atol = rtol = 0 this is exact equality.  A failure names the first bad
    index and how many elements are off.
    """
    prefix = f"{context}: " if context else ""
    assert actual.shape == expected.shape, f"{prefix}shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{prefix}dtype {actual.dtype} != {expected.dtype}"
    exp64 = expected.astype(np.float64)
    err = np.abs(actual.astype(np.float64) - exp64)
    tol = np.maximum(atol, rtol * np.abs(exp64))
    bad = ~(err <= tol)  # NaN counts as bad
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{prefix}{int(bad.sum())} of {bad.size} elements differ; first at index {idx}: "
            f"got {actual[idx]!r}, expected {expected[idx]!r} (tolerance {tol[idx]:.3g}); "
            f"max error {np.nanmax(err):.3g}"
        )
