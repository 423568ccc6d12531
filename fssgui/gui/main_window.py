"""The main window: a thin shell that composes the parts and keeps the episode being edited.

Layout: the support set (:class:`~.support_panel.SupportPanel`) | the query and its region R
(:class:`~.query_panel.QueryPanel`) | the analysis tabs (:class:`~.analysis_panel.AnalysisPanel`:
heat maps, levels, compare, insertion / deletion playback, prototypes); the log pane below
(:class:`~.log_pane.LogPane`); two toolbars and the menus, built from the actions declared once in
:mod:`.window_actions`; the status bar (:class:`~.status_bar.StatusBar`).

Each part owns its state and its jobs. Background work goes through job handles
(:mod:`.workers`): the device worker for model jobs (Predict and Explain in :class:`~.runs.RunController`,
the playback's curves, the Prototypes tab), the file pool for episode I/O and exports
(:class:`~.episode_io.EpisodeIO`, :class:`~.file_drops.FileDrops`, the playback's exports), the
compute pool for CPU work on the GUI's behalf (the Prototypes tab's maps); training runs in a child
process (:mod:`.training`). The window itself keeps only what the episode is (its class, notes,
folder) and what was edited (:class:`~fssgui.edit_state.EditState`), and says so in its title.

Another panel joins with :meth:`MainWindow.add_analysis_tab` or :meth:`MainWindow.add_dock`, and
its actions with ``window.actions.add(ActionSpec(...))`` (a File-menu entry is a ``MenuPlace("file", ...)``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QDockWidget, QMainWindow, QMessageBox,
                               QSplitter, QTextBrowser, QToolBar, QVBoxLayout, QWidget)

from ..edit_state import Change, EditState
from ..episode import Episode
from ..errors import FssguiError
from ..pipeline import DeviceInfo
from ..settings import Autosave, Settings, data_dir
from .actions import ActionRegistry
from .analysis_panel import AnalysisPanel
from .edit_tools import TOOL_ACTIONS, EditTools
from .episode_io import EpisodeIO
from .file_drops import FileDrops
from .log_pane import LogPane
from .model_bar import ModelBar
from .notes_dialog import NotesDialog
from .playback import PlaybackWidget
from .query_panel import QueryPanel
from .runs import RunController
from .status_bar import StatusBar
from .support_panel import SupportPanel
from .theme import THEME_LIGHT, THEME_SYSTEM, THEMES, apply_theme
from .triage.panel import TriagePanel
from .window_actions import MOUSE_GESTURES, WINDOW_ACTIONS
from .workers import DeviceWorker, WorkerPool


class MainWindow(QMainWindow):
    """The application window (see the module docstring). ``unattended`` skips every dialog (tests, screenshots)."""

    def __init__(self, settings: Optional[Settings] = None, *, device_worker: Optional[DeviceWorker] = None,
                 explainer_factories: Optional[dict[str, Callable[..., Any]]] = None,
                 autosave: Optional[Autosave] = None, unattended: bool = False,
                 defer_background: bool = False) -> None:
        """``defer_background``: the caller starts the pickers' background queries
        (``model_bar.start_background()``) itself, once the window is on screen (the app: they
        import torch, which would otherwise compete with the first paint); else they start now."""
        super().__init__()
        self.settings = settings or Settings.load()
        self.unattended = unattended
        # the background: one device thread for model jobs, a file pool (in order), a compute pool
        self.device_worker = device_worker or DeviceWorker(self)
        self.files = WorkerPool("files", 1, self)
        self.compute = WorkerPool("compute", max(1, min(4, (os.cpu_count() or 2) - 1)), self)
        # the episode under edit (the images and masks live in the query and support panels)
        self.class_name = ""
        self.episode_notes = ""
        self.source_folder: Optional[Path] = None
        self.edits = EditState()
        self.effective_theme = THEME_LIGHT
        self._applying_scheme = False  # setColorScheme() re-emits colorSchemeChanged
        self._train_dialog = None
        self._shut_down = False
        self._build(explainer_factories, autosave or Autosave())
        self._connect()
        self.apply_settings()
        if self.settings.load_problem:
            self.log(self.settings.load_problem)
        self.set_device_info(None)
        self.actions.update()
        self.update_title()
        if not defer_background:
            self.model_bar.start_background()

    # ------------------------------------------------------------------ building
    def _build(self, factories, autosave: Autosave) -> None:
        self.setWindowTitle("fssgui")
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)
        self.support_panel = SupportPanel(self)
        self.query = QueryPanel(self)
        self.analysis = AnalysisPanel(self)
        self.playback_widget = self.analysis.add_tab(PlaybackWidget(self.device_worker, self.files, self.compute),
                                                     "Insertion / deletion")
        self.prototypes_tab = self.analysis.add_lazy_tab("Prototypes", self._build_prototypes)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        for widget, stretch in ((self.support_panel, 0), (self.query, 1), (self.analysis, 1)):
            splitter.addWidget(widget)
            splitter.setStretchFactor(splitter.count() - 1, stretch)
        splitter.setSizes([320, 560, 720])
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        self.setCentralWidget(splitter)
        self.log_pane = LogPane(self)
        self.status = StatusBar(self)
        self.edit_tools = EditTools(self.query, self.support_panel, self)
        # its start-up queries (CUDA devices, explainer descriptions) import torch: on the compute pool,
        # so the files pool reads the episode meanwhile
        self.model_bar = ModelBar(self.settings, self.compute, factories, self)
        # the dataset panel (failure triage): opens episodes here through show_episode_for_diagnosis
        self.triage_panel = TriagePanel(self.device_worker, self.files, lambda: self.model_bar.model_spec(),
                                        data_dir() / "triage", self, self.unattended)
        self.triage_dock = self.add_dock(self.triage_panel, "Dataset triage", Qt.DockWidgetArea.BottomDockWidgetArea)
        self.splitDockWidget(self.triage_dock, self.log_pane, Qt.Orientation.Vertical)  # the log below it
        self.triage_dock.hide()
        self.runs = RunController(self)
        self.episode_io = EpisodeIO(self, self.files, autosave)
        self.file_drops = FileDrops(self, self.files)
        self.actions = ActionRegistry(self)
        self.actions.add(*WINDOW_ACTIONS)
        run_bar = self._toolbar("run_toolbar", "Model and run")
        self.model_bar.add_to(run_bar)
        run_bar.addSeparator()
        self.actions.fill_toolbar("run", run_bar)
        self.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)
        edit_bar = self._toolbar("edit_toolbar", "Editing")
        self.actions.fill_toolbar("edit", edit_bar)
        edit_bar.insertSeparator(self.actions["undo"])
        self.edit_tools.add_size_fields(edit_bar)
        edit_bar.addWidget(self.edit_tools.hint)
        self.actions.build_menus(self.menuBar())

    def _toolbar(self, name: str, title: str) -> QToolBar:
        bar = QToolBar(title, self)
        bar.setObjectName(name)
        bar.setMovable(False)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        return bar

    def _connect(self) -> None:
        for runner in (self.device_worker, self.files, self.compute):
            runner.jobSubmitted.connect(self.status.follow)
            runner.log.connect(self.log)
        self.device_worker.deviceStatus.connect(self.set_device_info)
        self.device_worker.busyChanged.connect(lambda _busy: self.actions.update())
        q, sp, a = self.query, self.support_panel, self.actions
        q.regionEdited.connect(lambda note: self.mark_changed(Change.REGION, note))
        q.errorRaised.connect(self.log_error)
        q.hovered.connect(self.status.set_hover)
        q.show_prediction.toggled.connect(a["toggle_prediction"].setChecked)
        q.show_truth.toggled.connect(a["toggle_ground_truth"].setChecked)
        q.mask_opacity.valueChanged.connect(self.edit_tools.set_mask_opacity)
        sp.maskEdited.connect(lambda i: self._supports_changed(f"support {i + 1}'s mask was edited since this explanation"))
        sp.supportsChanged.connect(lambda: self._supports_changed("the support set changed since this explanation"))
        sp.filesDropped.connect(self.file_drops.handle_paths)
        sp.addRequested.connect(self.file_drops.add_supports_dialog)
        sp.maskFromFileRequested.connect(self.file_drops.mask_from_file_dialog)
        self.edit_tools.toolChanged.connect(lambda tool: a[TOOL_ACTIONS[tool]].setChecked(True))
        self.edit_tools.message.connect(lambda text: self.statusBar().showMessage(text, 2000))
        mb = self.model_bar
        mb.modelChanged.connect(lambda: self.mark_changed(Change.MODEL, "the model changed since this explanation"))
        mb.explainerChanged.connect(self.actions.update)
        mb.deviceChanged.connect(lambda: self.set_device_info(self.device_info))
        mb.device_combo.devicesListed.connect(lambda: self.set_device_info(self.device_info))
        mb.trainRequested.connect(self.open_training_dialog)
        mb.message.connect(self.log)
        mb.errorRaised.connect(self.log_error)
        for view in (self.analysis.heatmap_view, self.analysis.compare_view):
            view.hovered.connect(self.status.set_hover)
        self.runs.resultShown.connect(lambda result: self.playback_widget.add_explanation(
            result, self.current_episode(), self.model_bar.model_spec()))
        self.playback_widget.errorRaised.connect(self.log_error)
        self.log_pane.visibilityChanged.connect(a["toggle_log"].setChecked)
        self.triage_dock.visibilityChanged.connect(a["toggle_triage"].setChecked)
        self.triage_panel.openEpisode.connect(self.show_episode_for_diagnosis)
        self.triage_panel.message.connect(self.log)
        self.triage_panel.errorRaised.connect(self.log_error)
        self.status.training_button.clicked.connect(lambda: self.open_training_dialog())
        hints = QApplication.instance().styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(self._on_system_scheme_changed)

    # ------------------------------------------------------------------ other panels
    @property
    def proto_panel(self):
        """The Prototypes tab's :class:`~fssgui.gui.prototypes.panel.PrototypePanel`, built when
        the tab is first shown or the panel first asked for."""
        return self.prototypes_tab.realise()

    def _build_prototypes(self):
        # imported and built on first use: about 0.3 s that would delay the first paint of every
        # start, for a tab (ScaleProtoSeg) that most sessions never open
        from .prototypes.panel import PrototypePanel

        panel = PrototypePanel(self.device_worker, self.compute, self.files, self)
        panel.errorRaised.connect(self.log_error)
        panel.message.connect(self.log)
        panel.exported.connect(lambda files: self.log(f"prototypes: exported {len(files)} files"
                                                      + (f" to {Path(files[0]).parent}" if files else "")))
        panel.apply_settings(self.settings)
        panel.set_query(self.query.image)
        return panel

    def add_analysis_tab(self, widget: QWidget, title: str) -> QWidget:
        """One more tab beside the heat maps (in a scroll area)."""
        return self.analysis.add_tab(widget, title)

    def add_dock(self, widget: QWidget, title: str, area=Qt.DockWidgetArea.LeftDockWidgetArea) -> QDockWidget:
        """One more panel in a dock of its own (movable, closable; its state is saved with the window's)."""
        dock = QDockWidget(title, self)
        dock.setObjectName(title.lower().replace(" ", "_"))
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    # ------------------------------------------------------------------ the episode
    def set_episode(self, episode: Episode, source: Optional[Path] = None, dirty: bool = False) -> None:
        """Show ``episode`` (it is copied into the editors)."""
        # never edited in place: jobs and results share the query's arrays instead of copying them
        image = episode.query_image.copy()
        self.query.set_query(image, None if episode.query_mask is None else episode.query_mask.copy(),
                             episode.region, episode.class_name)
        self.class_name = episode.class_name
        self.episode_notes = episode.notes  # saved back as NOTES.md (File ▸ Episode notes)
        self.source_folder = Path(source) if source is not None else None
        self.support_panel.set_supports(episode.supports)
        self.edit_tools.set_mask_opacity(self.query.mask_opacity.value())
        self.edit_tools.apply_to_canvases()
        self.analysis.heatmap_view.clear()
        if self.prototypes_tab.widget is not None:
            self.prototypes_tab.widget.set_query(image)
        self.edits.new_episode(dirty)
        self.update_title()
        self.actions.update()
        name = self.source_folder.name if self.source_folder else "new episode"
        self.log(f"episode {name}: query {image.shape[1]}x{image.shape[0]}, K = {self.support_panel.count()}"
                 + (f", class {self.class_name}" if self.class_name else "")
                 + ("" if episode.query_mask is not None else ", no ground truth"))
        if self.episode_notes.strip():
            first = self.episode_notes.strip().splitlines()[0].lstrip("# ").strip()
            self.log(f"episode notes: {first} … (File ▸ Episode notes)")

    def show_episode_for_diagnosis(self, episode: Episode, region: Optional[np.ndarray], note: str) -> None:
        """Show an episode of the dataset panel with R preset (brushed) to ``region`` (None: R is
        the prediction, as for any episode)."""
        if not self.confirm_discard():
            return
        self.set_episode(Episode(episode.query_image, episode.supports, episode.class_name, episode.query_mask,
                                 region, None, episode.notes), dirty=True)
        if region is not None:
            self.query.region_note = note
            self.query.update_caption()
        self.log(note)

    def open_dataset_dialog(self, root: str = "", layout: str = "") -> None:
        """File ▸ Open dataset…: the dataset panel, on ``root`` in ``layout`` when given."""
        self.triage_dock.show()
        self.triage_dock.raise_()
        self.resizeDocks([self.triage_dock, self.log_pane], [int(self.height() * 0.6), 90], Qt.Orientation.Vertical)
        if root:
            from ..triage.sweep import DatasetChoice

            self.triage_panel.open_dataset(DatasetChoice(root=root, layout=layout or "folders"))
        elif not self.triage_panel.form.root_edit.text() and not self.unattended:
            self.triage_panel.form.browse_button.click()

    def has_episode(self) -> bool:
        return self.query.has_query()

    def current_episode(self) -> Episode:
        """A copy of the episode as edited (region only when it has pixels)."""
        if not self.has_episode():
            raise FssguiError("no episode is open: open one with File ▸ Open episode (Ctrl+O)")
        q = self.query
        region = q.region.as_bool() if q.region is not None and q.region.count() else None
        return Episode(q.image, self.support_panel.supports(), self.class_name,
                       None if q.truth is None else q.truth.copy(), region, self.source_folder, self.episode_notes)

    def _supports_changed(self, note: str) -> None:
        self.query.show_prediction_result(None)  # the prediction depends on the supports
        self.edit_tools.apply_to_canvases()
        self.mark_changed(Change.SUPPORTS, note)

    def mark_changed(self, change: Change, note: str) -> None:
        """An edit: results of the old inputs are marked, the edit autosaved, the title starred."""
        if not self.has_episode():
            return
        self.edits.changed(change)
        self.runs.mark_stale(note)
        if self.edits.dirty:
            self.episode_io.schedule_autosave()
        self.update_title()
        self.actions.update()

    def edit_notes(self) -> None:
        """File ▸ Episode notes (``notes_dialog`` stays open in unattended mode, for tests)."""
        if not self.has_episode():
            return
        self.notes_dialog = NotesDialog(self.episode_notes, self.set_notes, self)
        if not self.unattended:
            self.notes_dialog.exec()

    def set_notes(self, text: str) -> None:
        """New notes for the episode: an edit (autosaved, written with the episode on save)."""
        if self.has_episode() and text != self.episode_notes:
            self.episode_notes = text
            self.mark_changed(Change.NOTES, "")

    def update_title(self) -> None:
        name = self.source_folder.name if self.source_folder else ("new episode" if self.has_episode() else "")
        self.setWindowTitle(f"fssgui — {name}{'*' if self.edits.dirty else ''}" if name else "fssgui")

    def confirm_discard(self) -> bool:
        """Before replacing the episode: offer to save unsaved edits."""
        if not self.edits.dirty or self.unattended or not self.has_episode():
            return True
        answer = QMessageBox.question(
            self, "Unsaved edits", "The episode has unsaved edits. Save them first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.episode_io.save(wait=True)
        if answer == QMessageBox.StandardButton.Discard:
            self.edits.dirty = False  # the user chose to drop the edits: no restore offer next time
            return True
        return False

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        event.acceptProposedAction()
        self.file_drops.handle_paths([Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()])

    # ------------------------------------------------------------------ view
    def set_overlays_visible(self, visible: bool) -> None:
        for canvas in list(self.edit_tools.canvases) + self.analysis.heat_canvases():
            canvas.set_overlays_visible(visible)
        if self.actions["toggle_overlays"].isChecked() != visible:
            self.actions["toggle_overlays"].setChecked(visible)

    def fit_all(self) -> None:
        self.edit_tools.fit_all(tuple(self.analysis.heat_canvases()))

    def set_theme(self, theme: str) -> str:
        """Light, dark, or follow the OS ("system"); returns the theme in effect."""
        theme = theme if theme in THEMES else THEME_SYSTEM
        self.settings.theme = theme
        if self._applying_scheme:
            return self.effective_theme
        self._applying_scheme = True
        try:
            self.effective_theme = apply_theme(theme)
        finally:
            self._applying_scheme = False
        self.actions[f"theme_{theme}"].setChecked(True)
        return self.effective_theme

    def _on_system_scheme_changed(self, *_args) -> None:
        if self.settings.theme == THEME_SYSTEM and not self._applying_scheme:
            self.set_theme(THEME_SYSTEM)

    def set_device_info(self, info: Optional[DeviceInfo]) -> None:
        self.device_info = info
        combo = self.model_bar.device_combo
        self.status.set_device(info, combo.device(), bool(combo.cuda_available))

    def show_shortcuts(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle("Keyboard shortcuts")
        layout = QVBoxLayout(dialog)
        browser = QTextBrowser(dialog)
        browser.setHtml(self.actions.cheat_sheet_html(MOUSE_GESTURES))
        layout.addWidget(browser)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=dialog)
        buttons.rejected.connect(dialog.reject)
        layout.addWidget(buttons)
        dialog.resize(520, 640)
        self.shortcuts_dialog = dialog
        if not self.unattended:
            dialog.exec()

    def show_about(self) -> None:
        from .. import __version__

        combo = self.model_bar.device_combo
        cuda = "not known yet" if combo.cuda_available is None else ("yes" if combo.cuda_available else "no")
        if not self.unattended:
            QMessageBox.about(self, "About fssgui", f"fssgui {__version__}\nDiagnose few-shot semantic segmentation "
                                                    f"models.\n\nCUDA available: {cuda}")

    # ------------------------------------------------------------------ training
    def open_training_dialog(self, model: str = ""):
        """Show the training dialog (one per window; a running training survives closing it)."""
        from ..train_setup import is_trainable
        from .training import TrainingDialog

        dialog = self._train_dialog
        if dialog is None:
            dialog = TrainingDialog(self.settings, self, model=model if is_trainable(model) else "", pool=self.files)
            dialog.checkpointChosen.connect(self.use_trained_checkpoint)
            dialog.runFinished.connect(lambda state: self.log(f"training {state}: {dialog.view.status_label.text()}"))
            dialog.summaryChanged.connect(self.status.set_training)
            self._train_dialog = dialog
        elif model and not dialog.is_running() and is_trainable(model):
            dialog.set_model(model)
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()
        return dialog

    def use_trained_checkpoint(self, model: str, path: str) -> None:
        """Select ``model`` and the trained checkpoint ``path`` (rebuilt from its config.json)."""
        if not self.model_bar.select_model(model):
            self.log_error(f"model {model} is not in the model list")
            return
        self.model_bar.set_checkpoint(path)

    # ------------------------------------------------------------------ log
    def log(self, text: str) -> None:
        self.log_pane.log(text)

    def log_error(self, text: str, details: str = "") -> None:
        self.log_pane.log_error(text, details)

    @property
    def errors(self) -> list[str]:
        return self.log_pane.errors

    # ------------------------------------------------------------------ settings
    def apply_settings(self) -> None:
        s = self.settings
        self.set_theme(s.theme)
        self.analysis.apply_settings(s)
        self.edit_tools.brush_spin.setValue(s.brush_size)
        self.edit_tools.eraser_spin.setValue(s.eraser_size)
        self.query.mask_opacity.setValue(round(s.mask_opacity * 100))
        self.edit_tools.set_mask_opacity(round(s.mask_opacity * 100))
        self.edit_tools.set_tool(self.edit_tools.tool)
        if self.prototypes_tab.widget is not None:
            self.prototypes_tab.widget.apply_settings(s)
        if s.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(s.window_geometry.encode()))
        if s.window_state:
            self.restoreState(QByteArray.fromBase64(s.window_state.encode()))

    def store_settings(self) -> None:
        s = self.settings
        self.model_bar.store_settings(s)
        self.analysis.store_settings(s)
        s.brush_size = int(self.edit_tools.brush_spin.value())
        s.eraser_size = int(self.edit_tools.eraser_spin.value())
        s.mask_opacity = self.query.mask_opacity.value() / 100.0
        if self.prototypes_tab.widget is not None:
            self.prototypes_tab.widget.store_settings(s)
        s.window_geometry = bytes(self.saveGeometry().toBase64()).decode()
        s.window_state = bytes(self.saveState().toBase64()).decode()
        try:
            s.save()
        except OSError as exc:
            self.log_error(f"could not save settings to {s.path()}: {exc}")

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event) -> None:  # noqa: N802
        if not self.confirm_discard() or not self._confirm_stop_training():
            event.ignore()
            return
        self.store_settings()
        self.shutdown()
        super().closeEvent(event)

    def _confirm_stop_training(self) -> bool:
        dialog = self._train_dialog
        if dialog is None or not dialog.is_running() or self.unattended:
            return True
        answer = QMessageBox.question(
            self, "Training in progress", "A training run is in progress. Stop it and quit? The epoch in progress "
            "is lost; Resume continues from the last saved epoch.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self) -> None:
        """Stop the workers and write the last autosave. Safe to call twice."""
        if self._shut_down:
            return
        self._shut_down = True
        self.triage_panel.shutdown()
        if self._train_dialog is not None:
            self._train_dialog.shutdown()  # a training child process does not outlive the app
        self.runs.shutdown()  # no preload is scheduled on a stopped worker
        self.device_worker.shutdown()
        self.compute.shutdown()
        self.files.shutdown()  # queued episode writes end first
        self.episode_io.write_at_exit()
