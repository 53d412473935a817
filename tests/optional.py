"""Optional packages: a test that needs one is skipped alone, with the reason and the fix.

Use ``@requires("tensorflow")`` (or ``requires_tf``) on a test, never a module-level
``pytest.importorskip``, which would skip the whole file as one silent line.  A fixture
that needs a package calls :func:`need` instead (marks do not apply to fixtures).
"""

from __future__ import annotations

import importlib.util

import pytest

__all__ = ["HAVE_TENSORFLOW", "need", "requires", "requires_tf", "tensorflow"]

# Which extra brings each package: the reason says what to install.
_EXTRA = {
    "tensorflow": "train",
    "keras": "train",
    "tf2onnx": "train",
    "statsmodels": "train",
    "openvino": "openvino",
    "nncf": "nncf",
}


def _reason(missing: list[str]) -> str:
    extras = sorted({_EXTRA.get(name, "test") for name in missing})
    install = " ".join(f"'.[{extra}]'" for extra in extras)
    return f"needs {', '.join(missing)} (pip install {install})"


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def requires(*modules: str) -> pytest.MarkDecorator:
    """A skipif mark: the test runs only where every one of ``modules`` imports."""
    missing = _missing(modules)
    return pytest.mark.skipif(bool(missing), reason=_reason(missing))


def need(*modules: str) -> None:
    """Inside a fixture or test: skip the requesting test unless ``modules`` import."""
    missing = _missing(modules)
    if missing:
        pytest.skip(_reason(missing))


HAVE_TENSORFLOW = not _missing(("tensorflow",))
# The mark for tests that build, train or compare against Keras models.
requires_tf = tensorflow = requires("tensorflow")
