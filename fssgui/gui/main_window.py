"""The main window: support panel | query canvas | analysis tabs, log pane, status bar.

The window is a thin shell: it keeps the episode being edited (images, the supports'
:class:`EditableMask`\\ s, the query region R), sends jobs to the one worker thread
(:class:`~fssgui.gui.worker.GpuWorker`) and shows what comes back. No model math lives here.

Consistency rules the user can rely on:
* every explanation says which region it explains (R = brushed / prediction / ground truth);
* results of a superseded job are dropped; a result computed from inputs that were edited while it
  ran is shown with a warning in its title;
* edits are autosaved (``settings.Autosave``) a moment after each stroke, so a crash loses nothing;
* errors of any job appear in the log pane and the status bar, and the window keeps working.
"""
from __future__ import annotations

import html
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PySide6.QtCore import QByteArray, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QScrollArea,
    QFrame,
    QSlider,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..episode import Episode, load_episode, save_episode
from ..errors import FssguiError
from ..imaging import ImageError, load_mask, load_rgb
from ..prototypes.graph import PrototypeRunResult
from ..prototypes.run import image_key
from ..pipeline import jobs
from ..pipeline import explainers
from ..pipeline.explainers import available_explainers, parse_params
from .canvas import TOOL_BRUSH, TOOL_ERASER, TOOL_PAN, TOOL_POLYGON, TOOL_RECTANGLE, ImageCanvas
from ..drops import classify_drop
from .heatmap_view import CompareView, DisplayControls, DisplaySettings, HeatmapViewer, LevelView, outline_rgba
from ..pipeline import BRUSHED, GROUND_TRUTH, PREDICTION, DeviceInfo, ExplanationResult, ModelSpec, PredictionResult
from ..pipeline import input_key, region_title
from ..editing import EditableMask, restore_histories
from .prototypes.panel import PrototypePanel
from ..settings import Autosave, Settings
from .shortcuts import SHORTCUTS, cheat_sheet_html
from .support_panel import SupportPanel
from .theme import THEME_DARK, THEME_LIGHT, THEME_SYSTEM, THEMES, apply_theme
from .worker import GpuWorker

REGION_COLOUR = (0, 200, 255)
PREDICTION_COLOUR = (255, 214, 0)
TRUTH_COLOUR = (60, 220, 90)
CACHE_SIZE = 8
DEFAULT_EXPLAINER = "affex-signed"
#: canvas tool -> its action in MainWindow.actions
TOOL_ACTIONS = {TOOL_BRUSH: "tool_brush", TOOL_ERASER: "tool_eraser", TOOL_RECTANGLE: "tool_rectangle",
                TOOL_POLYGON: "tool_polygon", TOOL_PAN: "tool_pan"}


def _gib(value: int) -> str:
    return f"{value / 2**30:.1f}"


