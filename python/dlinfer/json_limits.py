"""JSON from an untrusted source (a model file's metadata, a request header), parsed
within a size and a nesting-depth limit.

Python's ``json`` recurses once per nesting level, so ``[[[[...]]]]`` 100,000 deep
ends in ``RecursionError`` (or, with a raised recursion limit, a crash) instead of an
error that names the problem.  :func:`loads_limited` parses at C speed, catches the
recursion, checks the depth of what it parsed, and turns every decoding problem (bad
UTF-8, bad JSON, too big, too deep) into the caller's error class with a message naming
``what`` (and, for one too deep, its depth, from :func:`json_depth`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "json_depth", "loads_limited"]

# A spec with 21,000 ImageNet labels is about 0.5 MB; 16 MiB leaves room for any real
# one while refusing a file that would make every `dlinfer info` parse hundreds of MB.
MAX_JSON_BYTES = 16 * 2**20
# A spec nests about 5 deep (parity -> output -> figures); 64 is far above any real
# document and far below the interpreter's recursion limit (1,000), so a document the
# parser recursed too deep on is always over it.
MAX_JSON_DEPTH = 64

# Per byte: +1 opens an array or object, -1 closes one.
_STEPS = np.zeros(256, np.int8)
_STEPS[list(b"[{")] = 1
_STEPS[list(b"]}")] = -1
_QUOTE = ord('"')


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
    size = len(data)
    if size > max_bytes:
        raise error(f"{what} is {size:,} bytes, over the limit of {max_bytes:,}")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(data)
        too_deep = _deeper_than(value, max_depth)
    except RecursionError:
        too_deep = True
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise error(f"{what} is not valid JSON: {exc}") from None
    if too_deep:
        raise error(f"{what} nests {json_depth(data):,} levels deep, over the limit of "
                    f"{max_depth}")
    return value


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests lists and dicts deeper than ``max_depth``, without recursing
    (one pass over the containers, cheaper than the parse that made them)."""
    if not isinstance(value, (list, dict)):
        return False
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item
        nested = [c for c in children if isinstance(c, (list, dict))]
        if nested and depth == max_depth:
            return True
        todo.extend((c, depth + 1) for c in nested)
    return max_depth < 1


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (0 for a scalar), in
    C-speed passes (replace, a table lookup, cumulative sums), never a loop per byte:
    about 1 s for 16 MiB of brackets."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if b"\\" in raw:  # escaped backslashes first, then escaped quotes: no quote is escaped
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    codes = np.frombuffer(raw, np.uint8)
    steps = _STEPS[codes]
    # Inside a string (after an odd number of quotes) brackets nest nothing; an int8
    # count wraps, but its parity is exact.
    steps[(np.cumsum(codes == _QUOTE, dtype=np.int8) & 1).astype(bool)] = 0
    steps = steps[steps != 0]
    return max(int(np.cumsum(steps, dtype=np.int64).max()), 0) if steps.size else 0
