"""The "Insertion / deletion" tab: IAUC / DAUC curves computed on the device worker, scrubbed and
played step by step (:mod:`.widget`), with their plots (:mod:`.plots`), the frame panels
(:mod:`.panels`) and the Export menu (:mod:`.exports`)."""
from .widget import PlaybackState, PlaybackWidget

__all__ = ["PlaybackState", "PlaybackWidget"]
