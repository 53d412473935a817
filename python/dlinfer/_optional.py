"""Optional dependencies: imported when a feature needs them, with the install line if missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["import_optional"]


def import_optional(module: str, extra: str, feature: str) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` naming ``feature`` and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs a package that is not installed ({exc}); install it with: "
            f"pip install 'dlinfer[{extra}]'"
        ) from exc
