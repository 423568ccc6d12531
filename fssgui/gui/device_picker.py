"""The device picker (run toolbar, training dialog): auto, CPU, and each CUDA device.

The CUDA devices are listed once per process on the worker pool (the first CUDA query can take
seconds while the driver starts, and it imports torch) when :meth:`DevicePicker.list_devices` is
called; until the list arrives the picker offers auto and CPU and says it is looking. A chosen
device that is not (yet) in the list is selected once the list has it."""
from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QWidget

from ..pipeline.models import cuda_devices
from .workers import WorkerPool, once_per_process


def _list_devices(ctx) -> list[tuple[str, str]]:
    return cuda_devices()


class DevicePicker(QComboBox):
    """See the module docstring. ``devicesListed`` is emitted once the CUDA list is in."""

    devicesListed = Signal()

    def __init__(self, pool: WorkerPool, auto_tip: str, no_cuda_tip: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumContentsLength(14)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.auto_tip, self.no_cuda_tip = auto_tip, no_cuda_tip
        self.pool = pool
        self.cuda_available: Optional[bool] = None  # None until listed
        self.wanted = "auto"
        self._fill(None)
        # a choice made before the list arrives is kept when it arrives
        self.currentIndexChanged.connect(lambda i: setattr(self, "wanted", self.itemData(i) or "auto"))

    def list_devices(self) -> None:
        """Ask for the CUDA devices (once per process) and fill the picker when they arrive."""
        once_per_process(self.pool, _list_devices, self._fill, "listing CUDA devices")

    def _fill(self, devices: Optional[list[tuple[str, str]]]) -> None:
        self.blockSignals(True)
        self.clear()
        self.addItem("auto", "auto")
        self.setItemData(0, self.auto_tip, Qt.ItemDataRole.ToolTipRole)
        self.addItem("CPU", "cpu")
        if devices is None:
            self._disabled_item("CUDA (looking…)", "cuda", "listing the CUDA devices")
        elif devices:
            for device, name in devices:
                self.addItem(f"{device} {name}", device)
        else:
            self._disabled_item("CUDA (not available)", "cuda", self.no_cuda_tip)
        self.cuda_available = None if devices is None else bool(devices)
        self.select(self.wanted)
        self.blockSignals(False)
        if devices is not None:
            self.devicesListed.emit()

    def _disabled_item(self, text: str, data: str, tip: str) -> None:
        self.addItem(text, data)
        item = self.model().item(self.count() - 1)
        item.setEnabled(False)
        item.setToolTip(tip)

    def select(self, device: str) -> None:
        """Choose ``device`` now, or as soon as the list has it (an unusable one falls back to auto)."""
        wanted = device or "auto"
        index = self.findData(wanted)
        if index < 0 or not self.model().item(index).isEnabled():
            index = 0
        self.setCurrentIndex(index)
        self.wanted = wanted

    def usable(self, device: str) -> bool:
        index = self.findData(device)
        return index >= 0 and self.model().item(index).isEnabled()

    def device(self) -> str:
        return self.currentData() or "auto"
