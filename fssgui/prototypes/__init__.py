"""ScaleProtoSeg analysis, without Qt: what the Prototypes tab shows and ``fssgui protos`` writes.

One model forward keeps every prototype's activation; everything else is numpy on top of it.
Modules, by job (each imports only those above it):

* :mod:`~fssgui.prototypes.projection`: the push's projection metadata (where each prototype was
  projected in the training set), read from the files beside the checkpoint;
* :mod:`~fssgui.prototypes.run`: the forward on one image (:func:`~.run.run_scaleprotoseg`), the
  numpy head, the group threshold α, the predicted classes;
* :mod:`~fssgui.prototypes.overlays`: images drawn from the maps (heatmap overlays, the
  group-assignment map, the prediction overlay, boxes);
* :mod:`~fssgui.prototypes.graph`: the group graph of one class (:func:`~.graph.explain_class`),
  its JSON document and its drawing, and one image end to end (:func:`~.graph.explain_image`:
  what the tab's job and ``fssgui protos`` run);
* :mod:`~fssgui.prototypes.inspection`: the pixel inspector (numbers at one feature cell, the
  nearest prototypes of a cell);
* :mod:`~fssgui.prototypes.compare`: two classes with shared colour ranges;
* :mod:`~fssgui.prototypes.dataset`, :mod:`~fssgui.prototypes.detail`,
  :mod:`~fssgui.prototypes.nearest`: one prototype in detail (its push source image and
  self-activation, its nearest patches in a dataset folder);
* :mod:`~fssgui.prototypes.export`: the one export format (:func:`~.export.export_class`).

The model itself is :mod:`fssgui.models.scaleprotoseg` (entries ``scaleprotoseg-<dataset>`` with
task ``semseg`` in the model registry); the Qt views are :mod:`fssgui.gui.prototypes`.
"""
