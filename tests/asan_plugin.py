"""pytest plugin for `make asan`: import dlinfer._native from a sanitizer build.

The editable install's import hook would otherwise always load the normal
extension.  Registering the sanitized module in sys.modules before dlinfer is
first imported makes `from . import _native` pick it up.  Load with
`-p asan_plugin` and DLINFER_NATIVE_PATH=/path/to/_native*.so.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_path = os.environ.get("DLINFER_NATIVE_PATH")
if _path:
    _spec = importlib.util.spec_from_file_location("dlinfer._native", _path)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    sys.modules["dlinfer._native"] = _module


def pytest_report_header(config):
    return f"dlinfer._native from {_path or '(the installed build)'}"
