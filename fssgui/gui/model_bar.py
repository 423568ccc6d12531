"""The run toolbar's pickers: model, checkpoint, device, explainer and its parameters.

The bar says what a run would use (:meth:`ModelBar.model_spec`, :meth:`ModelBar.explainer`,
:meth:`ModelBar.params`) and greys out what cannot work: explainers the model cannot use (with the
reason, :func:`fssgui.pipeline.explainers.explainer_unavailable_reason`), the Train button for a
model without a trainer. It changes nothing else; the window listens to its signals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QLineEdit, QToolBar, QToolButton, QWidget

from ..errors import FssguiError
from ..pipeline import ModelSpec
from ..pipeline import explainers as E
from .device_picker import DevicePicker
from .workers import WorkerPool, once_per_process

DEFAULT_EXPLAINER = "affex-signed"
BROWSE = "__browse__"
CHECKPOINT_FILTER = "Checkpoints (*.pt *.pth *.ckpt *.tar *.bin *.safetensors);;All files (*)"


def _describe_explainers(ctx) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{explainer: (summary, parameter names)}`` for the registry's explainers: it imports their
    modules, and torch, so it runs on the worker pool, not while the window is built."""
    return {name: (E.explainer_summary(name), tuple(E.explainer_parameter_names(name)))
            for name in E.available_explainers()}


def _combo(parent: QWidget, length: int) -> QComboBox:
    combo = QComboBox(parent)
    combo.setMinimumContentsLength(length)
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    return combo


