"""Lazily rendered thumbnails of the failure table: a row's pictures are drawn (on a worker pool,
by :func:`fssgui.triage.thumbnails.episode_thumbnails`) the first time the view asks for them, kept
in a bounded cache, and announced with ``ready(episode)`` so the model repaints that row. Only the
rows on screen are ever drawn, so a table of thousands of episodes stays fluid."""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QPixmap

from ...triage.results import FailureRecord
from ...triage.thumbnails import PREDICTION, episode_thumbnails
from ..canvas import rgb_to_pixmap
from ..workers import WorkerPool


class ThumbnailCache(QObject):
    """``pixmap(record, kind)``: the picture, or None while it is being drawn (``ready`` follows)."""

    ready = Signal(int)  # episode

    def __init__(self, pool: Optional[WorkerPool] = None, parent: Optional[QObject] = None, side: int = 64,
                 capacity: int = 1500) -> None:
        super().__init__(parent)
        self.side = side
        self.capacity = capacity
        self._own_pool = pool is None
        self._pool = pool if pool is not None else WorkerPool("thumbnails", 2, self)
        self._source = None
        self._generation = 0
        self._cache: OrderedDict[int, dict[str, QPixmap]] = OrderedDict()
        self._pending: set[int] = set()
        self._failed: set[int] = set()

    def set_source(self, source) -> None:
        """The dataset the pictures come from (an EpisodeSource, or None); forgets every picture."""
        self._source = source
        self._generation += 1
        self._cache.clear()
        self._pending.clear()
        self._failed.clear()

    def pixmap(self, record: FailureRecord, kind: str) -> Optional[QPixmap]:
        pictures = self._cache.get(record.episode)
        stale = pictures is not None and record.thumbnail is not None and PREDICTION not in pictures
        if pictures is not None and not stale:
            self._cache.move_to_end(record.episode)
            return pictures.get(kind)
        if self._source is not None and record.episode not in self._pending and record.episode not in self._failed:
            self._pending.add(record.episode)
            generation, source, side = self._generation, self._source, self.side
            handle = self._pool.submit(lambda ctx: episode_thumbnails(source, record, side),
                                       description=f"thumbnails of episode {record.episode}")
            # an unreadable file: that row shows no picture
            handle.finished.connect(lambda pictures: self._on_drawn(generation, record.episode, pictures))
            handle.failed.connect(lambda _message, _trace: self._on_drawn(generation, record.episode, None))
        return None if pictures is None else pictures.get(kind)

    def _on_drawn(self, generation: int, episode: int, pictures) -> None:
        if generation != self._generation:
            return
        self._pending.discard(episode)
        if pictures is None:
            self._failed.add(episode)
            return
        self._cache[episode] = {kind: rgb_to_pixmap(rgb) for kind, rgb in pictures.items()}
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        self.ready.emit(episode)

    def idle(self) -> bool:
        return not self._pending

    def shutdown(self) -> None:
        self._generation += 1
        if self._own_pool:
            self._pool.shutdown(wait=False)
