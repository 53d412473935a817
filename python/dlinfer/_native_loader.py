"""Import the compiled extension with an error that says how to build it."""

from __future__ import annotations

try:
    from . import _native as native
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "dlinfer's compiled extension dlinfer._native could not be imported "
        f"({exc}). Build and install the package with `pip install .` from the "
        "repository root (needs a C++17 compiler and CMake), or run `make test`, "
        "which sets up .venv. Importing dlinfer from the source tree without "
        "installing it does not work."
    ) from exc

__all__ = ["native"]
