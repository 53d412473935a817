"""How an input reaches an onnxruntime IOBinding, and when a binding goes stale.

onnxruntime's ``IOBinding::BindInput`` copies a host tensor to the session's device
*when it is bound* (``CopyOneInputAcrossDevices``), not when the session runs.  On CPU
there is nothing to copy: the binding points at the caller's buffer, so a binding
made once stays right for as long as that buffer lives, whatever is written into it.
On any other device the binding holds a snapshot, and reusing it after the caller
changed the array returns the answer for the old contents.

Every input binding goes through :func:`bind_input`, so a test can swap it for one
that snapshots the way a CUDA binding does and check :class:`~dlinfer.Model` against
that on a machine without a GPU (``tests/test_io_binding.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bind_input", "binding_copies_input"]


def bind_input(binding: Any, name: str, value: np.ndarray) -> None:
    """Bind host array ``value`` as input ``name`` of a C-level ``SessionIOBinding``."""
    binding.bind_input(name, value)


def binding_copies_input(device: str) -> bool:
    """Whether binding a host array on ``device`` (a Model.device label) copies it.

    Where it copies, dlinfer binds every input on every call and synchronizes the
    copies before the run; where it does not (CPU), a bound buffer is reused.
    """
    return device != "cpu"
