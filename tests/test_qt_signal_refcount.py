"""The installed Qt binding delivers signals to Python slots without releasing references it does
not own. PySide6-Essentials 6.12.0 releases one reference to ``True`` per delivery, whatever the
signal's type: the app (and a long test session) aborts with "Fatal Python error: bool_dealloc"
once ``True``'s reference count runs out, after a few thousand to tens of thousands of signals
(pyproject.toml excludes that version)."""
from __future__ import annotations

import gc
import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    number = Signal(int)
    flag = Signal(bool)


def test_signal_delivery_keeps_the_reference_counts_of_true_and_false(qapp):
    emitter = _Emitter()
    received = []
    emitter.number.connect(lambda value: received.append(value))
    emitter.flag.connect(lambda value: received.append(value))
    gc.collect()
    before = sys.getrefcount(True), sys.getrefcount(False)
    for i in range(200):
        emitter.number.emit(i)
        emitter.flag.emit(i % 2 == 0)
    received.clear()
    gc.collect()
    assert (sys.getrefcount(True), sys.getrefcount(False)) == before
