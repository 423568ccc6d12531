"""Garbage collection only on the GUI thread (fssgui/gui/gc_policy.py; conftest applies it to every
Qt test, as fssgui.gui.app does in the app)."""
from __future__ import annotations

import gc
import threading
import weakref


class _Cycle:
    pass


def test_a_cycle_dropped_on_another_thread_is_collected_by_the_gui_thread(qtbot):
    assert not gc.isenabled()  # automatic collection is off in a Qt test
    refs = []

    def allocate() -> None:  # well past generation 0's threshold: it would have collected here
        for _ in range(5 * gc.get_threshold()[0]):
            item = _Cycle()
            item.me = item
        refs.append(weakref.ref(item))

    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    assert refs[0]() is not None  # nothing collected on the worker thread
    qtbot.waitUntil(lambda: refs[0]() is None, timeout=5000)  # the GUI thread's timer collected it


def test_automatic_collection_comes_back(qtbot):
    from fssgui.gui.gc_policy import collect_on_gui_thread, restore_automatic_collection

    collector = collect_on_gui_thread()
    assert not gc.isenabled()
    restore_automatic_collection(collector)
    assert gc.isenabled() and not collector.timer.isActive()
    gc.disable()  # the conftest fixture's own collector restores it after this test
