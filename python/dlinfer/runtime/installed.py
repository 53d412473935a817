"""Which onnxruntime build is installed, and whether two builds overwrote each other.

onnxruntime ships as several pip distributions (``onnxruntime``, ``onnxruntime-gpu``,
...) that all install the same ``onnxruntime/`` folder.  pip treats them as unrelated,
so installing a package that depends on ``onnxruntime`` beside one that depends on
``onnxruntime-gpu`` installs both: the second overwrites the first's files (a GPU build
silently becomes a CPU one), and uninstalling either deletes files the other needs.
dlinfer therefore depends on no build by itself: the extras ``dlinfer[cpu]`` and
``dlinfer[gpu]`` choose one (docs/install.md), and this module names a clobbered
install for ``dlinfer doctor`` and for the error ``import dlinfer`` raises when
onnxruntime cannot be imported at all.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

__all__ = ["RUNTIME_DISTRIBUTIONS", "check_importable", "onnxruntime_install"]

# The pip distributions that install the top-level ``onnxruntime`` package.
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                         "onnxruntime-directml", "onnxruntime-qnn", "onnxruntime-training")

_INSTALL = ("pip install 'dlinfer[cpu]' (onnxruntime, the build other packages depend on) "
            "or 'dlinfer[gpu]' (onnxruntime-gpu, for CUDA)")


def _distributions() -> dict[str, str]:
    found = {}
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _live_package() -> tuple[str | None, str | None]:
    """(distribution, version) whose files are in ``onnxruntime/`` now, as they say."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except Exception:  # noqa: BLE001 - missing or half-deleted files
        return None, None
    return getattr(info, "package_name", None), getattr(info, "__version__", None)


def onnxruntime_install() -> dict[str, Any]:
    """``{"distributions", "live", "live_version", "clobbered", "problem", "fix"}``.

    ``clobbered``: more than one onnxruntime distribution is installed; ``live`` is the
    one whose files are in place (the last installed).  ``problem`` and ``fix`` are
    sentences for the user, or None.
    """
    dists = _distributions()
    live, live_version = _live_package()
    out: dict[str, Any] = {"distributions": dists, "live": live, "live_version": live_version,
                           "clobbered": len(dists) > 1, "problem": None, "fix": None}
    if len(dists) > 1:
        others = sorted(set(dists) - {live})
        keep = "onnxruntime-gpu" if "onnxruntime-gpu" in dists else (live or "onnxruntime")
        out["problem"] = (
            f"{len(dists)} onnxruntime builds are installed over each other "
            f"({', '.join(f'{n} {v}' for n, v in dists.items())}): they share the "
            f"onnxruntime/ folder, whose files are now {live or 'unreadable'}'s"
            + (f", and uninstalling {' or '.join(others)} would delete them" if others else ""))
        out["fix"] = (f"pip uninstall -y {' '.join(dists)} && pip install "
                      f"'{keep}=={dists.get(keep, live_version or '')}' "
                      "(one build; docs/install.md)")
    elif not dists and live is None:
        out["problem"] = "no onnxruntime is installed"
        out["fix"] = _INSTALL
    elif live is None:
        name = next(iter(dists))
        out["problem"] = (f"{name} {dists[name]} is installed but its files are missing or "
                          "broken (another onnxruntime build was uninstalled over it?)")
        out["fix"] = f"pip install --force-reinstall --no-deps '{name}=={dists[name]}'"
    return out


def check_importable() -> None:
    """Raise :class:`~dlinfer.MissingExtraError` with the fix unless onnxruntime imports."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        from ..errors import MissingExtraError

        state = onnxruntime_install()
        raise MissingExtraError(
            f"dlinfer needs onnxruntime, which cannot be imported ({exc}): "
            f"{state['problem'] or 'it is not installed'}; fix: {state['fix'] or _INSTALL}"
        ) from exc
