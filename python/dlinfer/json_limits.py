"""JSON from an untrusted source (a model file's metadata, a request header), parsed
within a size and a nesting-depth limit.

Python's ``json`` recurses once per nesting level, so ``[[[[...]]]]`` 100,000 deep
ends in ``RecursionError`` (or, with a raised recursion limit, a crash) instead of an
error that names the problem.  :func:`loads_limited` measures the depth first, outside
strings, in one linear pass, and turns every decoding problem (bad UTF-8, bad JSON,
too big, too deep) into the caller's error class with a message naming ``what``.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "json_depth", "loads_limited"]

# A spec with 21,000 ImageNet labels is about 0.5 MB; 16 MiB leaves room for any real
# one while refusing a file that would make every `dlinfer info` parse hundreds of MB.
MAX_JSON_BYTES = 16 * 2**20
# A spec nests about 5 deep (parity -> output -> figures); 64 is far above any real
# document and far below the interpreter's recursion limit (1,000).
MAX_JSON_DEPTH = 64

# A JSON string with its escapes: brackets inside one do not nest anything.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = str.maketrans({"[": "+", "{": "+", "]": "-", "}": "-"})


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (0 for a scalar)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_STEP)
    return max(accumulate(1 if c == "+" else -1 for c in brackets), default=0)


def loads_limited(
    data: str | bytes,
    *,
    what: str,
    error: type[Exception],
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """``json.loads(data)``, refusing with ``error`` (message naming ``what``) anything
    over ``max_bytes`` or nested deeper than ``max_depth``, bytes that are not UTF-8,
    and text that is not JSON."""
    import json

    size = len(data)
    if size > max_bytes:
        raise error(f"{what} is {size:,} bytes, over the limit of {max_bytes:,}")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(data)
    if depth > max_depth:
        raise error(f"{what} nests {depth:,} levels deep, over the limit of {max_depth}")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise error(f"{what} is not valid JSON: {exc}") from None
