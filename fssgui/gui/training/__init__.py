"""Training from the app: the "Train a model" dialog (:mod:`.dialog`) with its setup form
(:mod:`.form`), its view of the run (:mod:`.run_view`) and the ``fssgui train`` child process
(:mod:`.process`). The setup itself, without Qt: :mod:`fssgui.train_setup`."""
from .dialog import TrainingDialog, TrainingState

__all__ = ["TrainingDialog", "TrainingState"]
