"""The training dialog's left side: the setup of a run (what ``fssgui train`` is asked to do).

Model and data (dataset folder, layout, fold, shots), the output folder and *Resume* (offered when
the folder holds a saved run; the settings a resumed run must keep are then locked), the schedule
(epochs, steps, batch size, optimizer, learning rate, weight decay, size, device, backbone weights)
and the model's builder options with named presets. :meth:`TrainingForm.current_request` turns the
fields into a :class:`~fssgui.train_setup.TrainRequest`; the last request is remembered in the
settings (:meth:`remember`) and filled in again next time (:meth:`restore`).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView,
                               QLabel, QLineEdit, QPushButton, QSizePolicy, QSpinBox, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from ...train_setup import (CONFIG_JSON, LAYOUTS, OPTION_PRESETS, PRESET_CUSTOM, PRESET_PAPER,
                            TrainRequest, config_default, format_option_value, model_option_defaults,
                            optional_number, parse_option_value, read_saved_run, trainable_entries)
from ..device_picker import DevicePicker
from ..workers import WorkerPool


class TrainingForm(QWidget):
    """See the module docstring."""

    message = Signal(str)  # a line for the dialog's log

    def __init__(self, settings, pool: WorkerPool, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.entries = {e.name: e for e in trainable_entries()}
        self.busy = False  # a run is being checked or running: the fields are locked
        self._filling = False
        form_box = QVBoxLayout(self)
        form_box.setContentsMargins(0, 0, 6, 0)

        model_group = QGroupBox("Model and data", self)
        model_form = QFormLayout(model_group)
        self.model_combo = QComboBox(model_group)
        for name, entry in self.entries.items():
            self.model_combo.addItem(name, name)
            self.model_combo.setItemData(self.model_combo.count() - 1, entry.description, Qt.ItemDataRole.ToolTipRole)
        if not self.entries:
            self.model_combo.addItem("(no trainable model installed)", "")
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        model_form.addRow("Model", self.model_combo)
        self.data_edit = QLineEdit(model_group)
        self.data_edit.setPlaceholderText("the dataset folder")
        model_form.addRow("Dataset", self._with_browse(self.data_edit, self._browse_data))
        self.layout_combo = QComboBox(model_group)
        for name in LAYOUTS:
            self.layout_combo.addItem(name, name)
        self.layout_combo.setToolTip("folders: ROOT/<class>/images + masks; pascal5i: VOC 2012 (+SBD) with "
                                     "SegmentationClassAug; coco20i: COCO 2014 class-index label maps")
        model_form.addRow("Layout", self.layout_combo)
        row = QHBoxLayout()
        self.fold_spin = QSpinBox(model_group)
        self.fold_spin.setRange(-1, 3)
        self.fold_spin.setSpecialValueText("all classes")
        self.fold_spin.setToolTip("Held-out class fold (0..3): its classes validate, the others train; "
                                  "'all classes' (-1) trains and validates on every class")
        row.addWidget(self.fold_spin)
        row.addWidget(QLabel("Shots"))
        self.shots_spin = QSpinBox(model_group)
        self.shots_spin.setRange(1, 20)
        self.shots_spin.setToolTip("Support images per episode")
        row.addWidget(self.shots_spin)
        row.addStretch(1)
        model_form.addRow("Fold", row)
        form_box.addWidget(model_group)

        out_group = QGroupBox("Output", self)
        out_form = QFormLayout(out_group)
        self.out_edit = QLineEdit(out_group)
        self.out_edit.setPlaceholderText("folder for model_best.pt, model_last.pt, config.json")
        self.out_edit.textChanged.connect(self._update_resume_box)
        out_form.addRow("Folder", self._with_browse(self.out_edit, self._browse_out))
        self.resume_check = QCheckBox("Resume the run saved in this folder", out_group)
        self.resume_check.toggled.connect(self._on_resume_toggled)
        out_form.addRow("", self.resume_check)
        self.resume_hint = QLabel("", out_group)
        self.resume_hint.setWordWrap(True)
        self.resume_hint.setVisible(False)
        out_form.addRow("", self.resume_hint)
        form_box.addWidget(out_group)

        sched_group = QGroupBox("Schedule", self)
        sched_form = QFormLayout(sched_group)
        self.epochs_spin = self._spin(1, 100000, "Epochs: each is the steps below, then a validation and a "
                                                 "checkpoint")
        self.steps_spin = self._spin(1, 1000000, "Optimisation steps per epoch")
        row = QHBoxLayout()
        row.addWidget(self.epochs_spin)
        row.addWidget(QLabel("×"))
        row.addWidget(self.steps_spin)
        row.addWidget(QLabel("steps"))
        row.addStretch(1)
        sched_form.addRow("Epochs", row)
        row = QHBoxLayout()
        self.batch_spin = self._spin(1, 4096, "Episodes per optimisation step")
        self.val_spin = self._spin(1, 1000000, "Validation episodes after each epoch (a fixed list)")
        row.addWidget(self.batch_spin)
        row.addWidget(QLabel("Val episodes"))
        row.addWidget(self.val_spin)
        row.addStretch(1)
        sched_form.addRow("Batch size", row)
        row = QHBoxLayout()
        self.optimizer_combo = QComboBox(sched_group)
        self.lr_edit = QLineEdit(sched_group)
        validator = QDoubleValidator(0.0, 10.0, 12, self.lr_edit)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.lr_edit.setValidator(validator)
        self.lr_edit.setToolTip("Base learning rate (poly schedule); empty = the model's default")
        self.wd_edit = QLineEdit(sched_group)
        validator = QDoubleValidator(0.0, 1.0, 12, self.wd_edit)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.wd_edit.setValidator(validator)
        row.addWidget(self.optimizer_combo)
        row.addWidget(QLabel("LR"))
        row.addWidget(self.lr_edit, 1)
        row.addWidget(QLabel("WD"))
        row.addWidget(self.wd_edit, 1)
        sched_form.addRow("Optimizer", row)
        row = QHBoxLayout()
        self.size_spin = self._spin(0, 2048, "Input size in pixels (0 = the model's)")
        self.size_spin.setSuffix(" px")
        self.device_combo = DevicePicker(pool, "CUDA when available, else the CPU",
                                         "torch reports no usable CUDA device on this machine: training runs on "
                                         "the CPU", sched_group)
        self.device_combo.list_devices()
        row.addWidget(self.size_spin)
        row.addWidget(QLabel("Device"))
        row.addWidget(self.device_combo, 1)
        sched_form.addRow("Size", row)
        self.backbone_edit = QLineEdit(sched_group)
        self.backbone_edit.setPlaceholderText("none: random-init, BatchNorm re-estimated")
        self.backbone_edit.setToolTip("ImageNet ResNet-50 weights (torchvision .pth or timm .safetensors) for the "
                                      "frozen backbone. Without "
                                      "it the backbone is random-init (the papers use ImageNet weights) and its "
                                      "BatchNorm statistics are re-estimated on training images.")
        sched_form.addRow("Backbone", self._with_browse(self.backbone_edit, self._browse_backbone))
        form_box.addWidget(sched_group)

        options_group = QGroupBox("Model options", self)
        options_box = QVBoxLayout(options_group)
        self.preset_combo = QComboBox(options_group)
        self.preset_combo.activated.connect(self._on_preset_chosen)
        options_box.addWidget(self.preset_combo)
        self.options_table = QTableWidget(0, 3, options_group)
        self.options_table.setHorizontalHeaderLabels(["Option", "Value", "Default"])
        self.options_table.verticalHeader().setVisible(False)
        header = self.options_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.options_table.setToolTip("Keyword arguments of the model's builder (values as JSON: 3, 0.5, false). "
                                      "An empty value keeps the default.")
        self.options_table.setMinimumHeight(150)
        self.options_table.itemChanged.connect(self._on_option_edited)
        options_box.addWidget(self.options_table, 1)
        form_box.addWidget(options_group, 1)


    def _spin(self, low: int, high: int, tip: str) -> QSpinBox:
        spin = QSpinBox(self)
        spin.setRange(low, high)
        spin.setToolTip(tip)
        spin.setMinimumWidth(72)
        return spin

    def _with_browse(self, edit: QLineEdit, browse) -> QWidget:
        holder = QWidget(self)
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        button = QPushButton("Browse…", holder)
        button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        button.clicked.connect(browse)
        row.addWidget(button)
        holder.setProperty("browse_button", button)
        return holder

    # ------------------------------------------------------------------ model-dependent fields
    @property
    def model_name(self) -> str:
        return self.model_combo.currentData() or ""

    def set_model(self, name: str) -> bool:
        index = self.model_combo.findData(name)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        return index >= 0

    def _on_model_changed(self, _index: int = 0) -> None:
        entry = self.entries.get(self.model_name)
        self.optimizer_combo.clear()
        defaults = dict(entry.extra.get("optimizer", {})) if entry is not None else {}
        default_name = str(defaults.get("name", "sgd"))
        self.optimizer_combo.addItem(f"default ({default_name})", "")
        self.optimizer_combo.addItem("SGD", "sgd")
        self.optimizer_combo.addItem("AdamW", "adamw")
        self.lr_edit.clear()  # a learning rate typed for another model is no default for this one
        self.lr_edit.setPlaceholderText(f"default {defaults.get('lr', 1e-3):g}")
        self.wd_edit.clear()
        default_wd = f"{float(defaults.get('weight_decay', 0.0)):g}"
        self.wd_edit.setPlaceholderText(default_wd)  # narrow field: the value alone, greyed
        self.wd_edit.setToolTip(f"Weight decay; empty = the model's default ({default_wd})")
        self.size_spin.setSpecialValueText(f"default ({entry.input_size} px)" if entry is not None else "default")
        self._fill_options_table(model_option_defaults(entry) if entry is not None else {})
        self.preset_combo.clear()
        self.preset_combo.addItem(PRESET_PAPER, None)
        for label, values in OPTION_PRESETS.get(self.model_name, ()):
            shown = ", ".join(f"{k}={format_option_value(v)}" for k, v in values.items())
            self.preset_combo.addItem(label, values)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, shown, Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setToolTip("Named sets of the options below")

    def _fill_options_table(self, defaults: dict[str, Any]) -> None:
        self._filling = True
        table = self.options_table
        table.setRowCount(0)
        for name, default in defaults.items():
            row = table.rowCount()
            table.insertRow(row)
            key = QTableWidgetItem(name)
            key.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            value = QTableWidgetItem("")
            shown_default = QTableWidgetItem(format_option_value(default))
            shown_default.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            table.setItem(row, 0, key)
            table.setItem(row, 1, value)
            table.setItem(row, 2, shown_default)
        self._filling = False

    def model_options(self) -> dict[str, Any]:
        """The options whose value cell is filled in."""
        options: dict[str, Any] = {}
        for row in range(self.options_table.rowCount()):
            text = self.options_table.item(row, 1).text().strip()
            if text:
                options[self.options_table.item(row, 0).text()] = parse_option_value(text)
        return options

    def set_model_options(self, options: dict[str, Any]) -> None:
        """Fill the value cells (unknown names get a row of their own, so nothing is dropped)."""
        self._filling = True
        table = self.options_table
        rows = {table.item(r, 0).text(): r for r in range(table.rowCount())}
        for row in rows.values():
            table.item(row, 1).setText("")
        for name, value in options.items():
            if name not in rows:
                row = table.rowCount()
                table.insertRow(row)
                key = QTableWidgetItem(name)
                key.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                table.setItem(row, 0, key)
                table.setItem(row, 1, QTableWidgetItem(""))
                unknown = QTableWidgetItem("?")
                unknown.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                table.setItem(row, 2, unknown)
                rows[name] = row
            table.item(rows[name], 1).setText(format_option_value(value))
        self._filling = False
        self._sync_preset()

    def _on_preset_chosen(self, index: int) -> None:
        values = self.preset_combo.itemData(index)
        self.set_model_options(dict(values or {}))

    def _on_option_edited(self, _item) -> None:
        if not self._filling:
            self._sync_preset()

    def _sync_preset(self) -> None:
        """Show the preset the option values match, or "Custom"."""
        current = self.model_options()
        custom = self.preset_combo.findText(PRESET_CUSTOM)
        for i in range(self.preset_combo.count()):
            values = self.preset_combo.itemData(i)
            if i != custom and (values or {}) == current:
                self.preset_combo.setCurrentIndex(i)
                if custom >= 0 and custom != i:
                    self.preset_combo.removeItem(custom)
                return
        if custom < 0:
            self.preset_combo.addItem(PRESET_CUSTOM, "__custom__")
            custom = self.preset_combo.count() - 1
        self.preset_combo.setCurrentIndex(custom)

    # ------------------------------------------------------------------ browsing, resume
    def _browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder", self.data_edit.text() or str(Path.home()))
        if folder:
            self.data_edit.setText(folder)

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.out_edit.text() or str(Path.home()))
        if folder:
            self.out_edit.setText(folder)

    def _browse_backbone(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ResNet-50 weights", self.backbone_edit.text() or str(Path.home()),
                                              "ResNet-50 weights (*.pth *.pt *.safetensors);;All files (*)")
        if path:
            self.backbone_edit.setText(path)

    def _update_resume_box(self) -> None:
        text = self.out_edit.text().strip()
        saved = read_saved_run(text) if text else None
        self.resume_check.setEnabled(saved is not None and not self.busy)
        if saved is None:
            self.resume_check.setToolTip("The output folder holds no training run (config.json) to resume")
            if self.resume_check.isChecked():
                self.resume_check.setChecked(False)
            self.resume_hint.setVisible(False)
            return
        planned = (saved.get("config") or {}).get("epochs", "?")
        self.resume_check.setToolTip(f"{Path(text) / CONFIG_JSON}: {saved.get('model', '?')}, epoch "
                                     f"{saved.get('epoch', '?')} of {planned} saved")
        hint = (f"This folder holds a {saved.get('model', '?')} run saved at epoch {saved.get('epoch', '?')} of "
                f"{planned}.")
        if not self.resume_check.isChecked():
            hint += " Starting without Resume begins a new run and overwrites its checkpoints."
        self.resume_hint.setText(hint)
        self.resume_hint.setVisible(True)

    def _on_resume_toggled(self, checked: bool) -> None:
        if checked:
            saved = read_saved_run(self.out_edit.text().strip())
            if saved is not None:
                self._fill_from_saved(saved)
        self._lock_resume_fields(checked)
        self._update_resume_box()

    def _fill_from_saved(self, saved: dict) -> None:
        """The settings of the saved run (those a resume may not change are then locked)."""
        config = saved["config"]
        self.set_model(str(config.get("model", saved.get("model", ""))))
        if config.get("data_root"):
            self.data_edit.setText(str(config["data_root"]))
        self._set_combo(self.layout_combo, config.get("layout"))
        self.fold_spin.setValue(int(config.get("fold", self.fold_spin.value())))
        self.shots_spin.setValue(int(config.get("shots", self.shots_spin.value())))
        self.epochs_spin.setValue(max(int(config.get("epochs", 1)), int(saved.get("epoch", 0) or 0)))
        self.steps_spin.setValue(int(config.get("steps_per_epoch", self.steps_spin.value())))
        self.val_spin.setValue(int(config.get("val_episodes", self.val_spin.value())))
        self.batch_spin.setValue(int(config.get("batch_size", self.batch_spin.value())))
        if config.get("lr") is not None:
            self.lr_edit.setText(f"{float(config['lr']):g}")
        if config.get("weight_decay") is not None:
            self.wd_edit.setText(f"{float(config['weight_decay']):g}")
        self._set_combo(self.optimizer_combo, config.get("optimizer") or "")
        self.size_spin.setValue(int(config.get("size") or 0))
        self.device_combo.select(str(config.get("device") or "auto"))
        self.backbone_edit.setText(str(config.get("backbone_weights") or ""))
        self.set_model_options(dict(config.get("model_options") or {}))

    @staticmethod
    def _set_combo(combo: QComboBox, data) -> None:
        index = combo.findData(data)
        if index >= 0:
            combo.setCurrentIndex(index)

    def _lock_resume_fields(self, locked: bool) -> None:
        running = self.busy
        for widget in (self.model_combo, self.layout_combo, self.fold_spin, self.shots_spin, self.size_spin,
                       self.preset_combo, self.options_table):
            widget.setEnabled(not locked and not running)
            widget.setToolTip(widget.toolTip().split("\n(locked")[0]
                              + ("\n(locked: a resumed run keeps the settings it was started with)" if locked else ""))

    # ------------------------------------------------------------------ settings
    def current_request(self) -> TrainRequest:
        lr = optional_number(self.lr_edit.text(), "learning rate")
        weight_decay = optional_number(self.wd_edit.text(), "weight decay")
        return TrainRequest(
            model=self.model_name, data_root=self.data_edit.text().strip(),
            layout=self.layout_combo.currentData() or "folders", fold=self.fold_spin.value(),
            shots=self.shots_spin.value(), out_dir=self.out_edit.text().strip(), epochs=self.epochs_spin.value(),
            steps_per_epoch=self.steps_spin.value(), val_episodes=self.val_spin.value(),
            batch_size=self.batch_spin.value(), lr=lr, optimizer=self.optimizer_combo.currentData() or None,
            weight_decay=weight_decay,
            size=self.size_spin.value() or None, device=self.device_combo.device(),
            backbone_weights=self.backbone_edit.text().strip() or None, model_options=self.model_options(),
            resume=self.resume_check.isChecked() and self.resume_check.isEnabled(),
        )

    def restore(self, model: str) -> None:
        """Defaults, then the last training settings (``Settings.training``), then ``model``."""
        saved: dict = dict(getattr(self.settings, "training", None) or {}) if self.settings is not None else {}
        if not self.set_model(str(saved.get("model", ""))):
            self._on_model_changed()
        self.layout_combo.setCurrentIndex(max(0, self.layout_combo.findData(saved.get("layout", "folders"))))
        self.data_edit.setText(str(saved.get("data_root", "")))
        self.fold_spin.setValue(int(saved.get("fold", 0)))
        self.shots_spin.setValue(int(saved.get("shots", 1)))
        self.out_edit.setText(str(saved.get("out_dir", "")))
        for spin, name in ((self.epochs_spin, "epochs"), (self.steps_spin, "steps_per_epoch"),
                           (self.val_spin, "val_episodes"), (self.batch_spin, "batch_size")):
            spin.setValue(int(saved.get(name, config_default(name))))
        if saved.get("lr") is not None:
            self.lr_edit.setText(f"{float(saved['lr']):g}")
        if saved.get("weight_decay") is not None:
            self.wd_edit.setText(f"{float(saved['weight_decay']):g}")
        self._set_combo(self.optimizer_combo, saved.get("optimizer") or "")
        self.size_spin.setValue(int(saved.get("size") or 0))
        self.device_combo.select(str(saved.get("device") or "auto"))
        self.backbone_edit.setText(str(saved.get("backbone_weights") or ""))
        options = (saved.get("model_options_by_model") or {}).get(self.model_name)
        if isinstance(options, dict):
            self.set_model_options(options)
        if model and model != self.model_name:
            self.set_model(model)
        self._update_resume_box()

    def remember(self, request: TrainRequest) -> None:
        if self.settings is None or not hasattr(self.settings, "training"):
            return
        previous = dict(self.settings.training or {})
        by_model = dict(previous.get("model_options_by_model") or {})
        by_model[request.model] = dict(request.model_options)
        values = asdict(request)
        values.pop("resume", None)
        values["model_options_by_model"] = by_model
        self.settings.training = values
        try:
            self.settings.save()
        except OSError as exc:
            self.message.emit(f"could not save the training settings: {exc}")

    def set_busy(self, busy: bool) -> None:
        """Lock the fields while a run is checked or running."""
        self.busy = busy
        for widget in (self.data_edit, self.out_edit, self.epochs_spin, self.steps_spin, self.batch_spin,
                       self.val_spin, self.optimizer_combo, self.lr_edit, self.wd_edit, self.device_combo,
                       self.backbone_edit):
            widget.setEnabled(not busy)
        for holder in (self.data_edit.parentWidget(), self.out_edit.parentWidget(), self.backbone_edit.parentWidget()):
            button = holder.property("browse_button")
            if button is not None:
                button.setEnabled(not busy)
        self._lock_resume_fields(self.resume_check.isChecked())
        self._update_resume_box()
