"""Argument checks for the Python API: each raises a DlinferError naming the argument.

Numbers reach dlinfer from Python callers, the CLI (``tools/args.py`` converts the text
first) and HTTP; these are the limits they all share, so that a typo cannot ask for
2**40 threads, a 99999999-image batch or a timer that overflows.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

from .errors import InputError, InputShapeError, InputTypeError

__all__ = ["MAX_BATCH", "MAX_THREADS", "MAX_WAIT_MS", "check_allocation", "check_int",
           "check_number", "check_threads", "memory_bytes"]

MAX_THREADS = 4_096
MAX_BATCH = 65_536
#: The longest delay or timeout taken, in ms (one day): a wait must fit a timer, and
#: time.monotonic() + inf (or 1e13 s) overflows threading's.
MAX_WAIT_MS = 86_400_000.0


def _bounds(min: float | None, max: float | None, min_open: bool = False) -> str:
    low = None if min is None else f"{'>' if min_open else '>='} {min:g}"
    high = None if max is None else f"<= {max:g}"
    return " and ".join(b for b in (low, high) if b)


def check_int(value: Any, name: str, *, min: int | None = None, max: int | None = None) -> int:
    """``value`` as an int within [min, max]; bools and strings are refused, not converted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an integer, got {value!r} "
                             f"({type(value).__name__})")
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise InputError(f"{name} must be an integer {_bounds(min, max)}, got {value}")
    return value


def check_number(value: Any, name: str, *, min: float | None = None,
                 max: float | None = None, min_open: bool = False) -> float:
    """``value`` as a finite float within [min, max] (``min_open``: strictly above min)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    below = min is not None and (value <= min if min_open else value < min)
    if below or (max is not None and value > max):
        raise InputError(f"{name} must be a number {_bounds(min, max, min_open)}, got {value}")
    return value


def check_threads(threads: Any, name: str = "threads") -> int | None:
    """``None`` or 0 (every core), or a thread count up to :data:`MAX_THREADS`."""
    return None if threads is None else check_int(threads, name, min=0, max=MAX_THREADS)


def memory_bytes() -> int:
    """This machine's physical memory in bytes (2**40 where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 2**40


def check_allocation(shape: Sequence[int], itemsize: int, what: str) -> tuple[int, ...]:
    """``shape`` if an array of it (``itemsize`` bytes each) fits this machine's memory.

    For arrays whose shape comes from a model file (a graph or spec may say 2**40):
    refused with :class:`InputShapeError` naming ``what`` before NumPy is asked for
    terabytes.  The product is a Python int, so it cannot overflow to a small number.
    """
    shape = tuple(int(d) for d in shape)
    needed = math.prod(shape) * itemsize
    available = memory_bytes()
    if any(d < 0 for d in shape) or needed > available:
        raise InputShapeError(
            f"{what}: an array of shape {shape} needs {_binary_size(needed)}, more than this "
            f"machine's memory ({_binary_size(available)}); the model file asks for that size")
    return shape


def _binary_size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
