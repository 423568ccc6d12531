"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits non-zero;
the GUI shows them in the log pane. Every message names the file and the problem."""


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


class ExportError(FssguiError):
    """An export or report file could not be written (or there is nothing to export yet)."""
