"""Which onnxruntime build is installed, and two builds over each other named
(dlinfer.runtime.installed; `dlinfer doctor`; docs/install.md).  The real install beside
a package that depends on onnxruntime is tests/test_wheel_install.py (slow)."""

from __future__ import annotations

import sys

import pytest
from dlinfer.runtime import installed


def state(monkeypatch, dists: dict[str, str], live: str | None):
    monkeypatch.setattr(installed, "_distributions", lambda: dists)
    monkeypatch.setattr(installed, "_live_package",
                        lambda: (live, dists.get(live) if live else None))
    return installed.onnxruntime_install()


def test_this_install_is_one_build():
    here = installed.onnxruntime_install()
    assert len(here["distributions"]) == 1 and not here["clobbered"] and here["problem"] is None
    assert here["live"] in here["distributions"]


def test_two_builds_are_named_with_the_fix(monkeypatch):
    got = state(monkeypatch, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"},
                "onnxruntime")
    assert got["clobbered"]
    assert "2 onnxruntime builds are installed over each other" in got["problem"]
    assert "files are now onnxruntime's" in got["problem"]
    assert "uninstalling onnxruntime-gpu would delete them" in got["problem"]
    assert got["fix"].startswith("pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
                                 "'onnxruntime-gpu==1.31.1'")


def test_a_build_whose_files_were_deleted(monkeypatch):
    got = state(monkeypatch, {"onnxruntime-gpu": "1.31.1"}, None)
    assert "files are missing or broken" in got["problem"]
    assert got["fix"] == "pip install --force-reinstall --no-deps 'onnxruntime-gpu==1.31.1'"


def test_import_without_onnxruntime_names_the_extras(monkeypatch):
    import dlinfer

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr(installed, "_distributions", lambda: {})
    with pytest.raises(dlinfer.MissingExtraError, match=r"dlinfer\[cpu\].*dlinfer\[gpu\]"):
        installed.check_importable()


def test_doctor_prints_the_problem(monkeypatch):
    from dlinfer.tools import doctor

    facts = doctor.diagnose(probe=False)
    facts["onnxruntime"]["install"] = state(
        monkeypatch, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"}, "onnxruntime")
    text = doctor.format_report(facts)
    assert "PROBLEM:      2 onnxruntime builds are installed over each other" in text
    assert "fix:        pip uninstall -y onnxruntime onnxruntime-gpu" in text
