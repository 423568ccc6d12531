"""The window's actions, each declared once: id, text, keys, what it does, where it appears and when
it is enabled (napari's app-model actions are the example).

An :class:`ActionSpec` names its menus (``MenuPlace``: menu id, group, order; a separator falls
between groups) and toolbars; :class:`ActionRegistry` turns the specs into ``QAction`` objects,
builds the menus and toolbars from them, and re-evaluates every ``enabled`` rule on
:meth:`ActionRegistry.update`. The keyboard cheat sheet is written from the same specs. A panel
adds its own actions with :meth:`ActionRegistry.add` (its menu is rebuilt); a menu that lists
things known only at run time (recent episodes, demos) is a :class:`SubmenuSpec` filled each time
it opens.

Callbacks get the window: ``callback(window)``, or ``callback(window, checked)`` for a checkable
action (called on ``toggled``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu, QMenuBar, QToolBar, QWidget


@dataclass(frozen=True)
class MenuPlace:
    menu: str  # a menu id (see ActionRegistry.MENUS) or a SubmenuSpec id
    group: int = 0  # groups in ascending order, separated by a line
    order: int = 0  # position inside the group


@dataclass(frozen=True)
class ActionSpec:
    id: str
    text: str  # menu text ("&" marks the mnemonic)
    callback: Callable[..., Any]
    keys: str = ""  # QKeySequence text ("" = none)
    menus: tuple[MenuPlace, ...] = ()
    toolbars: tuple[str, ...] = ()  # toolbar ids, in the order the specs are declared
    tip: str = ""
    checkable: bool = False
    checked: bool = False
    exclusive: str = ""  # actions sharing this name form one exclusive group (tools, themes)
    enabled: Optional[Callable[[Any], bool]] = None  # rule on the window; None = always enabled
    sheet_group: str = ""  # cheat-sheet section (default: the first menu's title)


@dataclass(frozen=True)
class SubmenuSpec:
    id: str
    text: str
    place: MenuPlace
    fill: Optional[Callable[[Any, QMenu], None]] = None  # fill(window, menu) each time it opens


class ActionRegistry:
    """The window's QActions by id, and the menus and toolbars built from their specs."""

    #: the menu bar, in order: (menu id, title)
    MENUS = (("file", "&File"), ("edit", "&Edit"), ("region", "&Region"), ("view", "&View"), ("run", "R&un"),
             ("help", "&Help"))

    def __init__(self, window: QWidget) -> None:
        self.window = window
        self.specs: dict[str, ActionSpec] = {}
        self.actions: dict[str, QAction] = {}
        self.submenus: dict[str, SubmenuSpec] = {}
        self.menus: dict[str, QMenu] = {}
        self.toolbars: dict[str, QToolBar] = {}
        self._groups: dict[str, QActionGroup] = {}

    # ------------------------------------------------------------------ declaring
    def add(self, *specs: ActionSpec | SubmenuSpec) -> None:
        """Create the actions (and submenus) of ``specs``; menus already built are rebuilt."""
        touched: set[str] = set()
        for spec in specs:
            if isinstance(spec, SubmenuSpec):
                self.submenus[spec.id] = spec
                touched.add(spec.place.menu)
                continue
            self.specs[spec.id] = spec
            self.actions[spec.id] = self._make(spec)
            touched.update(place.menu for place in spec.menus)
        for menu_id in touched:
            if menu_id in self.menus:
                self._fill(menu_id)

    def _make(self, spec: ActionSpec) -> QAction:
        action = QAction(spec.text, self.window)
        if spec.keys:
            action.setShortcut(QKeySequence(spec.keys))
        plain = spec.text.replace("&", "").replace("…", "")
        action.setToolTip((spec.tip or plain) + (f" ({spec.keys})" if spec.keys else ""))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if spec.checkable:
            action.setCheckable(True)
            action.setChecked(spec.checked)
            action.toggled.connect(lambda on, s=spec: s.callback(self.window, on))
        else:
            action.triggered.connect(lambda _=False, s=spec: s.callback(self.window))
        if spec.exclusive:
            group = self._groups.get(spec.exclusive)
            if group is None:
                group = self._groups[spec.exclusive] = QActionGroup(self.window)
            group.addAction(action)
        self.window.addAction(action)
        return action

    # ------------------------------------------------------------------ menus and toolbars
    def build_menus(self, bar: QMenuBar) -> None:
        for menu_id, title in self.MENUS:
            self.menus[menu_id] = bar.addMenu(title)
        for menu_id in list(self.menus):
            self._fill(menu_id)

    def _entries(self, menu_id: str) -> list[tuple[MenuPlace, ActionSpec | SubmenuSpec]]:
        entries: list[tuple[MenuPlace, ActionSpec | SubmenuSpec]] = []
        for spec in self.specs.values():
            entries += [(place, spec) for place in spec.menus if place.menu == menu_id]
        entries += [(sub.place, sub) for sub in self.submenus.values() if sub.place.menu == menu_id]
        return sorted(entries, key=lambda e: (e[0].group, e[0].order))

    def _fill(self, menu_id: str) -> None:
        menu = self.menus[menu_id]
        menu.clear()
        group = None
        for place, spec in self._entries(menu_id):
            if group is not None and place.group != group:
                menu.addSeparator()
            group = place.group
            if isinstance(spec, SubmenuSpec):
                sub = menu.addMenu(spec.text)
                self.menus[spec.id] = sub
                if spec.fill is not None:
                    sub.aboutToShow.connect(lambda s=spec, m=sub: self._refill(s, m))
                    self._refill(spec, sub)
                else:
                    self._fill(spec.id)
            else:
                menu.addAction(self.actions[spec.id])

    def _refill(self, spec: SubmenuSpec, menu: QMenu) -> None:
        menu.clear()
        spec.fill(self.window, menu)
        menu.setEnabled(bool(menu.actions()))

    def fill_toolbar(self, toolbar_id: str, bar: QToolBar) -> None:
        """Add the actions placed on ``toolbar_id`` (in declaration order) to ``bar``."""
        self.toolbars[toolbar_id] = bar
        for spec in self.specs.values():
            if toolbar_id in spec.toolbars:
                bar.addAction(self.actions[spec.id])

    # ------------------------------------------------------------------ state
    def update(self) -> None:
        """Re-evaluate every ``enabled`` rule on the window."""
        for spec in self.specs.values():
            if spec.enabled is not None:
                self.actions[spec.id].setEnabled(bool(spec.enabled(self.window)))

    def __getitem__(self, action_id: str) -> QAction:
        return self.actions[action_id]

    def __contains__(self, action_id: str) -> bool:
        return action_id in self.actions

    # ------------------------------------------------------------------ the cheat sheet
    def cheat_sheet_html(self, gestures: Iterable[tuple[str, str]] = ()) -> str:
        """The Help ▸ Keyboard shortcuts page: every action with keys, by section, then the mouse."""
        titles = dict(self.MENUS)
        groups: dict[str, list[ActionSpec]] = {}
        for spec in self.specs.values():
            if spec.keys:
                section = spec.sheet_group or titles.get(spec.menus[0].menu if spec.menus else "", "Other")
                groups.setdefault(section.replace("&", ""), []).append(spec)
        rows = []
        for group, items in groups.items():
            rows.append(f"<tr><td colspan=2><b>{group}</b></td></tr>")
            for s in items:
                rows.append(f"<tr><td><code>{s.keys}</code></td><td>{s.text.replace('&', '').replace('…', '')}</td></tr>")
        rows.append("<tr><td colspan=2><b>Mouse</b></td></tr>")
        for gesture, what in gestures:
            rows.append(f"<tr><td><code>{gesture}</code></td><td>{what}</td></tr>")
        return "<table cellspacing=4>" + "".join(rows) + "</table>"
