"""Peak memory of a fresh process, the one way the tests read it.

:data:`HIGH_WATER` is Python source defining ``high_water()``: the high-water mark of the
process's own resident memory (VmHWM, KiB).  Not ``ru_maxrss``: Linux keeps that across
exec, so a child of a large pytest process starts at the parent's peak and shows no
growth (seen when a memory test ran after the other slow tests).  Paste it at the top of
the script a test runs with ``subprocess``.
"""

from __future__ import annotations

import os

__all__ = ["HAVE_VMHWM", "HIGH_WATER"]

HAVE_VMHWM = os.path.exists("/proc/self/status")

HIGH_WATER = '''
def high_water():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
'''
