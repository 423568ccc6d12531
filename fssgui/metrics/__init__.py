"""Causal metrics (IAUC / DAUC, IAUC@p, mIoULoss@p): they take an attribution, never compute one.

Kept apart from the explainers (``fssgui.explain``), as captum keeps ``captum/metrics`` apart from
``captum/attr``; the pipeline (:mod:`fssgui.pipeline`) runs them for every front-end.
"""
