"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits non-zero;
the GUI shows them in the log pane. Every message names the file and the problem.

Also the cancellation of long computations: :class:`Cancelled`, raised between two steps when the
caller's ``cancelled()`` hook turned true (:func:`check_cancelled`)."""
from __future__ import annotations

from typing import Callable, Optional

#: ``progress(fraction)`` hook of a long computation (fraction in [0, 1])
ProgressFn = Optional[Callable[[float], None]]
#: ``cancelled() -> bool`` hook, checked between steps
CancelledFn = Optional[Callable[[], bool]]


class FssguiError(Exception):
    """Base class of user-facing errors."""


class EpisodeError(FssguiError):
    """An episode folder/file is malformed."""


class ModelError(FssguiError):
    """A model cannot be built (unknown name, missing checkpoint, unavailable device)."""


class CheckpointError(ModelError):
    """A checkpoint file cannot be loaded safely or does not match the model."""


class ExplainError(FssguiError):
    """An explanation cannot be computed (for example an empty region)."""


class DisplayError(FssguiError):
    """The window cannot open here (Qt's platform plugin lacks system libraries, no display)."""


class ExportError(FssguiError):
    """An export or report file could not be written (or there is nothing to export yet)."""


class Cancelled(Exception):
    """Raised by long computations when ``cancelled()`` turned true between two steps."""


def check_cancelled(cancelled: CancelledFn) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled()
