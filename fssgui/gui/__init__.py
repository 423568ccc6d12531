"""The Qt application (see :mod:`.main_window`): a thin shell over the pipeline."""
