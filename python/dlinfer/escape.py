"""Text from a model file or a folder (labels, names, file names), made safe to show.

A label or file name is whatever its author wrote: ``\\x1b[2J`` clears the terminal it
is printed on, a newline forges a second result line, and a file name that is not
valid UTF-8 reaches Python as lone surrogates (``surrogateescape``) that no UTF-8
stream can encode.  Two rules, one per kind of output:

- :func:`visible`, for text meant for people (one line per result): every character
  that is not printable (control and format characters, line separators) is written
  as a Python escape (``\\n``, ``\\x1b``, ``\\u202e``), and every byte of a file name
  that is not UTF-8 as ``\\xNN``;
- :func:`file_name`, for CSV and JSON, which carry labels and names raw (their own
  quoting keeps rows apart): only the bytes that are not UTF-8 become ``\\xNN``, the
  same notation, so a name reads the same in every format.

Backslashes are left as they are: the escapes make output safe, not reversible.
"""

from __future__ import annotations

__all__ = ["file_name", "visible"]

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if ch in _SHORT:
        return _SHORT[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` on one line with no terminal control in it (see the module's rule)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def file_name(name: str) -> str:
    """A file name for CSV and JSON: raw, except bytes that are not UTF-8, as ``\\xNN``."""
    return "".join(_escape(ch) if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in name)