class QueryPanel(QWidget):
    """The query canvas with the region-source selector and overlay toggles."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        self.header = QLabel("<b>Query</b>")
        top.addWidget(self.header)
        top.addStretch(1)
        self.legend = QLabel(
            "<span style='color:#00c8ff'>■</span> region R &nbsp; "
            "<span style='color:#e6c000'>▭</span> prediction &nbsp; "
            "<span style='color:#3cdc5a'>▭</span> ground truth"
        )
        top.addWidget(self.legend)
        layout.addLayout(top)
        self.canvas = ImageCanvas(self, editable=True)
        self.canvas.set_placeholder("open an episode (Ctrl+O) or drop an episode folder here")
        layout.addWidget(self.canvas, 1)
        row = QHBoxLayout()
        row.addWidget(QLabel("Region R ="))
        self.region_group = QButtonGroup(self)
        self.region_buttons: dict[str, QToolButton] = {}
        for i, (source, tip) in enumerate(
            (
                (BRUSHED, "R is what you brush on the query (1)"),
                (PREDICTION, "R is the model's predicted foreground (2)"),
                (GROUND_TRUTH, "R is the query's ground-truth mask (3)"),
            )
        ):
            button = QToolButton(self)
            button.setText(source)
            button.setCheckable(True)
            button.setToolTip(tip)
            self.region_group.addButton(button, i)
            self.region_buttons[source] = button
            row.addWidget(button)
        self.clear_region = QToolButton(self)
        self.clear_region.setText("clear R")
        self.clear_region.setToolTip("Erase the whole region R (undoable)")
        row.addWidget(self.clear_region)
        row.addStretch(1)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show"))
        self.show_prediction = QCheckBox("prediction")
        self.show_prediction.setChecked(True)
        self.show_prediction.setToolTip("Outline of the predicted foreground (yellow), Shift+P")
        self.show_truth = QCheckBox("ground truth")
        self.show_truth.setChecked(True)
        self.show_truth.setToolTip("Outline of the ground-truth mask (green), G")
        row.addWidget(self.show_prediction)
        row.addWidget(self.show_truth)
        row.addSpacing(12)
        row.addWidget(QLabel("mask opacity"))
        self.mask_opacity = QSlider(Qt.Orientation.Horizontal)
        self.mask_opacity.setRange(0, 100)
        self.mask_opacity.setFixedWidth(90)
        self.mask_opacity.setToolTip("Opacity of the region R and support-mask tints")
        row.addWidget(self.mask_opacity)
        row.addStretch(1)
        layout.addLayout(row)


class MainWindow(QMainWindow):
    """The application window. ``unattended`` skips every dialog (tests, screenshots)."""

    pipelineFinished = Signal(bool, str)  # ok, message
    resultShown = Signal(object)  # ExplanationResult
    predictionShown = Signal(object)  # PredictionResult
    errorReported = Signal(str)
    episodeOpened = Signal(str)  # folder, once the episode is shown
    episodeOpenFailed = Signal(str)  # message
    episodeSaved = Signal(str)  # folder
    episodeSaveFailed = Signal(str)  # message
    _autosaveDone = Signal(str)
    _ioDone = Signal(object)  # (callback, result, error, traceback) from the episode I/O thread

    def __init__(
        self,
        settings: Optional[Settings] = None,
        *,
        worker: Optional[GpuWorker] = None,
        explainer_factories: Optional[dict[str, Callable[..., Any]]] = None,
        autosave: Optional[Autosave] = None,
        unattended: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings or Settings.load()
        self.unattended = unattended
        self.explainer_factories = dict(explainer_factories or {})
        self.worker = worker or GpuWorker(self)
        self.autosave = autosave or Autosave()
        # The episode I/O thread: opening, saving and autosaving run here, in submission order,
        # so a large episode never freezes the window and a save never races an autosave.
        self._autosave_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fssgui-episode-io")
        self._open_request = 0  # latest open request; results of older ones are dropped
        self._episode_serial = 0  # increases with every episode shown (saves of an old one stay apart)
        self._io_pending = 0
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.timeout.connect(self._write_autosave)
        self._autosave_done_at = 0.0
        # episode state
        self.query_image: Optional[np.ndarray] = None
        self.query_mask: Optional[np.ndarray] = None
        self.region: Optional[EditableMask] = None
        self.region_source = PREDICTION
        self.region_note = ""
        self.class_name = ""
        self.episode_notes = ""
        self.source_folder: Optional[Path] = None
        self.dirty = False
        self.edit_revision = 0  # any edit of supports or R
        self.support_version = 0  # edits of the support set only (labels of results)
        self.prediction: Optional[PredictionResult] = None
        self.prediction_revision = -1
        self.last_result: Optional[ExplanationResult] = None
        self._result_count = 0
        self._cache: OrderedDict[str, ExplanationResult] = OrderedDict()
        self._job_meta: dict[int, dict[str, Any]] = {}
        self._pipeline_job: Optional[int] = None
        self._proto_job: Optional[int] = None
        self._proto_spec: Optional[ModelSpec] = None  # the spec of the shown Prototypes result (detail jobs)
        self._availability_cache: dict[tuple[str, str], str] = {}  # (model, explainer) -> reason
        self._specific_cache: Optional[dict[str, tuple[str, ...]]] = None
        self._applying_scheme = False  # setColorScheme() re-emits colorSchemeChanged
        self.effective_theme = THEME_LIGHT
        self._applying_result = False
        self.device_info: Optional[DeviceInfo] = None
        self.errors: list[str] = []
        self._build_ui()
        self._connect_worker()
        self._apply_settings()
        self._update_device_label()
        self._update_actions()
        self._update_title()

    # =========================================================================== UI building
    def _build_ui(self) -> None:
        self.setWindowTitle("fssgui")
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)
        self.actions: dict[str, QAction] = {}
        for shortcut in SHORTCUTS:
            action = QAction(shortcut.text, self)
            if shortcut.keys:
                action.setShortcut(QKeySequence(shortcut.keys))
                action.setToolTip(f"{shortcut.text.replace('&', '').replace('…', '')} ({shortcut.keys})")
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            self.actions[shortcut.action] = action
            self.addAction(action)
        a = self.actions
        for tool in TOOL_ACTIONS.values():
            a[tool].setCheckable(True)
        self._tool_group = QActionGroup(self)
        for tool in TOOL_ACTIONS.values():
            self._tool_group.addAction(a[tool])
        for name in ("toggle_overlays", "toggle_prediction", "toggle_ground_truth"):
            a[name].setCheckable(True)
            a[name].setChecked(True)

        # ---- central: supports | query | analysis
        self.support_panel = SupportPanel(self)
        self.query_panel = QueryPanel(self)
        self.query_canvas = self.query_panel.canvas
        self.display = DisplaySettings()
        self.heatmap_view = HeatmapViewer(self.display, self)
        self.level_view = LevelView(self)
        self.compare_view = CompareView(self.display, self)
        analysis = QWidget(self)
        analysis_layout = QVBoxLayout(analysis)
        analysis_layout.setContentsMargins(4, 4, 4, 4)
        self.display_controls = DisplayControls(self.display, analysis)
        analysis_layout.addWidget(self.display_controls)
        self.tabs = QTabWidget(analysis)
        self.tabs.addTab(self.heatmap_view, "Heat maps")
        self.tabs.addTab(self.level_view, "Levels")
        self.tabs.addTab(self.compare_view, "Compare")
        self.playback_widget = self._optional_tab(
            "fssgui.gui.playback", "PlaybackWidget", "Insertion / deletion",
            "The insertion / deletion playback widget is not part of this build yet.")
        self.proto_panel = PrototypePanel(self)
        proto_scroll = QScrollArea(self)
        proto_scroll.setWidgetResizable(True)
        proto_scroll.setFrameShape(QFrame.Shape.NoFrame)
        proto_scroll.setWidget(self.proto_panel)
        self.tabs.addTab(proto_scroll, "Prototypes")
        self.proto_widget = self.proto_panel.view  # the group-graph view itself
        analysis_layout.addWidget(self.tabs, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.support_panel)
        splitter.addWidget(self.query_panel)
        splitter.addWidget(analysis)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 1)
        splitter.setSizes([320, 560, 720])
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        self.setCentralWidget(splitter)

        # ---- log pane
        self.log_view = QPlainTextEdit(self)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText("Messages and errors appear here.")
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("log")
        self.log_dock.setWidget(self.log_view)
        self.log_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                  | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.resizeDocks([self.log_dock], [120], Qt.Orientation.Vertical)

        # ---- toolbars
        self._build_run_toolbar()
        self._build_edit_toolbar()
        self._build_menus()
        self._build_status_bar()

        # ---- connections
        a["open_episode"].triggered.connect(lambda: self.open_episode_dialog())
        a["save_episode"].triggered.connect(lambda: self.save_episode())
        a["save_episode_as"].triggered.connect(lambda: self.save_episode_as())
        a["open_demo"].triggered.connect(lambda: self._confirm_discard() and self.open_default_demo())
        a["choose_checkpoint"].triggered.connect(self.choose_checkpoint)
        a["quit"].triggered.connect(self.close)
        a["undo"].triggered.connect(self.undo)
        a["redo"].triggered.connect(self.redo)
        a["tool_brush"].triggered.connect(lambda: self.set_tool(TOOL_BRUSH))
        a["tool_eraser"].triggered.connect(lambda: self.set_tool(TOOL_ERASER))
        a["tool_pan"].triggered.connect(lambda: self.set_tool(TOOL_PAN))
        a["tool_rectangle"].triggered.connect(lambda: self.set_tool(TOOL_RECTANGLE))
        a["tool_polygon"].triggered.connect(lambda: self.set_tool(TOOL_POLYGON))
        a["smaller_brush"].triggered.connect(lambda: self._active_canvas().step_brush_size(-1))
        a["larger_brush"].triggered.connect(lambda: self._active_canvas().step_brush_size(+1))
        a["clear_mask"].triggered.connect(self.clear_active_mask)
        a["region_brushed"].triggered.connect(lambda: self.set_region_source(BRUSHED))
        a["region_prediction"].triggered.connect(lambda: self.set_region_source(PREDICTION))
        a["region_ground_truth"].triggered.connect(lambda: self.set_region_source(GROUND_TRUTH))
        a["fit"].triggered.connect(self.fit_all)
        a["zoom_in"].triggered.connect(lambda: self._active_canvas().zoom_by(1.25))
        a["zoom_out"].triggered.connect(lambda: self._active_canvas().zoom_by(0.8))
        a["toggle_overlays"].toggled.connect(self.set_overlays_visible)
        a["toggle_prediction"].toggled.connect(self.query_panel.show_prediction.setChecked)
        a["toggle_ground_truth"].toggled.connect(self.query_panel.show_truth.setChecked)
        a["next_support"].triggered.connect(lambda: self.support_panel.select(self.support_panel.current_index() + 1))
        a["previous_support"].triggered.connect(lambda: self.support_panel.select(self.support_panel.current_index() - 1))
        a["predict"].triggered.connect(self.predict)
        a["explain"].triggered.connect(self.explain)
        a["cancel"].triggered.connect(self.cancel_jobs)
        a["clear_gpu_cache"].triggered.connect(self.release_model)
        a["shortcuts"].triggered.connect(self.show_shortcuts)
        a["about"].triggered.connect(self.show_about)
        qp = self.query_panel
        qp.region_group.idClicked.connect(
            lambda i: self.set_region_source((BRUSHED, PREDICTION, GROUND_TRUTH)[i]))
        qp.clear_region.clicked.connect(self.clear_region)
        qp.show_prediction.toggled.connect(self._update_query_layers)
        qp.show_truth.toggled.connect(self._update_query_layers)
        qp.show_prediction.toggled.connect(a["toggle_prediction"].setChecked)
        qp.show_truth.toggled.connect(a["toggle_ground_truth"].setChecked)
        qp.mask_opacity.valueChanged.connect(self._set_mask_opacity)
        self.query_canvas.strokeFinished.connect(self._on_region_stroke)
        self.query_canvas.hovered.connect(self._on_query_hover)
        self.query_canvas.brushSizeChanged.connect(self._on_canvas_brush_size)
        sp = self.support_panel
        sp.canvas.brushSizeChanged.connect(self._on_canvas_brush_size)
        sp.maskEdited.connect(self._on_support_mask_edited)
        sp.supportsChanged.connect(self._on_supports_changed)
        sp.filesDropped.connect(self.handle_paths)
        sp.addRequested.connect(self.add_supports_dialog)
        sp.maskFromFileRequested.connect(self.mask_from_file_dialog)
        pp = self.proto_panel
        pp.runRequested.connect(self.run_prototypes)
        pp.cancelRequested.connect(self.cancel_prototypes)
        pp.browseRequested.connect(self.choose_prototype_checkpoint)
        pp.errorRaised.connect(self.log_error)
        pp.detail_pane.attach_worker(self.worker, self.run_prototype_detail)
        pp.exported.connect(lambda files: self.log(f"prototypes: exported {len(files)} files"
                                                   + (f" to {Path(files[0]).parent}" if files else "")))
        self.heatmap_view.hovered.connect(self._show_hover)
        self.compare_view.hovered.connect(self._show_hover)
        self._autosaveDone.connect(self._on_autosave_done)
        self._ioDone.connect(self._on_io_done)
        self._last_canvas: ImageCanvas = self.query_canvas
        QApplication.instance().focusChanged.connect(self._on_focus_changed)

    def _optional_tab(self, module: str, class_name: str, title: str, missing: str) -> QWidget:
        """A tab owned by another part of the app, or a clear note when it is not installed."""
        import importlib

        widget: Optional[QWidget] = None
        try:
            widget_class = getattr(importlib.import_module(module), class_name)
            widget = widget_class(self)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
        except (AttributeError, TypeError) as exc:
            missing = f"{title}: could not create {module}.{class_name} ({exc})"
        if widget is None:
            widget = QLabel(missing)
            widget.setAlignment(Qt.AlignmentFlag.AlignCenter)
            widget.setWordWrap(True)
            self.tabs.addTab(widget, title)
            return widget
        # In a scroll area, so that another widget's minimum size cannot force the window wider.
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(widget)
        self.tabs.addTab(scroll, title)
        return widget

    def _build_run_toolbar(self) -> None:
        bar = QToolBar("Model and run", self)
        bar.setObjectName("run_toolbar")
        bar.setMovable(False)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        bar.addWidget(QLabel(" Model "))
        self.model_combo = QComboBox(self)
        self.model_combo.setMinimumContentsLength(16)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        bar.addWidget(self.model_combo)
        bar.addWidget(QLabel("  Checkpoint "))
        self.checkpoint_combo = QComboBox(self)
        self.checkpoint_combo.setMinimumContentsLength(18)
        self.checkpoint_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        bar.addWidget(self.checkpoint_combo)
        self.train_button = QToolButton(self)  # trains the current model (greyed when it cannot be trained)
        self.train_button.setText("Train…")
        self.train_button.clicked.connect(lambda: self.open_training_dialog(self.model_combo.currentData() or ""))
        bar.addWidget(self.train_button)
        bar.addWidget(QLabel("  Device "))
        self.device_combo = QComboBox(self)
        self.device_combo.setMinimumContentsLength(14)
        self.device_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        bar.addWidget(self.device_combo)
        bar.addSeparator()
        bar.addWidget(QLabel(" Explainer "))
        self.explainer_combo = QComboBox(self)
        self.explainer_combo.setMinimumContentsLength(16)
        self.explainer_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        bar.addWidget(self.explainer_combo)
        self.params_edit = QLineEdit(self)
        self.params_edit.setPlaceholderText("parameters, e.g. size=96")
        self.params_edit.setToolTip("Explainer parameters as name=value pairs separated by commas")
        self.params_edit.setFixedWidth(170)
        bar.addWidget(self.params_edit)
        bar.addSeparator()
        for name in ("predict", "explain", "cancel"):
            bar.addAction(self.actions[name])
        self.actions["predict"].setText("▶ Predict")
        self.actions["explain"].setText("✦ Explain R")
        self.actions["cancel"].setText("✕ Cancel")
        self.run_toolbar = bar
        self._fill_model_combo()
        self._fill_device_combo()
        self._fill_checkpoint_combo()
        self._fill_explainer_combo()
        self.explainer_combo.currentIndexChanged.connect(self._on_explainer_changed)
        self._on_explainer_changed()
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.checkpoint_combo.activated.connect(self._on_checkpoint_activated)
        self.device_combo.currentIndexChanged.connect(lambda _: self._update_device_label())
        self._update_train_button()

    def _build_edit_toolbar(self) -> None:
        self.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)
        bar = QToolBar("Editing", self)
        bar.setObjectName("edit_toolbar")
        bar.setMovable(False)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        a = self.actions
        a["tool_brush"].setText("Brush")
        a["tool_eraser"].setText("Eraser")
        a["tool_pan"].setText("Pan")
        a["tool_rectangle"].setText("Rectangle")
        a["tool_polygon"].setText("Polygon")
        for name in ("tool_brush", "tool_eraser", "tool_rectangle", "tool_polygon", "tool_pan"):
            bar.addAction(a[name])
        bar.addWidget(QLabel("  brush "))
        self.brush_spin = QSpinBox(self)
        self.brush_spin.setRange(1, 400)
        self.brush_spin.setSuffix(" px")
        self.brush_spin.setToolTip("Brush diameter in image pixels ([ and ], Ctrl+wheel)")
        bar.addWidget(self.brush_spin)
        bar.addWidget(QLabel("  eraser "))
        self.eraser_spin = QSpinBox(self)
        self.eraser_spin.setRange(1, 400)
        self.eraser_spin.setSuffix(" px")
        self.eraser_spin.setToolTip("Eraser diameter in image pixels (its own size)")
        bar.addWidget(self.eraser_spin)
        bar.addSeparator()
        a["undo"].setText("Undo")
        a["redo"].setText("Redo")
        bar.addAction(a["undo"])
        bar.addAction(a["redo"])
        bar.addSeparator()
        a["fit"].setText("Fit")
        bar.addAction(a["fit"])
        a["toggle_overlays"].setText("Overlays")
        bar.addAction(a["toggle_overlays"])
        self.edit_hint = QLabel("")
        bar.addWidget(self.edit_hint)
        self.brush_spin.valueChanged.connect(lambda v: self._set_size(TOOL_BRUSH, v))
        self.eraser_spin.valueChanged.connect(lambda v: self._set_size(TOOL_ERASER, v))
        self.edit_toolbar = bar

    def _build_menus(self) -> None:
        a = self.actions
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(a["open_episode"])
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.demo_menu = file_menu.addMenu("Open de&mo episode")
        file_menu.addAction(a["save_episode"])
        file_menu.addAction(a["save_episode_as"])
        notes = QAction("Episode &notes…", self)
        notes.triggered.connect(self.edit_notes)
        file_menu.addAction(notes)
        file_menu.addSeparator()
        replace_query = QAction("Replace query &image…", self)
        replace_query.triggered.connect(self.replace_query_dialog)
        file_menu.addAction(replace_query)
        file_menu.addAction(a["choose_checkpoint"])
        folder = QAction("Checkpoint &folder…", self)
        folder.triggered.connect(self.choose_checkpoint_folder)
        file_menu.addAction(folder)
        file_menu.addSeparator()
        file_menu.addAction(a["quit"])
        edit_menu = menu.addMenu("&Edit")
        for name in ("undo", "redo", None, "tool_brush", "tool_eraser", "tool_rectangle", "tool_polygon", "tool_pan",
                     "smaller_brush",
                     "larger_brush", None, "clear_mask"):
            edit_menu.addSeparator() if name is None else edit_menu.addAction(a[name])
        region_menu = menu.addMenu("&Region")
        for name in ("region_brushed", "region_prediction", "region_ground_truth"):
            region_menu.addAction(a[name])
        view_menu = menu.addMenu("&View")
        for name in ("fit", "zoom_in", "zoom_out", None, "toggle_overlays", "toggle_prediction",
                     "toggle_ground_truth", None, "next_support", "previous_support"):
            view_menu.addSeparator() if name is None else view_menu.addAction(a[name])
        view_menu.addSeparator()
        view_menu.addAction(self.log_dock.toggleViewAction())
        theme_menu = view_menu.addMenu("&Theme")
        self.theme_actions: dict[str, QAction] = {}
        theme_group = QActionGroup(self)
        for name, text in ((THEME_SYSTEM, "Follow the &system"), (THEME_LIGHT, "&Light"), (THEME_DARK, "&Dark")):
            action = theme_menu.addAction(text)
            action.setCheckable(True)
            action.triggered.connect(lambda _=False, n=name: self.set_theme(n))
            theme_group.addAction(action)
            self.theme_actions[name] = action
        hints = QApplication.instance().styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(self._on_system_scheme_changed)
        run_menu = menu.addMenu("R&un")
        for name in ("predict", "explain", "cancel", None, "clear_gpu_cache"):
            run_menu.addSeparator() if name is None else run_menu.addAction(a[name])
        run_menu.addSeparator()
        self.train_action = QAction("&Train a model…", self)
        self.train_action.setToolTip("Train a model without published weights (SimPropNet, I²R) on a dataset folder")
        self.train_action.triggered.connect(lambda: self.open_training_dialog(self.model_combo.currentData() or ""))
        run_menu.addAction(self.train_action)
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(a["shortcuts"])
        help_menu.addAction(a["about"])
        self._fill_recent_menu()
        self._fill_demo_menu()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.hover_label = QLabel("")
        self.hover_label.setMinimumWidth(260)
        self.job_label = QLabel("")
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFixedWidth(180)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setVisible(False)
        self.device_label = QLabel("")
        self.device_label.setToolTip("The device the model actually runs on")
        # a training run outlives its (non-modal) dialog: this says how it goes and reopens it
        self.training_status_button = QToolButton(self)
        self.training_status_button.setAutoRaise(True)
        self.training_status_button.setToolTip("Show the training window")
        self.training_status_button.setVisible(False)
        self.training_status_button.clicked.connect(lambda: self.open_training_dialog())
        bar.addPermanentWidget(self.training_status_button)
        bar.addPermanentWidget(self.hover_label)
        bar.addPermanentWidget(self.job_label)
        bar.addPermanentWidget(self.progress_bar)
        bar.addPermanentWidget(self.device_label)

    # ======================================================================== pickers
    def _fill_model_combo(self) -> None:
        from ..models.registry import DEFAULT_MODEL, TASK_FSS, list_models

        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        try:
            entries = list_models(TASK_FSS)
        except Exception as exc:  # a broken model module must not keep the window from opening
            entries = []
            self.log_error(f"could not list models: {exc}")
        for entry in entries:
            label = entry.name + ("  (needs checkpoint)" if entry.needs_checkpoint else "")
            self.model_combo.addItem(label, entry.name)
            tip = entry.description + (f"\nCheckpoint: {entry.checkpoint_format}" if entry.checkpoint_format else "")
            self.model_combo.setItemData(self.model_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        wanted = self.settings.model or DEFAULT_MODEL
        index = self.model_combo.findData(wanted)
        if index < 0:
            index = self.model_combo.findData(DEFAULT_MODEL)
        self.model_combo.setCurrentIndex(max(0, index))
        self.model_combo.blockSignals(False)

    def _fill_device_combo(self) -> None:
        import torch

        self.device_combo.blockSignals(True)
        self.device_combo.clear()
        cuda = torch.cuda.is_available()
        self.device_combo.addItem("auto", "auto")
        self.device_combo.setItemData(0, "CUDA when available, else the CPU (the status bar says which)",
                                      Qt.ItemDataRole.ToolTipRole)
        self.device_combo.addItem("CPU", "cpu")
        if cuda:
            for i in range(torch.cuda.device_count()):
                self.device_combo.addItem(f"cuda:{i} {torch.cuda.get_device_name(i)}", f"cuda:{i}")
        else:
            self.device_combo.addItem("CUDA (not available)", "cuda")
            item = self.device_combo.model().item(self.device_combo.count() - 1)
            item.setEnabled(False)
            item.setToolTip("torch reports no usable CUDA device on this machine")
        index = self.device_combo.findData(self.settings.device)
        self.device_combo.setCurrentIndex(max(0, index))
        self.device_combo.blockSignals(False)

    def _fill_checkpoint_combo(self, select: Optional[str] = None) -> None:
        combo = self.checkpoint_combo
        current = select if select is not None else combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("(no checkpoint)", None)
        seen: set[str] = set()
        paths = list(self.settings.recent_checkpoints)
        folder = Path(self.settings.checkpoint_dir) if self.settings.checkpoint_dir else None
        if folder is not None and folder.is_dir():
            from ..drops import CHECKPOINT_SUFFIXES

            paths += [str(p.resolve()) for p in sorted(folder.iterdir()) if p.suffix.lower() in CHECKPOINT_SUFFIXES]
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            combo.addItem(Path(path).name, path)
            combo.setItemData(combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        combo.addItem("Browse…", "__browse__")
        index = combo.findData(current) if current else 0
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(False)
        self._update_checkpoint_hint()

    def _fill_explainer_combo(self) -> None:
        names = available_explainers()
        names += [n for n in self.explainer_factories if n not in names]
        self.explainer_combo.clear()
        if not names:
            self.explainer_combo.addItem("(no explainers installed)", None)
            self.explainer_combo.setEnabled(False)
            return
        self.explainer_combo.setEnabled(True)
        for name in names:
            self.explainer_combo.addItem(name, name)
        wanted = self.settings.explainer or DEFAULT_EXPLAINER
        index = self.explainer_combo.findData(wanted)
        if index < 0:
            index = self.explainer_combo.findData(DEFAULT_EXPLAINER)
        self.explainer_combo.setCurrentIndex(max(0, index))
        self._update_explainer_availability()

    def explainer_unavailable_reason(self, name: str) -> str:
        """Why ``name`` cannot explain the current model ("" when it can)."""
        entry = self._current_entry()
        key = (entry.name if entry is not None else "", name)
        cache = self._availability_cache
        if key not in cache:
            try:
                cache[key] = explainers.explainer_unavailable_reason(name, entry, self.explainer_factories,
                                                               self._specific_explainers())
            except Exception as exc:  # noqa: BLE001 - a broken registry must not break the picker
                self.log_error(f"could not check explainer {name}: {exc}")
                cache[key] = ""
        return cache[key]

    def _specific_explainers(self) -> dict[str, tuple[str, ...]]:
        if self._specific_cache is None:
            try:
                self._specific_cache = explainers.model_specific_explainers()
            except Exception as exc:  # noqa: BLE001
                self.log_error(f"could not list model-specific explainers: {exc}")
                self._specific_cache = {}
        return self._specific_cache

    def _update_explainer_availability(self) -> None:
        """Grey out the explainers the current model cannot use, with the reason as tooltip;
        move the selection off an unavailable one (and say so)."""
        combo = self.explainer_combo
        model = combo.model()
        entry = self._current_entry()
        for i in range(combo.count()):
            name = combo.itemData(i)
            if not name:
                continue
            reason = self.explainer_unavailable_reason(name)
            item = model.item(i)
            item.setEnabled(not reason)
            item.setToolTip(f"Not available for {entry.name if entry else 'this model'}: {reason}" if reason
                            else self._explainer_summary(name))
        current = combo.currentData()
        if current and self.explainer_unavailable_reason(current):
            candidates = [DEFAULT_EXPLAINER] + [combo.itemData(i) for i in range(combo.count())]
            for name in candidates:
                index = combo.findData(name)
                if index >= 0 and model.item(index).isEnabled():
                    combo.setCurrentIndex(index)
                    self.log(f"{current} does not apply to {entry.name if entry else 'this model'}: "
                             f"switched the explainer to {name}")
                    break
        self._update_actions()

    def _explainer_summary(self, name: str) -> str:
        if name in self.explainer_factories:
            doc = getattr(self.explainer_factories[name], "__doc__", "") or ""
        else:
            try:
                from ..explain.registry import _factory

                factory = _factory(name)
                doc = getattr(getattr(factory, "target", factory), "__doc__", "") or ""
            except (ImportError, FssguiError):
                doc = ""
        first = " ".join(doc.strip().split("\n\n")[0].split()) if doc.strip() else ""
        return f"{name}: {first}" if first else name

    def _on_explainer_changed(self, _index: int = 0) -> None:
        name = self.explainer_combo.currentData()
        names: list[str] = []
        if name and name not in self.explainer_factories:
            try:
                from ..explain.registry import explainer_parameters

                names = explainer_parameters(name)
            except (ImportError, FssguiError):
                names = []
        tip = "Explainer parameters as name=value pairs separated by commas"
        if names:
            tip += f"\n{name} accepts: {', '.join(names)}"
        self.params_edit.setToolTip(tip)
        self.params_edit.setPlaceholderText(f"e.g. {names[0]}=…" if names else "parameters (name=value, …)")
        reason = self.explainer_unavailable_reason(name) if name else ""
        self.explainer_combo.setToolTip(reason or (self._explainer_summary(name) if name else ""))
        self._update_actions()

    def set_explainer_factories(self, factories: dict[str, Callable[..., Any]]) -> None:
        self.explainer_factories = dict(factories)
        self._availability_cache.clear()
        self._fill_explainer_combo()

    def _on_model_changed(self, _index: int) -> None:
        self._update_checkpoint_hint()
        self._update_train_button()
        self._update_explainer_availability()
        self._mark_inputs_changed(supports=False, note="the model changed since this explanation")

    def _update_checkpoint_hint(self) -> None:
        entry = self._current_entry()
        if entry is None:
            return
        needs = entry.needs_checkpoint
        tip = f"{entry.name}: " + (entry.checkpoint_format or ("needs a checkpoint" if needs else "no checkpoint needed"))
        self.checkpoint_combo.setToolTip(tip)
        if needs and self.checkpoint_combo.currentData() is None:
            self.checkpoint_combo.setStyleSheet("QComboBox { color: #d9822b; }")
        else:
            self.checkpoint_combo.setStyleSheet("")

    def _current_entry(self):
        from ..models.registry import get_entry

        name = self.model_combo.currentData()
        if not name:
            return None
        try:
            return get_entry(name)
        except FssguiError:
            return None

    def _on_checkpoint_activated(self, index: int) -> None:
        if self.checkpoint_combo.itemData(index) == "__browse__":
            self.choose_checkpoint()
        else:
            self._update_checkpoint_hint()

    def set_checkpoint(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        self.settings.add_recent_checkpoint(path)
        self._fill_checkpoint_combo(select=path)
        self.log(f"checkpoint: {path}")

    def choose_checkpoint(self) -> None:
        start = self.settings.checkpoint_dir or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a checkpoint", start, "Checkpoints (*.pt *.pth *.ckpt *.tar *.bin *.safetensors);;All files (*)")
        if path:
            self.set_checkpoint(path)
        else:
            self._fill_checkpoint_combo()

    def choose_checkpoint_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Checkpoint folder", self.settings.checkpoint_dir)
        if folder:
            self.settings.checkpoint_dir = folder
            self._fill_checkpoint_combo()
            self.log(f"checkpoint folder: {folder}")

    # ======================================================================== training
    def _update_train_button(self) -> None:
        """Enabled for the models ``fssgui train`` can train; otherwise greyed, saying why."""
        entry = self._current_entry()
        trainable = entry is not None and entry.extra.get("trainer") is not None
        self.train_button.setEnabled(trainable)
        if trainable:
            self.train_button.setToolTip(f"Train {entry.name} on your dataset (Run > Train a model…)")
        else:
            from ..train_setup import trainable_entries

            names = ", ".join(e.name for e in trainable_entries()) or "none installed"
            self.train_button.setToolTip(f"{entry.name if entry else 'This model'} cannot be trained here (it uses "
                                         f"published weights or needs none). Trainable: {names}")

    def _show_training_summary(self, text: str) -> None:
        self.training_status_button.setText(text)
        self.training_status_button.setVisible(bool(text))

    def open_training_dialog(self, model: str = ""):
        """Show the training dialog (one per window; a running training survives closing it)."""
        from ..train_setup import is_trainable
        from .train_dialog import TrainingDialog

        dialog = getattr(self, "_train_dialog", None)
        if dialog is None:
            dialog = TrainingDialog(self.settings, self, model=model if is_trainable(model) else "")
            dialog.checkpointChosen.connect(self.use_trained_checkpoint)
            dialog.runFinished.connect(lambda state: self.log(f"training {state}: {dialog.status_label.text()}"))
            dialog.summaryChanged.connect(self._show_training_summary)
            self._train_dialog = dialog
        elif model and not dialog.is_running() and is_trainable(model):
            dialog.set_model(model)
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()
        return dialog

    def use_trained_checkpoint(self, model: str, path: str) -> None:
        """Select ``model`` and the trained checkpoint ``path`` (rebuilt from its config.json)."""
        index = self.model_combo.findData(model)
        if index < 0:
            self.log_error(f"model {model} is not in the model list")
            return
        self.model_combo.setCurrentIndex(index)
        self.set_checkpoint(path)

    def model_spec(self) -> ModelSpec:
        checkpoint = self.checkpoint_combo.currentData()
        if checkpoint == "__browse__":
            checkpoint = None
        return ModelSpec(self.model_combo.currentData() or "", checkpoint, self.device_combo.currentData() or "auto")

    # ======================================================================== settings
    def set_theme(self, theme: str) -> str:
        """Light, dark, or follow the OS ("system"); returns the theme in effect."""
        if theme not in THEMES:
            theme = THEME_SYSTEM
        self.settings.theme = theme
        if self._applying_scheme:
            return self.effective_theme
        self._applying_scheme = True
        try:
            self.effective_theme = apply_theme(theme)
        finally:
            self._applying_scheme = False
        self.theme_actions[theme].setChecked(True)
        return self.effective_theme

    def _on_system_scheme_changed(self, *_args) -> None:
        if self.settings.theme == THEME_SYSTEM and not self._applying_scheme:
            self.set_theme(THEME_SYSTEM)

    def _apply_settings(self) -> None:
        s = self.settings
        self.set_theme(s.theme)
        self.display.update(colormap=s.colormap, signed_colormap=s.signed_colormap, opacity=s.heat_opacity,
                            clip_percent=s.clip_percent)
        dc = self.display_controls
        dc.colormap.setCurrentText(s.colormap)
        dc.signed_colormap.setCurrentText(s.signed_colormap)
        dc.opacity.setValue(round(s.heat_opacity * 100))
        dc.clip.setValue(s.clip_percent)
        self.brush_spin.setValue(s.brush_size)
        self.eraser_spin.setValue(s.eraser_size)
        self.query_panel.mask_opacity.setValue(round(s.mask_opacity * 100))
        self._set_mask_opacity(round(s.mask_opacity * 100))
        self.set_tool(TOOL_BRUSH)
        if s.proto_model:
            self.proto_panel.set_model(s.proto_model)
        if s.proto_checkpoint and Path(s.proto_checkpoint).is_file():
            self.proto_panel.set_checkpoint(s.proto_checkpoint)
        self.proto_panel.size_spin.setValue(max(0, int(s.proto_size)))
        if s.proto_dataset_dir and Path(s.proto_dataset_dir).is_dir():
            self.proto_panel.detail_pane.set_dataset_folder(s.proto_dataset_dir, announce=False)
        if s.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(s.window_geometry.encode()))
        if s.window_state:
            self.restoreState(QByteArray.fromBase64(s.window_state.encode()))

    def _store_settings(self) -> None:
        s = self.settings
        s.model = self.model_combo.currentData() or s.model
        s.device = self.device_combo.currentData() or "auto"
        if self.explainer_combo.currentData():
            s.explainer = self.explainer_combo.currentData()
        s.colormap = self.display.colormap
        s.signed_colormap = self.display.signed_colormap
        s.heat_opacity = float(self.display.opacity)
        s.clip_percent = float(self.display.clip_percent)
        s.brush_size = int(self.brush_spin.value())
        s.eraser_size = int(self.eraser_spin.value())
        s.mask_opacity = self.query_panel.mask_opacity.value() / 100.0
        s.proto_model = self.proto_panel.model_name or s.proto_model
        s.proto_checkpoint = self.proto_panel.checkpoint
        s.proto_size = int(self.proto_panel.size_spin.value())
        s.proto_dataset_dir = self.proto_panel.detail_pane.dataset_folder or s.proto_dataset_dir
        s.window_geometry = bytes(self.saveGeometry().toBase64()).decode()
        s.window_state = bytes(self.saveState().toBase64()).decode()
        try:
            s.save()
        except OSError as exc:
            self.log_error(f"could not save settings to {s.path()}: {exc}")

    # ========================================================================= logging
    def log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log_view.appendHtml(f"<span style='color:#888'>{stamp}</span> {html.escape(text)}")

    def log_error(self, text: str, details: str = "") -> None:
        """An error the user must see: log pane (red), status bar; the window keeps running."""
        self.errors.append(text)
        stamp = time.strftime("%H:%M:%S")
        self.log_view.appendHtml(f"<span style='color:#888'>{stamp}</span> "
                                 f"<span style='color:#e0464e'><b>error:</b> {html.escape(text)}</span>")
        if details:
            self.log_view.appendHtml(f"<pre style='color:#999'>{html.escape(details.rstrip())}</pre>")
        self.statusBar().showMessage(f"Error: {text}", 15000)
        if not self.log_dock.isVisible():
            self.log_dock.show()
        self.errorReported.emit(text)

    def _show_hover(self, text: str) -> None:
        self.hover_label.setText(text)

    # ========================================================================= episode
    def set_episode(self, episode: Episode, source: Optional[Path] = None, dirty: bool = False) -> None:
        """Show ``episode`` (it is copied into the editors)."""
        self.query_image = episode.query_image.copy()
        # never edited in place: jobs and results share this array instead of copying it
        self.query_mask = None if episode.query_mask is None else episode.query_mask.copy()
        self.class_name = episode.class_name
        self.episode_notes = episode.notes  # saved back as NOTES.md (File ▸ Episode notes)
        self.source_folder = Path(source) if source is not None else None
        has_region = episode.region is not None and bool(np.any(episode.region))
        region = episode.region if has_region else np.zeros(self.query_image.shape[:2], dtype=bool)
        self.region = EditableMask(region)
        self.region_source = BRUSHED if has_region else PREDICTION
        self.region_note = "from the episode file" if has_region else ""
        self.prediction = None
        self.query_canvas.set_image(self.query_image, fit=True)
        self.query_canvas.set_mask(self.region, REGION_COLOUR)
        self.query_canvas.set_layer_opacity("mask", self.query_panel.mask_opacity.value() / 100.0)
        self.support_panel.set_supports(episode.supports)
        self.support_panel.canvas.set_layer_opacity("mask", self.query_panel.mask_opacity.value() / 100.0)
        self._apply_tool_to_canvases()
        self.heatmap_view.clear()
        self._episode_serial += 1
        shown = self.proto_panel.result
        if shown is not None and image_key(self.query_image) != shown.image_key:
            self.proto_panel.mark_stale("computed on a previous query image: press Run on query again")
        self.dirty = dirty
        self.edit_revision += 1
        self.support_version = 0
        self._update_query_layers()
        self._update_region_ui()
        self._update_title()
        self._update_actions()
        name = self.source_folder.name if self.source_folder else "new episode"
        self.log(f"episode {name}: query {self.query_image.shape[1]}x{self.query_image.shape[0]}, "
                 f"K = {self.support_panel.count()}" + (f", class {self.class_name}" if self.class_name else "")
                 + ("" if self.query_mask is not None else ", no ground truth"))
        if self.episode_notes.strip():
            first = self.episode_notes.strip().splitlines()[0].lstrip("# ").strip()
            self.log(f"episode notes: {first} … (File ▸ Episode notes)")

    def has_episode(self) -> bool:
        return self.query_image is not None

    def current_episode(self) -> Episode:
        """A copy of the episode as edited (region only when it has pixels)."""
        if self.query_image is None:
            raise FssguiError("no episode is open: open one with File ▸ Open episode (Ctrl+O)")
        region = self.region.as_bool() if self.region is not None and self.region.count() else None
        return Episode(
            self.query_image,
            self.support_panel.supports(),
            self.class_name,
            None if self.query_mask is None else self.query_mask.copy(),
            region,
            self.source_folder,
            self.episode_notes,
        )

    # ------------------------------------------------------------------ episode I/O thread
    def _in_background(self, work: Callable[[], Any], done: Callable[[Any, Optional[BaseException], str], None]) -> None:
        """Run ``work()`` on the episode I/O thread; ``done(result, error, traceback)`` runs in the
        GUI thread afterwards (through a queued signal)."""
        import traceback

        self._io_pending += 1

        def run() -> None:
            try:
                result, error, trace = work(), None, ""
            except Exception as exc:  # noqa: BLE001 - every error reaches the log pane
                result, error, trace = None, exc, traceback.format_exc()
            self._ioDone.emit((done, result, error, trace))

        self._autosave_pool.submit(run)

    def _on_io_done(self, payload: tuple) -> None:
        done, result, error, trace = payload
        self._io_pending -= 1
        done(result, error, trace)

    def _wait_until(self, finished: Callable[[], bool]) -> None:
        """Keep the event loop running (the window repaints) until ``finished()``."""
        from PySide6.QtCore import QEventLoop

        loop = QEventLoop()
        timer = QTimer()
        timer.timeout.connect(lambda: finished() and loop.quit())
        timer.start(10)
        if not finished():
            loop.exec()
        timer.stop()

    @staticmethod
    def _io_message(path: Path, error: BaseException) -> str:
        if isinstance(error, FssguiError):
            return str(error)
        return f"{path}: {type(error).__name__}: {error}"

    def open_episode(self, path: str | Path, wait: bool = False) -> bool:
        """Open an episode folder: read on the episode I/O thread, shown when read.

        Returns True when the read started (``wait=False``) or when the episode is shown
        (``wait=True``). ``episodeOpened`` / ``episodeOpenFailed`` say how it ended; errors go to
        the log pane. A newer open request supersedes an older one still reading."""
        path = Path(path)
        self._open_request += 1
        request = self._open_request
        outcome: dict[str, bool] = {}
        self.statusBar().showMessage(f"Opening {path}…")
        self.job_label.setText(f"opening {path.name}…")

        def done(episode: Optional[Episode], error: Optional[BaseException], trace: str) -> None:
            if request != self._open_request:
                outcome["ok"] = False
                self.log(f"{path}: superseded by a newer open request")
                return
            self.job_label.setText("" if not self.worker.is_busy else self.job_label.text())
            if error is not None:
                outcome["ok"] = False
                message = self._io_message(path, error)
                self.log_error(f"could not open the episode: {message}",
                               "" if isinstance(error, FssguiError) else trace)
                self.episodeOpenFailed.emit(message)
                return
            folder = path if path.is_dir() else path.parent
            self.set_episode(episode, folder)
            self.settings.add_recent_episode(folder)
            self._fill_recent_menu()
            self._autosave_pool.submit(self.autosave.discard)  # after any queued autosave write
            self.statusBar().showMessage(f"Opened {folder}", 3000)
            outcome["ok"] = True
            self.episodeOpened.emit(str(folder))

        self._in_background(lambda: load_episode(path), done)
        if not wait:
            return True
        self._wait_until(lambda: "ok" in outcome)
        return outcome["ok"]

    def open_episode_dialog(self) -> None:
        if not self._confirm_discard():
            return
        start = str(self.source_folder.parent) if self.source_folder else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open an episode folder", start)
        if folder:
            self.open_episode(folder)

    def open_default_demo(self, wait: bool = False) -> bool:
        from ..resources import default_demo_episode

        try:
            path = default_demo_episode()
        except FileNotFoundError as exc:
            self.log_error(str(exc))
            return False
        return self.open_episode(path, wait=wait)

    def save_episode(self, wait: bool = False) -> bool:
        if self.source_folder is None or self._is_demo(self.source_folder):
            return self.save_episode_as(wait=wait)
        return self._save_to(self.source_folder, wait=wait)

    def save_episode_as(self, wait: bool = False) -> bool:
        if not self.has_episode():
            return False
        start = str((self.source_folder.parent if self.source_folder else Path.home()) / "episode")
        path, _ = QFileDialog.getSaveFileName(self, "Save the episode as a folder", start, "Episode folder (*)")
        if not path:
            return False
        return self._save_to(Path(path), wait=wait)

    def _save_to(self, folder: Path, wait: bool = False) -> bool:
        """Save a snapshot of the episode as edited now, on the episode I/O thread.

        Returns True when the write started (``wait=False``) or succeeded (``wait=True``);
        ``episodeSaved`` / ``episodeSaveFailed`` say how it ended. Edits made while the write
        runs stay unsaved (the title keeps its star)."""
        folder = Path(folder)
        try:
            episode = self.current_episode()
        except FssguiError as exc:
            self.log_error(f"not saved: {exc}")
            return False
        revision, serial = self.edit_revision, self._episode_serial
        outcome: dict[str, bool] = {}
        self.statusBar().showMessage(f"Saving {folder}…")

        def done(_result: Any, error: Optional[BaseException], trace: str) -> None:
            if error is not None:
                outcome["ok"] = False
                message = self._io_message(folder, error)
                self.log_error(f"not saved: {message}", "" if isinstance(error, (FssguiError, OSError)) else trace)
                self.episodeSaveFailed.emit(message)
                if not self.unattended:
                    QMessageBox.warning(self, "Episode not saved", message)
                return
            outcome["ok"] = True
            self.settings.add_recent_episode(folder)
            self._fill_recent_menu()
            if serial == self._episode_serial:
                self.source_folder = folder
                if revision == self.edit_revision and episode.notes == self.episode_notes:
                    self.dirty = False
                    self._autosave_pool.submit(self.autosave.discard)
                else:
                    self.log("edits made while saving are not in the saved file yet (the title keeps its *)")
                self._update_title()
            self.log(f"saved {folder}")
            self.statusBar().showMessage(f"Saved {folder}", 3000)
            self.episodeSaved.emit(str(folder))

        self._in_background(lambda: save_episode(episode, folder), done)
        if not wait:
            return True
        self._wait_until(lambda: "ok" in outcome)
        return outcome["ok"]

    @staticmethod
    def _is_demo(folder: Path) -> bool:
        from ..resources import demo_dir

        try:
            return Path(folder).resolve().is_relative_to(demo_dir().resolve())
        except OSError:
            return False

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_episodes:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self._confirm_discard() and self.open_episode(p))
        self.recent_menu.setEnabled(bool(self.settings.recent_episodes))

    def _fill_demo_menu(self) -> None:
        from ..resources import demo_episodes

        self.demo_menu.clear()
        for path in demo_episodes():
            action = self.demo_menu.addAction(path.name)
            action.triggered.connect(lambda _=False, p=path: self._confirm_discard() and self.open_episode(p))
        self.demo_menu.setEnabled(bool(self.demo_menu.actions()))

    def replace_query_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Query image", str(Path.home()),
                                              "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp)")
        if path:
            self.replace_query(Path(path))

    def replace_query(self, path: Path) -> None:
        """A new query image: ground truth, region and prediction are cleared (they belonged to the old one)."""
        try:
            image = load_rgb(path)
        except ImageError as exc:
            self.log_error(str(exc))
            return
        supports = self.support_panel.supports() if self.support_panel.count() else []
        episode = Episode(image, supports, self.class_name, None, None, None, self.episode_notes)
        self.set_episode(episode, None, dirty=True)
        self._schedule_autosave()

    # -------------------------------------------------------------------------- dropping
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        event.acceptProposedAction()
        self.handle_paths(paths)

    def handle_paths(self, paths: list[Path]) -> None:
        """Dropped files: episodes open, checkpoints are selected, images become supports."""
        plan = classify_drop([Path(p) for p in paths])
        for path in plan.ignored:
            self.log(f"ignored {path}: not an image, mask, checkpoint or episode folder")
        if plan.episodes:
            if len(plan.episodes) > 1:
                self.log(f"several episodes dropped: opening {plan.episodes[0]} only")
            if self._confirm_discard():
                self.open_episode(plan.episodes[0])
        for checkpoint in plan.checkpoints[:1]:
            self.set_checkpoint(checkpoint)
        if (plan.supports or plan.lone_masks) and not self.has_episode():
            self.log_error("open an episode first: supports need a query (File ▸ Open, or drop an episode folder)")
            return
        for image_path, mask_path in plan.supports:
            try:
                image = load_rgb(image_path)
                mask = load_mask(mask_path) if mask_path is not None else None
            except ImageError as exc:
                self.log_error(str(exc))
                continue
            if mask is not None and mask.shape != image.shape[:2]:
                self.log_error(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but {image_path.name} is "
                               f"{image.shape[1]}x{image.shape[0]}; added the image with an empty mask")
                mask = None
            index = self.support_panel.add(image, mask, image_path.name)
            note = f"mask {mask_path.name}" if mask is not None else "empty mask: brush it"
            self.log(f"support {index + 1} added from {image_path.name} ({note})")
        for mask_path in plan.lone_masks:
            self.apply_mask_file(mask_path)

    def apply_mask_file(self, mask_path: Path) -> None:
        index = self.support_panel.current_index()
        if index < 0:
            self.log_error(f"{mask_path}: select the support whose mask it replaces first")
            return
        try:
            mask = load_mask(mask_path)
            self.support_panel.replace_mask(index, mask)
        except (ImageError, ValueError) as exc:
            self.log_error(f"{mask_path}: {exc}")
            return
        self.log(f"support {index + 1}: mask replaced from {mask_path.name} (Ctrl+Z undoes)")

    def add_supports_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add support images (and their masks)", str(Path.home()),
                                                "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp)")
        if paths:
            self.handle_paths([Path(p) for p in paths])

    def mask_from_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Mask PNG for the selected support", str(Path.home()),
                                              "Masks (*.png *.bmp *.tif *.tiff)")
        if path:
            self.apply_mask_file(Path(path))

    # ========================================================================= editing
    def set_tool(self, tool: str) -> None:
        self._tool = tool
        self.actions[TOOL_ACTIONS[tool]].setChecked(True)
        self._apply_tool_to_canvases()
        hint = {TOOL_BRUSH: "left drag paints, right drag erases", TOOL_ERASER: "left drag erases",
                TOOL_RECTANGLE: "left drag adds a rectangle, right drag removes one",
                TOOL_POLYGON: "click the vertices (right clicks remove); double click or Enter closes, Esc cancels",
                TOOL_PAN: "drag to pan; wheel zooms"}[tool]
        self.edit_hint.setText(f"   {hint} · wheel zooms · Space+drag pans")

    def _apply_tool_to_canvases(self) -> None:
        tool = getattr(self, "_tool", TOOL_BRUSH)
        for canvas in (self.query_canvas, self.support_panel.canvas):
            canvas.set_tool(tool)
            canvas.set_brush_size(self.brush_spin.value(), TOOL_BRUSH)
            canvas.set_brush_size(self.eraser_spin.value(), TOOL_ERASER)

    def _set_size(self, tool: str, size: int) -> None:
        for canvas in (self.query_canvas, self.support_panel.canvas):
            canvas.set_brush_size(size, tool)

    def _on_canvas_brush_size(self, tool: str, size: int) -> None:
        spin = self.brush_spin if tool == TOOL_BRUSH else self.eraser_spin
        if spin.value() != size:
            spin.setValue(size)

    def _set_mask_opacity(self, value: int) -> None:
        for canvas in (self.query_canvas, self.support_panel.canvas):
            canvas.set_layer_opacity("mask", value / 100.0)

    def set_overlays_visible(self, visible: bool) -> None:
        for canvas in (self.query_canvas, self.support_panel.canvas):
            canvas.set_overlays_visible(visible)
        for tile in self.heatmap_view.grid.tiles + self.compare_view.tiles:
            tile.canvas.set_overlays_visible(visible)
        if self.actions["toggle_overlays"].isChecked() != visible:
            self.actions["toggle_overlays"].setChecked(visible)

    def fit_all(self) -> None:
        for canvas in (self.query_canvas, self.support_panel.canvas):
            canvas._auto_fit = True
            canvas.fit()
        for tile in self.heatmap_view.grid.tiles + self.compare_view.tiles:
            tile.canvas._auto_fit = True
            tile.canvas.fit()

    def _on_focus_changed(self, _old, new) -> None:
        for canvas in (self.query_canvas, self.support_panel.canvas):
            if new is canvas or (new is not None and canvas.isAncestorOf(new)):
                self._last_canvas = canvas

    def _active_canvas(self) -> ImageCanvas:
        return self._last_canvas

    def undo(self) -> None:
        canvas = self._active_canvas()
        if canvas.mask is None or canvas.mask.undo() is None:
            self.statusBar().showMessage("Nothing to undo", 2000)
            return
        self._after_mask_change(canvas)

    def redo(self) -> None:
        canvas = self._active_canvas()
        if canvas.mask is None or canvas.mask.redo() is None:
            self.statusBar().showMessage("Nothing to redo", 2000)
            return
        self._after_mask_change(canvas)

    def clear_active_mask(self) -> None:
        canvas = self._active_canvas()
        if canvas.mask is not None and canvas.mask.clear() is not None:
            self._after_mask_change(canvas)

    def _after_mask_change(self, canvas: ImageCanvas) -> None:
        if canvas is self.query_canvas:
            self._on_region_stroke("edit")
        else:
            self.support_panel._on_mask_edited(self.support_panel.current_index())

    def _on_region_stroke(self, _kind: str) -> None:
        self._last_canvas = self.query_canvas
        if self.region_source != BRUSHED:
            self.region_note = f"started from the {region_title(self.region_source)}"
            self.region_source = BRUSHED
        self._mark_inputs_changed(supports=False, note="region R was edited since this explanation")
        self._update_region_ui()

    def _on_support_mask_edited(self, index: int) -> None:
        self._last_canvas = self.support_panel.canvas
        self.support_version += 1
        self.prediction = None  # the prediction depends on the support masks
        self._update_query_layers()
        self._mark_inputs_changed(supports=True, note=f"support {index + 1}'s mask was edited since this explanation")

    def _on_supports_changed(self) -> None:
        self.support_version += 1
        self.prediction = None
        self._update_query_layers()
        self._apply_tool_to_canvases()
        self._mark_inputs_changed(supports=True, note="the support set changed since this explanation")

    def _mark_inputs_changed(self, supports: bool, note: str) -> None:
        if self._applying_result or not self.has_episode():
            return
        self.edit_revision += 1
        self.dirty = True
        if self.last_result is not None:
            self.heatmap_view.set_stale(note + " (Ctrl+E to rerun)")
        self._schedule_autosave()
        self._update_title()
        self._update_actions()

    # --------------------------------------------------------------------------- region
    def set_region_source(self, source: str) -> None:
        if not self.has_episode():
            return
        if source == GROUND_TRUTH and self.query_mask is None:
            self.log_error("this episode has no ground-truth mask for the query: R = ground truth is not available")
            self._update_region_ui()
            return
        self.region_source = source
        self.region_note = ""
        if source == GROUND_TRUTH:
            self._replace_region(self.query_mask, "R = ground truth")
        elif source == PREDICTION and self.prediction is not None:
            self._replace_region(self.prediction.mask, "R = prediction")
        self._last_canvas = self.query_canvas
        self._mark_inputs_changed(supports=False, note=f"R was switched to {source} since this explanation")
        self._update_region_ui()

    def _replace_region(self, mask: np.ndarray, label: str) -> None:
        if self.region is not None:
            self.region.replace(mask, label)

    def clear_region(self) -> None:
        if self.region is not None and self.region.clear() is not None:
            self._on_region_stroke("clear")

    def _update_region_ui(self) -> None:
        qp = self.query_panel
        for source, button in qp.region_buttons.items():
            button.setChecked(source == self.region_source)
        qp.region_buttons[GROUND_TRUTH].setEnabled(self.query_mask is not None)
        if not self.has_episode():
            return
        pixels = self.region.count() if self.region is not None else 0
        if self.region_source == PREDICTION and self.prediction is None:
            title = "R = prediction (computed when you press Explain)"
        else:
            title = f"R = {region_title(self.region_source)} · {pixels:,} px"
            if self.region_note:
                title += f" ({self.region_note})"
            if pixels == 0:
                title += " · empty: brush on the query"
        h, w = self.query_image.shape[:2]
        subtitle = f"query {w}×{h}" + (f" · class {self.class_name}" if self.class_name else "")
        if self.prediction is not None:
            fg = float(self.prediction.mask.mean() * 100)
            subtitle += f" · prediction {fg:.1f}% of the image"
        self.query_canvas.set_title(title, subtitle)
        qp.header.setText(f"<b>Query</b> &nbsp; region R = <b>{region_title(self.region_source)}</b>")

    def _update_query_layers(self) -> None:
        if not self.has_episode():
            return
        qp = self.query_panel
        if self.prediction is not None and qp.show_prediction.isChecked():
            self.query_canvas.set_layer("prediction", outline_rgba(self.prediction.mask, PREDICTION_COLOUR), z=6)
        else:
            self.query_canvas.remove_layer("prediction")
        if self.query_mask is not None and qp.show_truth.isChecked():
            self.query_canvas.set_layer("truth", outline_rgba(self.query_mask, TRUTH_COLOUR), z=7)
        else:
            self.query_canvas.remove_layer("truth")
        self._update_region_ui()

    def _on_query_hover(self, x: int, y: int) -> None:
        if x < 0 or not self.has_episode():
            self.hover_label.setText("")
            return
        text = f"query x {x}, y {y}"
        if self.prediction is not None:
            text += f" · p(fg) {self.prediction.probability[y, x]:.3f}"
        if self.region is not None and self.region.data[y, x]:
            text += " · in R"
        self.hover_label.setText(text)

    # ========================================================================= running
    def _connect_worker(self) -> None:
        w = self.worker
        w.jobStarted.connect(self._on_job_started)
        w.progress.connect(self._on_job_progress)
        w.finished.connect(self._on_job_finished)
        w.failed.connect(self._on_job_failed)
        w.cancelled.connect(self._on_job_cancelled)
        w.dropped.connect(self._on_job_dropped)
        w.log.connect(self.log)
        w.deviceStatus.connect(self._on_device_status)
        w.busyChanged.connect(lambda _: self._update_actions())

    def _check_ready(self) -> bool:
        if not self.has_episode():
            self.log_error("no episode is open: open one with File ▸ Open episode (Ctrl+O)")
            return False
        if self.support_panel.count() == 0:
            self.log_error("the episode has no supports: add at least one (drop an image on the support list)")
            return False
        empty = [i + 1 for i, item in enumerate(self.support_panel.items) if item.mask.count() == 0]
        if empty:
            self.log_error(f"support {', '.join(map(str, empty))}: the mask is empty; brush the object first")
            return False
        if not self.model_combo.currentData():
            self.log_error("no model is available")
            return False
        return True

    def predict(self) -> Optional[int]:
        if not self._check_ready():
            return None
        episode = self.current_episode()
        spec = self.model_spec()
        job_id = self.worker.submit(
            "predict", lambda ctx, cache: jobs.predict(ctx, cache, spec, episode), f"Predict ({spec.name})")
        self._job_meta[job_id] = {"kind": "predict", "revision": self.edit_revision, "spec": spec}
        return job_id

    def explain(self) -> Optional[int]:
        """Explain region R with the chosen explainer (predicts too). Returns the job id (None if refused)."""
        if not self._check_ready():
            return None
        name = self.explainer_combo.currentData()
        if not name:
            self.log_error("no explainer is installed: fssgui.explain.registry provides none")
            return None
        reason = self.explainer_unavailable_reason(name)
        if reason:
            self.log_error(reason)
            return None
        try:
            params = parse_params(self.params_edit.text())
        except ValueError as exc:
            self.log_error(f"explainer parameters: {exc}")
            return None
        source = self.region_source
        region = self.region.as_bool() if source == BRUSHED else None
        if source == BRUSHED and not region.any():
            self.log_error("region R is empty: brush it on the query, or choose R = prediction (2)")
            return None
        episode = self.current_episode()
        spec = self.model_spec()
        key = input_key(episode, region, spec, name, sorted(params.items()), source)
        images = [s.image for s in episode.supports]
        masks = [s.mask for s in episode.supports]
        meta = {"kind": "explain", "revision": self.edit_revision, "spec": spec, "key": key, "images": images,
                "masks": masks, "support_version": self.support_version}
        cached = self._cache.get(key)
        if cached is not None:
            self.log(f"{name}: same inputs as {cached.label}; showing the cached result")
            self._show_explanation(cached, meta)
            self.pipelineFinished.emit(True, "cached")
            return None
        factories = self.explainer_factories

        def run(ctx, cache):
            return jobs.explain(ctx, cache, spec, episode, region, source, name, params, factories)

        job_id = self.worker.submit("explain", run, f"Explain R ({name})")
        self._job_meta[job_id] = meta
        return job_id

    def run_pipeline(self) -> Optional[int]:
        """The one-click path (and ``--demo --screenshot``): explain R with the chosen explainer.

        ``pipelineFinished(ok, message)`` is emitted when it ends."""
        job_id = self.explain()
        self._pipeline_job = job_id
        if job_id is None and self.errors:
            self.pipelineFinished.emit(False, self.errors[-1])
        return job_id

    # ------------------------------------------------------------------- prototypes tab
    def choose_prototype_checkpoint(self) -> None:
        start = str(Path(self.proto_panel.checkpoint).parent) if self.proto_panel.checkpoint else (
            self.settings.checkpoint_dir or str(Path.home()))
        path, _ = QFileDialog.getOpenFileName(
            self, "ScaleProtoSeg checkpoint", start,
            "Checkpoints (*.pt *.pth *.ckpt *.tar *.bin *.safetensors);;All files (*)")
        if path:
            self.set_prototype_checkpoint(path)

    def set_prototype_checkpoint(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        self.proto_panel.set_checkpoint(path)
        self.log(f"ScaleProtoSeg checkpoint: {path}")

    def run_prototypes(self) -> Optional[int]:
        """Run the chosen ScaleProtoSeg model on the query (Prototypes tab). Returns the job id."""
        panel = self.proto_panel
        if not self.has_episode():
            self.log_error("no episode is open: the Prototypes tab explains the query image")
            return None
        if not panel.model_name:
            self.log_error("no ScaleProtoSeg model is available in this build")
            return None
        if not panel.checkpoint:
            self.log_error(f"{panel.model_name} needs a checkpoint: choose its file in the Prototypes tab (Browse…)")
            return None
        spec = ModelSpec(panel.model_name, panel.checkpoint, self.device_combo.currentData() or "auto")
        image, size = self.query_image, panel.input_size

        def run(ctx, cache):
            return jobs.prototypes(ctx, cache, spec, image, size)

        job_id = self.worker.submit("prototypes", run, f"Prototypes ({spec.name})")
        self._job_meta[job_id] = {"kind": "prototypes", "spec": spec, "query_key": image_key(image)}
        self._proto_job = job_id
        panel.set_running(True, f"running {spec.name} on the query…")
        return job_id

    def run_prototype_detail(self, request) -> Optional[int]:
        """Run a prototype-detail request (``fssgui.prototypes.detail.SourceRequest`` or
        ``NearestRequest``) with the shown result's ScaleProtoSeg model on the worker thread;
        one channel per kind, so a newer request replaces an older one. Returns the job id."""
        spec = self._proto_spec
        if spec is None:
            self.log_error("prototype detail: run the ScaleProtoSeg model on the query first")
            return None

        def run(ctx, cache):
            model, _device = cache.get_semseg(spec, ctx)
            ctx.check()
            return request.run(model, ctx.progress, ctx.cancelled)

        job_id = self.worker.submit(f"prototype-{request.kind}", run, request.description)
        self._job_meta[job_id] = {"kind": f"prototype {request.kind}"}
        return job_id

    def cancel_prototypes(self) -> None:
        job = self._proto_job
        if job is not None:
            self.worker.cancel(job)
            self.proto_panel.set_running(True, "cancelling…")

    def _prototype_job_ended(self, job_id: int, message: str = "") -> None:
        if self._proto_job == job_id:
            self._proto_job = None
            self.proto_panel.set_running(False, message)

    def _show_prototypes(self, result: PrototypeRunResult) -> None:
        self.proto_panel.show_result(result)
        self.log(f"prototypes: {result.model} on the query in {result.seconds:.1f} s on {result.device}; "
                 f"class {result.explanation.class_name}")
        if self.query_image is None or image_key(self.query_image) != result.image_key:
            self.proto_panel.mark_stale("computed on another query image: press Run on query again")

    def cancel_jobs(self) -> None:
        if self.worker.is_busy:
            self.worker.cancel_all()
            self.job_label.setText("cancelling…")

    def release_model(self) -> None:
        def run(ctx, cache):
            cache.release()
            return "released"

        job_id = self.worker.submit("release", run, "Release model")
        self._job_meta[job_id] = {"kind": "release"}

    # ---------------------------------------------------------------------- job events
    @Slot(int, str)
    def _on_job_started(self, job_id: int, description: str) -> None:
        self.job_label.setText(description)
        self.progress_bar.setValue(0)
        self.progress_bar.setVisible(True)

    @Slot(int, float, str)
    def _on_job_progress(self, job_id: int, fraction: float, message: str) -> None:
        self.progress_bar.setValue(int(fraction * 1000))
        if message:
            self.progress_bar.setFormat(f"{message} %p%")

    def _job_done(self, job_id: int) -> dict[str, Any]:
        meta = self._job_meta.pop(job_id, {})
        if not self.worker.is_busy:
            self.progress_bar.setVisible(False)
            self.job_label.setText("")
        self._update_actions()
        return meta

    @Slot(int, object)
    def _on_job_finished(self, job_id: int, result: object) -> None:
        meta = self._job_done(job_id)
        kind = meta.get("kind")
        if kind == "predict":
            self._show_prediction(result, meta)
            self.statusBar().showMessage(f"Prediction done in {result.seconds:.2f} s", 5000)
        elif kind == "explain":
            self._cache[meta["key"]] = result
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            self._show_explanation(result, meta)
            self.statusBar().showMessage(f"{result.method} done in {result.seconds:.1f} s", 5000)
        elif kind == "prototypes":
            self._prototype_job_ended(job_id)
            self._proto_spec = meta.get("spec")
            self._show_prototypes(result)
        elif kind == "release":
            self.device_info = None
            self._update_device_label()
            self.log("model released; GPU memory cache emptied")
        if job_id == self._pipeline_job:
            self._pipeline_job = None
            self.pipelineFinished.emit(True, "")

    @Slot(int, str, str)
    def _on_job_failed(self, job_id: int, message: str, trace: str) -> None:
        meta = self._job_done(job_id)
        kind = meta.get("kind", "job")
        self.log_error(f"{kind} failed: {message}", trace)
        self._prototype_job_ended(job_id, f"<span style='color:#e0464e'>failed: {html.escape(message)}</span>")
        if job_id == self._pipeline_job:
            self._pipeline_job = None
            self.pipelineFinished.emit(False, message)

    @Slot(int)
    def _on_job_cancelled(self, job_id: int) -> None:
        meta = self._job_done(job_id)
        if meta:
            self.log(f"{meta.get('kind', 'job')} cancelled; the previous result is kept")
        self._prototype_job_ended(job_id, "cancelled; the previous graph is kept")
        if job_id == self._pipeline_job:
            self._pipeline_job = None
            self.pipelineFinished.emit(False, "cancelled")

    @Slot(int)
    def _on_job_dropped(self, job_id: int) -> None:
        self._job_done(job_id)
        self._prototype_job_ended(job_id)

    def _show_prediction(self, result: PredictionResult, meta: dict[str, Any]) -> None:
        if meta.get("revision") != self.edit_revision and meta.get("kind") == "predict":
            self.log("prediction arrived after the inputs changed: shown, but it may be out of date")
        self.prediction = result
        self.prediction_revision = meta.get("revision", -1)
        if self.region_source == PREDICTION:
            self._applying_result = True
            try:
                # R derived from the prediction is reproducible: not an edit to autosave
                self._replace_region(result.mask, "R = prediction")
            finally:
                self._applying_result = False
        self._update_query_layers()
        self.predictionShown.emit(result)

    def _show_explanation(self, result: ExplanationResult, meta: dict[str, Any]) -> None:
        if not result.label:
            self._result_count += 1
            result.label = (f"#{self._result_count} {result.method} · R = {region_title(result.region_source)} · "
                            f"{result.model} · supports v{meta.get('support_version', 0)}")
        stale = meta.get("revision") != self.edit_revision
        if not stale:
            self._show_prediction(result.prediction, meta)
        self.last_result = result
        images, masks = meta.get("images", []), meta.get("masks", [])
        self.heatmap_view.show_result(result, images, masks)
        if stale:
            self.heatmap_view.set_stale("the inputs were edited while this was computed (Ctrl+E to rerun)")
        self.level_view.show_result(result)
        if not any(r is result for r, _, _ in self.compare_view.history):
            self.compare_view.add_result(result, images, masks)
        self.log(f"{result.label}: {result.seconds:.1f} s on {result.device}")
        self.resultShown.emit(result)

    # ----------------------------------------------------------------------- device
    @Slot(object)
    def _on_device_status(self, info: DeviceInfo) -> None:
        self.device_info = info
        self._update_device_label()

    def _update_device_label(self) -> None:
        import torch

        info = self.device_info
        if info is None:
            requested = self.device_combo.currentData() or "auto"
            if torch.cuda.is_available():
                text = f"Device: {requested} (model not loaded yet)"
            else:
                text = "Device: CPU · CUDA not available (model not loaded yet)"
            self.device_label.setText(text)
            return
        if info.is_cuda:
            text = (f"Device: {info.device} {info.description} · GPU memory {_gib(info.allocated_bytes)} GiB allocated, "
                    f"{_gib(info.reserved_bytes)} reserved, {_gib(info.free_bytes)} of {_gib(info.total_bytes)} free")
        else:
            text = "Device: CPU" + ("" if info.cuda_available else " · CUDA not available")
        self.device_label.setText(text)

    # ======================================================================== autosave
    def _schedule_autosave(self) -> None:
        if self.has_episode():
            self._autosave_timer.start(int(self.settings.autosave_seconds * 1000))

    def _snapshot(self) -> Episode:
        """The episode for the autosave: supports with empty masks are fine here."""
        return self.current_episode()

    def _write_autosave(self) -> None:
        if not self.has_episode() or not self.dirty:
            return
        episode = self._snapshot()
        history, active = self.autosave.capture_history(self._editable_masks()), self._active_mask_name()
        source = str(self.source_folder) if self.source_folder else ""
        autosave = self.autosave

        def write() -> None:
            try:
                autosave.write(episode, source, dirty=True, history=history, active=active)
            except Exception as exc:  # noqa: BLE001 - reported in the window
                self._autosaveDone.emit(f"autosave failed ({autosave.root}): {exc}")
            else:
                self._autosaveDone.emit("")

        self._autosave_pool.submit(write)

    def flush_autosave(self) -> None:
        """Write pending edits now and wait (used at exit and by tests)."""
        if self._autosave_timer.isActive():
            self._autosave_timer.stop()
            self._write_autosave()
        self._autosave_pool.submit(lambda: None).result()
        QApplication.processEvents()

    def _on_autosave_done(self, error: str) -> None:
        if error:
            self.log_error(error)
        else:
            self._autosave_done_at = time.time()
            self.statusBar().showMessage("Edits autosaved", 1500)

    def restore_autosave_if_any(self) -> bool:
        """At start: offer to restore unsaved edits from the last session."""
        info = self.autosave.restorable()
        if info is None:
            return False
        if not self.unattended:
            answer = QMessageBox.question(
                self, "Restore unsaved edits?",
                f"fssgui found {info.describe()}.\n\nRestore them?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes)
            if answer != QMessageBox.StandardButton.Yes:
                self.autosave.discard()
                return False
        outcome: dict[str, bool] = {}

        def done(result, error: Optional[BaseException], trace: str) -> None:
            if error is not None:
                outcome["ok"] = False
                self.log_error(f"the autosave in {info.folder} could not be read: {error}",
                               "" if isinstance(error, (FssguiError, OSError, KeyError, ValueError)) else trace)
                return
            episode, history = result
            self.set_episode(episode, Path(info.source) if info.source else None, dirty=True)
            self._restore_undo_history(history)
            self.log(f"restored {info.describe()}")
            outcome["ok"] = True

        # read on the episode I/O thread; the window keeps painting while it waits
        self._in_background(lambda: (self.autosave.read(), self.autosave.read_history()), done)
        self._wait_until(lambda: "ok" in outcome)
        return outcome["ok"]

    def _editable_masks(self) -> dict[str, Optional[EditableMask]]:
        """The masks under edit by their names in the autosave ("region", "support_0", ...)."""
        masks: dict[str, Optional[EditableMask]] = {"region": self.region}
        masks.update({f"support_{i}": item.mask for i, item in enumerate(self.support_panel.items)})
        return masks

    def _active_mask_name(self) -> str:
        """The mask that Ctrl+Z acts on now (the last edited canvas)."""
        if self._last_canvas is self.query_canvas:
            return "region"
        index = self.support_panel.current_index()
        return f"support_{index}" if index >= 0 else ""

    def _restore_undo_history(self, history) -> None:
        """Give the restored masks their saved undo/redo history (each only if its pixels match)
        and make the mask edited last the one Ctrl+Z acts on."""
        if history.error:
            self.log(f"undo history not restored: {history.error}")
        restored = restore_histories(self._editable_masks(), history.states)
        if history.active in restored:
            if history.active == "region":
                self._last_canvas = self.query_canvas
            else:
                self.support_panel.select(int(history.active.split("_")[1]))
                self._last_canvas = self.support_panel.canvas
        skipped = sorted(set(history.states) - set(restored))
        if restored:
            self.log(f"undo history restored ({', '.join(restored)})"
                     + (f"; not for {', '.join(skipped)} (pixels differ)" if skipped else ""))

    # ====================================================================== notes
    def edit_notes(self) -> None:
        """File ▸ Episode notes: read and edit the episode's notes (saved with it as NOTES.md)."""
        if not self.has_episode():
            return
        dialog = QDialog(self)
        dialog.setWindowTitle("Episode notes")
        layout = QVBoxLayout(dialog)
        editor = QPlainTextEdit(dialog)
        editor.setPlainText(self.episode_notes)
        editor.setPlaceholderText("What this episode shows, where its images come from… (saved as NOTES.md)")
        shown = editor.toPlainText()  # line endings as the editor keeps them: unchanged text stays clean
        layout.addWidget(editor)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
                                   parent=dialog)
        buttons.accepted.connect(dialog.accept)
        buttons.rejected.connect(dialog.reject)
        layout.addWidget(buttons)
        dialog.accepted.connect(lambda: editor.toPlainText() != shown and self.set_notes(editor.toPlainText()))
        dialog.resize(620, 420)
        self.notes_dialog, self.notes_editor = dialog, editor
        if not self.unattended:
            dialog.exec()

    def set_notes(self, text: str) -> None:
        """New notes for the episode: an edit (autosaved, written with the episode on save)."""
        if not self.has_episode() or text == self.episode_notes:
            return
        self.episode_notes = text  # not an input of any result: edit_revision stays
        self.dirty = True
        self._schedule_autosave()
        self._update_title()

    # ====================================================================== misc UI
    def _update_title(self) -> None:
        name = self.source_folder.name if self.source_folder else ("new episode" if self.has_episode() else "")
        star = "*" if self.dirty else ""
        self.setWindowTitle(f"fssgui — {name}{star}" if name else "fssgui")

    def _update_actions(self) -> None:
        busy = self.worker.is_busy
        has = self.has_episode()
        self.actions["cancel"].setEnabled(busy)
        self.actions["predict"].setEnabled(has)
        name = self.explainer_combo.currentData()
        self.actions["explain"].setEnabled(has and name is not None and not self.explainer_unavailable_reason(name))
        self.actions["save_episode"].setEnabled(has)
        self.actions["save_episode_as"].setEnabled(has)

    def show_shortcuts(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle("Keyboard shortcuts")
        layout = QVBoxLayout(dialog)
        browser = QTextBrowser(dialog)
        browser.setHtml(cheat_sheet_html())
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

        import torch

        text = (f"fssgui {__version__}\nDiagnose few-shot semantic segmentation models.\n\n"
                f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
        if not self.unattended:
            QMessageBox.about(self, "About fssgui", text)

    def _confirm_discard(self) -> bool:
        """Before replacing the episode: offer to save unsaved edits."""
        if not self.dirty or self.unattended or not self.has_episode():
            return True
        answer = QMessageBox.question(
            self, "Unsaved edits", "The episode has unsaved edits. Save them first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.save_episode(wait=True)
        if answer == QMessageBox.StandardButton.Discard:
            self.dirty = False  # the user chose to drop the edits: no restore offer next time
            return True
        return False

    def closeEvent(self, event) -> None:  # noqa: N802
        if not self._confirm_discard() or not self._confirm_stop_training():
            event.ignore()
            return
        self._store_settings()
        self.shutdown()
        super().closeEvent(event)

    def _confirm_stop_training(self) -> bool:
        dialog = getattr(self, "_train_dialog", None)
        if dialog is None or not dialog.is_running() or self.unattended:
            return True
        answer = QMessageBox.question(
            self, "Training in progress", "A training run is in progress. Stop it and quit? The epoch in progress "
            "is lost; Resume continues from the last saved epoch.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self) -> None:
        """Stop the worker and write the last autosave. Safe to call twice."""
        if getattr(self, "_shut_down", False):
            return
        self._shut_down = True
        if getattr(self, "_train_dialog", None) is not None:
            self._train_dialog.shutdown()  # a training child process does not outlive the app
        self.worker.shutdown()
        if self.dirty and self.has_episode():
            self._autosave_timer.stop()
            try:
                self.autosave.write(self._snapshot(), str(self.source_folder or ""), dirty=True,
                                    history=self.autosave.capture_history(self._editable_masks()),
                                    active=self._active_mask_name())
            except Exception as exc:  # noqa: BLE001
                print(f"fssgui: autosave at exit failed: {exc}")
        self._autosave_pool.shutdown(wait=True)
        self.autosave.mark_clean_exit(self.dirty and self.has_episode())

