"""What "close enough" means, written once for `dlinfer verify`, export checks and the tests.

Two arrays agree when they have the same shape, the same dtype (where the caller
asks for it), and every element satisfies::

    |actual - expected| <= atol + rtol * |expected|

NumPy's ``allclose`` rule: ``atol`` covers values near zero, ``rtol`` the large
ones.  NaN or infinity in the error is a mismatch, never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_number
from ..errors import InputError

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "Comparison",
    "close",
    "compare",
    "mismatch",
]

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4


def _tolerance(value: Any, name: str) -> Any:
    """A tolerance (a number, or an array of them per element), finite and >= 0: a NaN
    one would fail every comparison, a negative one pass nothing."""
    if np.ndim(value) == 0:
        return check_number(value, name, min=0)
    arr = np.asarray(value, np.float64)
    if not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise InputError(f"{name} must be finite and >= 0 for every element")
    return arr


def _errors(actual: np.ndarray, expected: np.ndarray, atol: float,
            rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """Absolute errors and the tolerance of each element, in float64."""
    atol, rtol = _tolerance(atol, "atol"), _tolerance(rtol, "rtol")
    e = np.asarray(expected, np.float64)
    err = np.abs(np.asarray(actual, np.float64) - e)
    return err, atol + rtol * np.abs(e)


def close(actual: np.ndarray, expected: np.ndarray, atol: float = DEFAULT_ATOL,
          rtol: float = DEFAULT_RTOL) -> bool:
    """True when the shapes match and every element is within the tolerance."""
    if np.shape(actual) != np.shape(expected):
        return False
    err, tol = _errors(actual, expected, atol, rtol)
    return bool((err <= tol).all())  # NaN compares False: a mismatch


def mismatch(actual: np.ndarray, expected: np.ndarray, *, atol: float = 0.0, rtol: float = 0.0,
             check_dtype: bool = True, layout: str | None = None) -> str | None:
    """Why ``actual`` does not match ``expected``, or None when it does.

    Checks the shape, then the dtype (unless ``check_dtype`` is False), then the
    values.  The message names how many elements are off and the worst one (the
    largest error beyond its tolerance); with ``layout`` ("NHWC" or "NCHW") and a
    rank-4 array it names the batch, pixel and channel too.  With atol = rtol = 0
    this is exact equality.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return f"shape {actual.shape} != {expected.shape}"
    if check_dtype and actual.dtype != expected.dtype:
        return f"dtype {actual.dtype} != {expected.dtype}"
    err, tol = _errors(actual, expected, atol, rtol)
    bad = ~(err <= tol)
    if not bad.any():
        return None
    # The worst element: NaN first, then the largest excess over its tolerance.
    excess = np.where(np.isnan(err), np.inf, err - tol)
    idx = np.unravel_index(int(np.argmax(np.where(bad, excess, -np.inf))), bad.shape)
    idx = tuple(int(i) for i in idx)
    where = f"index {idx}"
    if layout in ("NHWC", "NCHW") and len(idx) == 4:
        n, a, b, c = idx
        y, x, ch = (a, b, c) if layout == "NHWC" else (b, c, a)
        where = f"batch {n}, pixel (y={y}, x={x}), channel {ch} (index {idx})"
    return (
        f"{int(bad.sum())} of {bad.size} elements differ; worst at {where}: "
        f"got {actual[idx]!r}, expected {expected[idx]!r} (error {err[idx]:.3g}, tolerance "
        f"{tol[idx]:.3g} = {atol:g} + {rtol:g}*|expected|); max error {np.nanmax(err):.3g}"
    )


@dataclass
class Comparison:
    """Error statistics of `actual` against `expected`, and whether they agree."""

    name: str
    max_abs: float
    mean_abs: float
    p99_abs: float
    ok: bool
    argmax_flips: int | None = None  # rows whose argmax differs (classifier outputs)
    rows: int = 0


def compare(
    name: str,
    actual: np.ndarray,
    expected: np.ndarray,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> Comparison:
    """:func:`close` with statistics: max, mean and p99 error, and argmax flips."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise InputError(f"{name}: shapes differ, {a.shape} vs {e.shape}")
    err, tol = _errors(a, e, atol, rtol)
    ok = bool((err <= tol).all())
    flips = None
    if a.ndim == 2 and a.shape[1] > 1:
        flips = int((a.argmax(axis=1) != e.argmax(axis=1)).sum())
    elif a.ndim == 2 and a.shape[1] == 1:  # sigmoid: the 0.5 threshold is the decision
        flips = int(((a[:, 0] > 0.5) != (e[:, 0] > 0.5)).sum())
    return Comparison(
        name,
        float(np.max(err)) if err.size else 0.0,
        float(np.mean(err)) if err.size else 0.0,
        float(np.percentile(err, 99)) if err.size else 0.0,
        ok,
        flips,
        int(a.shape[0]) if a.ndim else 0,
    )
