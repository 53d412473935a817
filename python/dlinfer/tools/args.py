"""Typed argparse converters: every CLI flag that takes a value validates it at parse time.

Each converter turns the text into the value the command uses, or raises
``argparse.ArgumentTypeError``, which argparse prints as ``dlinfer CMD: error: argument
--flag: ...`` with exit status 2, before anything is loaded.  Use them as ``type=``::

    p.add_argument("--top-k", type=positive_int, default=1)
    p.add_argument("--timeout-ms", type=finite_float(min=0, max=MAX_WAIT_MS), default=10_000.0)

Converters carry the attribute ``validates = True``; tests/test_hardening.py walks the whole
parser and fails on a flag taking a value with neither a converter from here nor ``choices=``,
unless its reason is written down there.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
from collections.abc import Callable
from typing import Any, TypeVar

from ..checks import MAX_BATCH, MAX_THREADS, MAX_WAIT_MS
from ..runtime.providers import parse_device

__all__ = [
    "HOUR_S",
    "MAX_BATCH",
    "MAX_BODY_BYTES",
    "MAX_DELAY_MS",
    "MAX_ITERS",
    "MAX_QUEUE",
    "MAX_SAMPLES",
    "MAX_THREADS",
    "MAX_WAIT_MS",
    "MAX_WORKERS",
    "MIN_BODY_BYTES",
    "batch_sizes",
    "device",
    "devices",
    "existing_file",
    "existing_path",
    "finite_float",
    "image_size",
    "input_shape",
    "int_range",
    "is_validating",
    "non_negative_int",
    "number",
    "numbers",
    "output_file",
    "port",
    "positive_float",
    "add_preprocess_flags",
    "preprocess_changes",
    "positive_int",
    "threads",
    "validating",
]

# Upper bounds no real use reaches, so that a typo fails at parse time instead of
# overflowing a timer (--max-delay-ms 1e13), allocating a terabyte or binding port 4464.
HOUR_S = 3_600.0
MAX_DELAY_MS = 60_000.0
MAX_QUEUE = 1_000_000
MAX_WORKERS = 256
MAX_ITERS = 10_000_000
MAX_SAMPLES = 1_000_000
# A request body smaller than 1 KiB holds no real image: --max-body-bytes 0 would refuse all.
MIN_BODY_BYTES = 1_024
MAX_BODY_BYTES = 2**32

T = TypeVar("T")


def validating(fn: Callable[[str], T], name: str) -> Callable[[str], T]:
    """Mark ``fn`` as a validating converter; ``name`` is what argparse calls the type."""
    fn.validates = True  # type: ignore[attr-defined]
    fn.__name__ = name
    return fn


def is_validating(converter: Any) -> bool:
    """True for a converter made here (what the parser walk in the tests accepts)."""
    return bool(getattr(converter, "validates", False))


def _bounds(min: float | None, max: float | None, min_open: bool = False) -> str:
    low = None if min is None else f"{'>' if min_open else '>='} {min:g}"
    high = None if max is None else f"<= {max:g}"
    return " and ".join(b for b in (low, high) if b)


def int_range(min: int | None = None, max: int | None = None) -> Callable[[str], int]:
    """An integer within [min, max] (either bound optional)."""

    def convert(text: str) -> int:
        try:
            value = int(str(text).strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if (min is not None and value < min) or (max is not None and value > max):
            raise argparse.ArgumentTypeError(
                f"must be an integer {_bounds(min, max)}, got {text!r}")
        return value

    return validating(convert, "integer")


def finite_float(min: float | None = None, max: float | None = None, *,
                 min_open: bool = False) -> Callable[[str], float]:
    """A finite number (no nan, no inf) within [min, max]; ``min_open``: strictly above min."""

    def convert(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        below = min is not None and (value <= min if min_open else value < min)
        if below or (max is not None and value > max):
            raise argparse.ArgumentTypeError(
                f"must be a number {_bounds(min, max, min_open)}, got {text!r}")
        return value

    return validating(convert, "number")


def positive_float(max: float | None = None) -> Callable[[str], float]:
    """A finite number > 0 (and <= max)."""
    return finite_float(0.0, max, min_open=True)


positive_int = int_range(1)
non_negative_int = int_range(0)
#: ``--threads``: onnxruntime intra-op threads; 0 means every core (as ``threads=None``).
threads = int_range(0, MAX_THREADS)
port = int_range(1, 65_535)


def _device(text: str) -> str:
    try:
        parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return str(text).strip()


def _devices(text: str) -> str:
    names = [d.strip() for d in str(text).split(",") if d.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one device, got {text!r}")
    return ",".join(_device(d) for d in names)


#: A device name from the known list: cpu, cuda, cuda:N, tensorrt, tensorrt:N, auto.
device = validating(_device, "device")
#: Comma-separated device names (``bench --device cpu,cuda``).
devices = validating(_devices, "devices")


def batch_sizes(max: int = MAX_BATCH) -> Callable[[str], list[int]]:
    """Comma-separated integers, each in [1, max]: ``"1,8,32"`` -> ``[1, 8, 32]``."""
    one = int_range(1, max)

    def convert(text: str) -> list[int]:
        parts = [v for v in str(text).split(",") if v.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}")
        try:
            return [one(v) for v in parts]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"must be comma-separated integers between 1 and {max}, got {text!r}") from None

    return validating(convert, "batch sizes")


def _existing_file(text: str) -> str:
    # A regular file only: a FIFO or a device would block the first read forever.
    try:
        mode = os.stat(text).st_mode
    except OSError:
        raise argparse.ArgumentTypeError(f"no such file: {text!r}") from None
    if not stat.S_ISREG(mode):
        raise argparse.ArgumentTypeError(f"not a regular file: {text!r}")
    return text


def _existing_path(text: str) -> str:
    try:
        mode = os.stat(text).st_mode
    except OSError:
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise argparse.ArgumentTypeError(f"not a regular file or folder: {text!r}")
    return text


def _output_file(text: str) -> str:
    if not text or os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"must be a file path to write, got {text!r}")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"folder does not exist: {parent!r}")
    return text


#: An input file that exists and is a regular file.
existing_file = validating(_existing_file, "file")
#: An input that exists: a regular file or a folder.
existing_path = validating(_existing_path, "path")
#: A file to write: not a folder, in a folder that exists.
output_file = validating(_output_file, "output file")


def _number(text: str) -> float:
    """A finite number, or a fraction like 1/255 (a pixel scale)."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(_number(t.strip()) for t in str(text).split(","))


