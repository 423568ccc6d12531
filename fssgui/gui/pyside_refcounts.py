"""A guard against a reference-count bug of PySide6's ``SignalInstance.emit``.

In PySide6 6.12 every ``signal.emit(...)`` made from Python drops one reference to ``True`` (it
returns it without taking one), and emitting across threads drops references to ``None`` now and
then. A few hundred emits later CPython deallocates the singleton and aborts ("Fatal Python error:
bool_dealloc: deallocating True or False"). The app emits constantly (job handles, pyqtgraph's
mouse signals), so a session, a benchmark or the test suite ended in that abort.

:func:`guard` makes ``None``, ``True`` and ``False`` immortal the way CPython 3.12 does for them: it
adds 2**40 to their reference counts, once, before any signal is emitted. These three objects are
never deallocated by a correct program, so nothing else changes. Python 3.12 and later need no guard.
"""
from __future__ import annotations

import ctypes
import sys

_GUARDED = False
IMMORTAL_COUNT = 1 << 40


def guard() -> bool:
    """Apply the guard (once per process); True when it was applied now or before."""
    global _GUARDED
    if _GUARDED:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every object in CPython <= 3.11 (release builds)
        ctypes.c_ssize_t.from_address(id(singleton)).value += IMMORTAL_COUNT
    _GUARDED = True
    return True
