"""Failure triage: sweep a dataset's episodes with a model, rank the failures, open one for
diagnosis, explain the worst N in one report. Qt-free; the app's dataset panel
(:mod:`fssgui.gui.triage`) and ``fssgui triage`` call it.

* :mod:`.results`: a results folder of :mod:`fssgui.evaluate` read as a failure table (one record
  per episode, partial sweeps included) and ranked;
* :mod:`.sweep`: the sweep, which is ``fssgui evaluate``'s runner without methods, with progress
  (episodes/s, time left), cancel and resume;
* :mod:`.diagnosis`: one episode opened for diagnosis with R on its largest error;
* :mod:`.batch` and :mod:`.report`: the worst N explained (the same runner) into one HTML + PDF.
"""
