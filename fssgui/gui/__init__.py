"""The Qt application (see :mod:`.main_window`). Importing it guards against PySide6's emit
reference-count bug before any signal is emitted (:mod:`.pyside_refcounts`)."""
from .pyside_refcounts import guard

guard()
