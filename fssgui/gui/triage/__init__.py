"""The dataset panel (failure triage) of the window: a form to open a dataset, the sweep on the
device worker, the failure table and its actions. The work itself is Qt-free in
:mod:`fssgui.triage`; these modules only show it and submit it."""
