"""Writing a file whole or not at all, for every writer in dlinfer (no third-party imports,
so the runtime-only install can use it: ``predict --csv``, optimize's report, ``save``)."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Have ``write(tmp)`` write a temporary file, then rename it to ``path``: the file is
    there whole or not at all, and a failure leaves nothing behind.  ``tmp`` keeps the
    extension, since some writers (``np.save``) add theirs to a name without it."""
    path = os.fspath(path)
    root, extension = os.path.splitext(path)
    tmp = f"{root}.{os.getpid()}.tmp{extension}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