class ModelBar(QObject):
    """The pickers (see the module docstring); :meth:`add_to` puts them on a toolbar."""

    modelChanged = Signal()
    explainerChanged = Signal()
    deviceChanged = Signal()
    trainRequested = Signal(str)  # the model to train
    message = Signal(str)  # for the log
    errorRaised = Signal(str)

    def __init__(self, settings, pool: WorkerPool, factories: Optional[dict[str, Callable[..., Any]]],
                 parent: QWidget) -> None:
        super().__init__(parent)
        self.settings = settings
        self.parent_widget = parent
        self.factories = dict(factories or {})
        self.pool = pool
        self._availability: dict[tuple[str, str], str] = {}  # (model, explainer) -> reason
        self._built: dict[str, dict[str, str]] = {}  # model -> {explainer: reason}, from the built model
        self._specific: Optional[dict[str, tuple[str, ...]]] = None
        # the registry explainers' summaries and parameters, once described off the GUI thread
        self._descriptions: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.model_combo = _combo(parent, 16)
        self.checkpoint_combo = _combo(parent, 18)
        self.train_button = QToolButton(parent)  # trains the current model (greyed when it cannot be trained)
        self.train_button.setText("Train…")
        self.device_combo = DevicePicker(pool, "CUDA when available, else the CPU (the status bar says which)",
                                         "torch reports no usable CUDA device on this machine", parent)
        self.explainer_combo = _combo(parent, 16)
        self.params_edit = QLineEdit(parent)
        self.params_edit.setPlaceholderText("parameters, e.g. size=96")
        self.params_edit.setToolTip("Explainer parameters as name=value pairs separated by commas")
        self.params_edit.setFixedWidth(170)
        self.fill_models()
        self.device_combo.select(settings.device)
        self.fill_checkpoints()
        self.fill_explainers()
        self._on_explainer_changed()
        self.train_button.clicked.connect(lambda: self.trainRequested.emit(self.model_name()))
        self.explainer_combo.currentIndexChanged.connect(self._on_explainer_changed)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.checkpoint_combo.activated.connect(self._on_checkpoint_activated)
        self.device_combo.currentIndexChanged.connect(lambda _i: self.deviceChanged.emit())
        self._update_train_button()

    def add_to(self, bar: QToolBar) -> None:
        for label, widget in ((" Model ", self.model_combo), ("  Checkpoint ", self.checkpoint_combo),
                              (None, self.train_button), ("  Device ", self.device_combo)):
            if label:
                bar.addWidget(QLabel(label))
            bar.addWidget(widget)
        bar.addSeparator()
        bar.addWidget(QLabel(" Explainer "))
        bar.addWidget(self.explainer_combo)
        bar.addWidget(self.params_edit)

    # ------------------------------------------------------------------ what a run uses
    def model_name(self) -> str:
        return self.model_combo.currentData() or ""

    def model_spec(self) -> ModelSpec:
        checkpoint = self.checkpoint_combo.currentData()
        if checkpoint == BROWSE:
            checkpoint = None
        return ModelSpec(self.model_name(), checkpoint, self.device_combo.device())

    def explainer(self) -> Optional[str]:
        return self.explainer_combo.currentData()

    def params(self) -> dict[str, Any]:
        """The typed parameters (ValueError naming the bad one)."""
        return E.parse_params(self.params_edit.text())

    def current_entry(self):
        from ..models.registry import get_entry

        name = self.model_name()
        if not name:
            return None
        try:
            return get_entry(name)
        except FssguiError:
            return None

    # ------------------------------------------------------------------ models and checkpoints
    def fill_models(self) -> None:
        from ..models.registry import DEFAULT_MODEL, TASK_FSS, list_models

        combo = self.model_combo
        combo.blockSignals(True)
        combo.clear()
        try:
            entries = list_models(TASK_FSS)
        except Exception as exc:  # a broken model module must not keep the window from opening
            entries = []
            self.errorRaised.emit(f"could not list models: {exc}")
        for entry in entries:
            combo.addItem(entry.name + ("  (needs checkpoint)" if entry.needs_checkpoint else ""), entry.name)
            tip = entry.description + (f"\nCheckpoint: {entry.checkpoint_format}" if entry.checkpoint_format else "")
            combo.setItemData(combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        index = combo.findData(self.settings.model or DEFAULT_MODEL)
        combo.setCurrentIndex(max(0, index if index >= 0 else combo.findData(DEFAULT_MODEL)))
        combo.blockSignals(False)

    def select_model(self, name: str) -> bool:
        index = self.model_combo.findData(name)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        return index >= 0

    def fill_checkpoints(self, select: Optional[str] = None) -> None:
        """Recent checkpoints and those in the checkpoint folder, then Browse…"""
        from ..drops import CHECKPOINT_SUFFIXES

        combo = self.checkpoint_combo
        current = select if select is not None else combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("(no checkpoint)", None)
        paths = list(self.settings.recent_checkpoints)
        folder = Path(self.settings.checkpoint_dir) if self.settings.checkpoint_dir else None
        if folder is not None and folder.is_dir():
            paths += [str(p.resolve()) for p in sorted(folder.iterdir()) if p.suffix.lower() in CHECKPOINT_SUFFIXES]
        for path in dict.fromkeys(paths):
            combo.addItem(Path(path).name, path)
            combo.setItemData(combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        combo.addItem("Browse…", BROWSE)
        combo.setCurrentIndex(max(0, combo.findData(current) if current else 0))
        combo.blockSignals(False)
        self._update_checkpoint_hint()

    def set_checkpoint(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        self.settings.add_recent_checkpoint(path)
        self.fill_checkpoints(select=path)
        self.message.emit(f"checkpoint: {path}")
        self.modelChanged.emit()

    def choose_checkpoint(self) -> None:
        start = self.settings.checkpoint_dir or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self.parent_widget, "Choose a checkpoint", start, CHECKPOINT_FILTER)
        if path:
            self.set_checkpoint(path)
        else:
            self.fill_checkpoints()

    def choose_checkpoint_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.parent_widget, "Checkpoint folder", self.settings.checkpoint_dir)
        if folder:
            self.settings.checkpoint_dir = folder
            self.fill_checkpoints()
            self.message.emit(f"checkpoint folder: {folder}")

    def _on_checkpoint_activated(self, index: int) -> None:
        if self.checkpoint_combo.itemData(index) == BROWSE:
            self.choose_checkpoint()
        else:
            self._update_checkpoint_hint()
            self.modelChanged.emit()

    def _update_checkpoint_hint(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        needs = entry.needs_checkpoint
        tip = f"{entry.name}: " + (entry.checkpoint_format or ("needs a checkpoint" if needs else "no checkpoint needed"))
        self.checkpoint_combo.setToolTip(tip)
        self.checkpoint_combo.setStyleSheet("QComboBox { color: #d9822b; }" if self.checkpoint_missing() else "")

    def checkpoint_missing(self) -> bool:
        """The chosen model needs a checkpoint file and none is chosen."""
        entry = self.current_entry()
        return entry is not None and entry.needs_checkpoint and self.checkpoint_combo.currentData() is None

    def _on_model_changed(self, _index: int) -> None:
        self._update_checkpoint_hint()
        self._update_train_button()
        self._update_explainer_availability()
        self.modelChanged.emit()

    def _update_train_button(self) -> None:
        """Enabled for the models ``fssgui train`` can train; otherwise greyed, saying why."""
        from ..train_setup import trainable_entries

        entry = self.current_entry()
        trainable = entry is not None and entry.extra.get("trainer") is not None
        self.train_button.setEnabled(trainable)
        if trainable:
            self.train_button.setToolTip(f"Train {entry.name} on your dataset (Run > Train a model…)")
        else:
            names = ", ".join(e.name for e in trainable_entries()) or "none installed"
            self.train_button.setToolTip(f"{entry.name if entry else 'This model'} cannot be trained here (it uses "
                                         f"published weights or needs none). Trainable: {names}")

    # ------------------------------------------------------------------ explainers
    def fill_explainers(self) -> None:
        combo = self.explainer_combo
        names = E.available_explainers()
        names += [n for n in self.factories if n not in names]
        combo.clear()
        if not names:
            combo.addItem("(no explainers installed)", None)
            combo.setEnabled(False)
            return
        combo.setEnabled(True)
        for name in names:
            combo.addItem(name, name)
        index = combo.findData(self.settings.explainer or DEFAULT_EXPLAINER)
        combo.setCurrentIndex(max(0, index if index >= 0 else combo.findData(DEFAULT_EXPLAINER)))
        self._update_explainer_availability()

    def set_built_restrictions(self, model: str, unavailable: dict[str, str]) -> None:
        """What the built ``model`` rules out (``jobs.built_restrictions``' answer, known once it is loaded):
        those explainers are greyed like the entry's, with the reason."""
        self._built[model] = dict(unavailable)
        if self.model_name() == model:
            self._update_explainer_availability()

    def unavailable_reason(self, name: str) -> str:
        """Why ``name`` cannot explain the current model ("" when it can): its registry entry's
        rules, then what the built model ruled out (once it was loaded)."""
        entry = self.current_entry()
        built = self._built.get(entry.name, {}).get(name, "") if entry is not None else ""
        if built:
            return built
        key = (entry.name if entry is not None else "", name)
        if key not in self._availability:
            try:
                if self._specific is None:
                    self._specific = E.model_specific_explainers()
                self._availability[key] = E.explainer_unavailable_reason(name, entry, self.factories, self._specific)
            except Exception as exc:  # noqa: BLE001 - a broken registry must not break the picker
                self.errorRaised.emit(f"could not check explainer {name}: {exc}")
                self._availability[key] = ""
        return self._availability[key]

    def start_background(self) -> None:
        """Start what the pickers ask the worker pool (each imports torch, so the window calls this
        once it is on screen): the CUDA devices, and the registry explainers' descriptions, once per
        process (until they arrive an explainer's tooltip is its name)."""
        self.device_combo.list_devices()
        once_per_process(self.pool, _describe_explainers, self._set_descriptions, "describing the explainers")

    def _set_descriptions(self, descriptions: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self._descriptions = dict(descriptions or {})
        self._describe_explainers()

    def explainer_summary(self, name: str) -> str:
        """``"name: what it does"`` (a registry explainer's once described; until then its name)."""
        if name in self.factories:
            return E.explainer_summary(name, self.factories)
        return self._descriptions.get(name, (name, ()))[0]

    def explainer_parameter_names(self, name: str) -> tuple[str, ...]:
        """The parameters explainer ``name`` accepts (empty until described, and for extra factories)."""
        return () if name in self.factories else self._descriptions.get(name, (name, ()))[1]

    def _describe_explainers(self) -> None:
        """The explainers' tooltips (the reason when unavailable, else the summary), the picker's
        tooltip and the parameter field's hint for the chosen one."""
        combo = self.explainer_combo
        model = combo.model()
        entry = self.current_entry()
        for i in range(combo.count()):
            name = combo.itemData(i)
            if not name:
                continue
            reason = self.unavailable_reason(name)
            model.item(i).setToolTip(f"Not available for {entry.name if entry else 'this model'}: {reason}" if reason
                                     else self.explainer_summary(name))
        name = self.explainer()
        names = self.explainer_parameter_names(name or "")
        tip = "Explainer parameters as name=value pairs separated by commas"
        if names:
            tip += f"\n{name} accepts: {', '.join(names)}"
        self.params_edit.setToolTip(tip)
        self.params_edit.setPlaceholderText(f"e.g. {names[0]}=…" if names else "parameters (name=value, …)")
        reason = self.unavailable_reason(name) if name else ""
        combo.setToolTip(reason or (self.explainer_summary(name) if name else ""))

    def _update_explainer_availability(self) -> None:
        """Grey out the explainers the current model cannot use, with the reason as tooltip;
        move the selection off an unavailable one (and say so)."""
        combo = self.explainer_combo
        model = combo.model()
        entry = self.current_entry()
        for i in range(combo.count()):
            name = combo.itemData(i)
            if name:
                model.item(i).setEnabled(not self.unavailable_reason(name))
        self._describe_explainers()
        current = combo.currentData()
        if current and self.unavailable_reason(current):
            for name in [DEFAULT_EXPLAINER] + [combo.itemData(i) for i in range(combo.count())]:
                index = combo.findData(name)
                if index >= 0 and model.item(index).isEnabled():
                    combo.setCurrentIndex(index)
                    self.message.emit(f"{current} does not apply to {entry.name if entry else 'this model'}: "
                                      f"switched the explainer to {name}")
                    break
        self.explainerChanged.emit()

    def _on_explainer_changed(self, _index: int = 0) -> None:
        self._describe_explainers()
        self.explainerChanged.emit()

    def explain_ready(self) -> bool:
        name = self.explainer()
        return name is not None and not self.unavailable_reason(name)

    # ------------------------------------------------------------------ settings
    def store_settings(self, s) -> None:
        s.model = self.model_name() or s.model
        s.device = self.device_combo.device()
        if self.explainer():
            s.explainer = self.explainer()