def _image_size(text: str) -> tuple[int, int]:
    parts = str(text).lower().replace("x", ",").split(",")
    side = int_range(1, 65_536)
    try:
        size = tuple(side(p) for p in parts)
    except argparse.ArgumentTypeError:
        size = ()
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2:
        raise argparse.ArgumentTypeError(
            f"--size takes 224 or HxW with sizes from 1 to 65536, got {text!r}")
    return size  # type: ignore[return-value]


def _input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    name, _, shape = str(text).rpartition("=")
    side = int_range(1, 65_536)
    try:
        dims = tuple(side(d) for d in shape.lower().split("x"))
    except argparse.ArgumentTypeError:
        dims = ()
    if not dims or (_ and not name):
        raise argparse.ArgumentTypeError(
            f"takes [NAME=]SHAPE such as images=1x3x320x320, each size from 1 to 65536, "
            f"got {text!r}")
    return name or None, dims


#: A finite number, or a fraction such as ``1/255``.
number = validating(_number, "number")
#: Comma-separated finite numbers or fractions: ``0.485,0.456,0.406``.
numbers = validating(_numbers, "numbers")
#: ``224`` (a square) or ``HxW``, each side 1..65536: ``(height, width)``.
image_size = validating(_image_size, "size")
#: ``[NAME=]SHAPE``, e.g. ``images=1x3x320x320``: ``(name or None, (1, 3, 320, 320))``.
input_shape = validating(_input_shape, "input shape")


# ---- the preprocessing flag group: `dlinfer spec set` and `dlinfer export` -------------

#: The flags of :func:`add_preprocess_flags` and the InputSpec field each one sets.
PREPROCESS_FLAGS = ("mean", "std", "scale", "color", "size", "resize", "crop_fraction",
                    "pad_value", "pad_pixel", "interpolation", "antialias")


def add_preprocess_flags(parser: Any, extra_presets: tuple[str, ...] = (),
                         scale_help: str = "default 1/255") -> Any:
    """Add the image preprocessing flags as one argument group of ``parser``.

    ``--preprocess PRESET`` sets a named convention's fields (dlinfer.preprocessing.presets);
    each other flag sets one field, after the preset.  ``extra_presets`` adds choices that
    are not presets (export's ``auto``).  :func:`preprocess_changes` reads them back.
    """
    from ..preprocessing.presets import PRESET_NAMES
    from ..spec import INTERPOLATIONS, RESIZE_MODES

    group = parser.add_argument_group(
        "image preprocessing: model_input = (pixels * scale - mean) / std, after the resize")
    group.add_argument("--preprocess", metavar="PRESET",
                       choices=(*PRESET_NAMES, *extra_presets),
                       help=f"a named convention: {', '.join((*PRESET_NAMES, *extra_presets))};"
                       " the flags below change single fields after it")
    group.add_argument("--mean", metavar="M|M1,M2,M3", type=numbers)
    group.add_argument("--std", metavar="S|S1,S2,S3", type=numbers)
    group.add_argument("--scale", metavar="X", type=number, help=scale_help)
    group.add_argument("--color", choices=("RGB", "BGR", "GRAY"))
    group.add_argument("--size", metavar="224|HxW", type=image_size,
                       help="fills a dynamic height and width")
    group.add_argument("--resize", choices=RESIZE_MODES,
                       help="how an image of any size becomes the input size (default "
                       "stretch)")
    group.add_argument("--crop-fraction", metavar="F", type=finite_float(0, 1, min_open=True),
                       help="center-crop: the crop's share of the resized shorter side "
                       "(0.875: 256 -> 224)")
    group.add_argument("--pad-value", metavar="V", type=number,
                       help="letterbox/pad-end border in model-input units (after "
                       "normalization)")
    group.add_argument("--pad-pixel", metavar="P", type=finite_float(0, 255),
                       help="letterbox/pad-end border as a pixel value 0..255")
    group.add_argument("--interpolation", choices=INTERPOLATIONS, help="default bilinear")
    group.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=None,
                       help="filter when downscaling, as Pillow and torchvision do")
    return group


def preprocess_changes(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """The preset and the fields the flags of :func:`add_preprocess_flags` set (only those
    given), ready for ``presets.apply_preprocess(spec, preset, **changes)``."""
    changes = {k: getattr(args, k, None) for k in PREPROCESS_FLAGS}
    return getattr(args, "preprocess", None), {k: v for k, v in changes.items()
                                               if v is not None}
