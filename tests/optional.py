"""Optional packages: a test that needs one is skipped alone, with the reason and the fix.

Use ``@requires("tensorflow")`` (or ``requires_tf``) on a test, never a module-level
``pytest.importorskip``, which would skip the whole file as one silent line.  A fixture
that needs a package calls :func:`need` instead (marks do not apply to fixtures).

The suite also runs with ``DLINFER_BACKEND=openvino`` (``make test-runtime-openvino``),
where every Model made without ``backend=`` runs on OpenVINO.  A test about a feature
only onnxruntime has (IO binding's internals, CUDA, session options, keep_on_device)
carries ``@onnxruntime_only("what")`` and skips there by name; a test that merely
compares with onnxruntime names ``backend="onnxruntime"`` instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import pytest

__all__ = ["HAVE_TENSORFLOW", "cpu_providers", "default_backend", "missing_reason", "need",
           "onnxruntime_only", "requires", "requires_tf", "tensorflow"]

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


def missing_reason(*modules: str) -> str | None:
    """Why a test needing ``modules`` cannot run here (what to install), or None."""
    missing = _missing(modules)
    return _reason(missing) if missing else None


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


@functools.cache
def default_backend() -> str:
    """The backend of a Model made without ``backend=`` in this run: ``$DLINFER_BACKEND``
    as dlinfer reads it (``auto`` stays ``auto``), else onnxruntime."""
    from dlinfer.runtime.backends import parse_backend
    from dlinfer.runtime.backends.choice import ENV

    return parse_backend(os.environ.get(ENV) or "onnxruntime")


def onnxruntime_only(feature: str) -> pytest.MarkDecorator:
    """A skipif mark for a test of ``feature``, which only onnxruntime has: it runs where
    Model's default backend is onnxruntime and skips by name elsewhere."""
    backend = default_backend()
    return pytest.mark.skipif(
        backend != "onnxruntime",
        reason=f"onnxruntime-only: {feature} (Model's default here is {backend}: $DLINFER_BACKEND)")


def cpu_providers(backend: str | None = None) -> list[str]:
    """``Model.providers`` of a float32 file on CPU: onnxruntime's provider list, or
    OpenVINO's CPU plugin with the precision it runs (f32 unless the file was gated)."""
    backend = backend or default_backend()
    return {"onnxruntime": ["CPUExecutionProvider"], "openvino": ["OpenVINO(f32)"]}[backend]
