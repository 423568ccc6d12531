"""Python's cyclic garbage collection on the GUI thread only.

A collection runs in whichever thread happens to allocate when a generation fills up. When that is
the device thread (a job's imports or tensors), it can destroy Qt widgets left in reference cycles
(a closed dialog, a menu) there, while the GUI thread destroys others: Qt's object mutex on one side,
the GIL on the other, and the process hangs (seen in the tests: a QMenu destructor on the device
thread against shiboken's deferred deletions on the GUI thread). pyqtgraph's ``GarbageCollector``
turns automatic collection off and collects, generation by generation as the thresholds say, on a
timer of the GUI thread; :func:`collect_on_gui_thread` starts it, :func:`restore_automatic_collection`
undoes it.
"""
from __future__ import annotations

import gc


def collect_on_gui_thread(interval_s: float = 1.0):
    """From now on, collect garbage on the GUI thread's timer only (needs a running event loop to
    collect); returns the collector, which the caller keeps."""
    from pyqtgraph.util.garbage_collector import GarbageCollector

    return GarbageCollector(interval=interval_s)


def restore_automatic_collection(collector) -> None:
    """Stop ``collector``, collect what is left here (call it on the GUI thread, once the worker
    threads have stopped) and turn automatic collection back on."""
    collector.timer.stop()
    gc.collect()
    gc.enable()
