"""What an edit of the open episode changes, as counters a result can be checked against (no Qt).

The window keeps one :class:`EditState`. A job records the counter of the inputs it read when it
was submitted; when its result arrives, a different counter means those inputs were edited while it
ran (the result is shown with a warning). Each kind of change (:class:`Change`) moves only the
counters of what it is an input of: the region R is an input of an explanation, not of the
prediction; the model is an input of both but not part of the episode file (no unsaved edit).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Change(enum.Enum):
    REGION = "region"  # R brushed, cleared, switched to another source
    SUPPORTS = "supports"  # a support mask edited, supports added / removed / reordered
    MODEL = "model"  # another model or checkpoint
    NOTES = "notes"  # the episode's notes (an input of nothing)


#: which counters each change moves: (explanation inputs, prediction inputs, support set, unsaved edit)
_EFFECTS = {
    Change.REGION: (True, False, False, True),
    Change.SUPPORTS: (True, True, True, True),
    Change.MODEL: (True, True, False, False),
    Change.NOTES: (False, False, False, True),
}


@dataclass
class EditState:
    """Counters of the episode under edit (see the module docstring)."""

    revision: int = 0  # inputs of an explanation: supports, R, model
    prediction_revision: int = 0  # inputs of the prediction: supports, model
    support_version: int = 0  # edits of the support set since the episode was opened (result labels)
    episode_serial: int = 0  # episodes shown so far: a save of an older one stays apart
    dirty: bool = False  # edits not saved to the episode's folder

    def changed(self, change: Change) -> None:
        explanation, prediction, supports, unsaved = _EFFECTS[change]
        self.revision += explanation
        self.prediction_revision += prediction
        self.support_version += supports
        self.dirty = self.dirty or unsaved

    def new_episode(self, dirty: bool = False) -> None:
        """Another episode is shown: every earlier result is out of date."""
        self.episode_serial += 1
        self.revision += 1
        self.prediction_revision += 1
        self.support_version = 0
        self.dirty = dirty
