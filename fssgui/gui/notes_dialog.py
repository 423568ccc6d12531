"""File ▸ Episode notes: read and edit the episode's notes (saved with it as NOTES.md)."""
from __future__ import annotations

from typing import Callable

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QPlainTextEdit, QVBoxLayout, QWidget


class NotesDialog(QDialog):
    """The notes in an editor; OK hands changed text to ``on_changed`` (unchanged text is no edit)."""

    def __init__(self, notes: str, on_changed: Callable[[str], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Episode notes")
        layout = QVBoxLayout(self)
        self.editor = QPlainTextEdit(self)
        self.editor.setPlainText(notes)
        self.editor.setPlaceholderText("What this episode shows, where its images come from… (saved as NOTES.md)")
        shown = self.editor.toPlainText()  # line endings as the editor keeps them: unchanged text stays clean
        layout.addWidget(self.editor)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
                                   parent=self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.accepted.connect(lambda: self.editor.toPlainText() != shown and on_changed(self.editor.toPlainText()))
        self.resize(620, 420)
