"""Killed while writing: a child process is SIGKILLed at random moments while it saves an episode
(:func:`fssgui.episode.save_episode`) and while it autosaves (:meth:`Autosave.write`), 60 times in
all. After each kill the episode folder is the old or the new version, complete (and the user's
own file in it is still there); the next start restores the last autosave through the calls the
window makes, and at the end through the window itself. A corrupt autosave is set aside with a
message, never a crash."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest

from fssgui.episode import load_episode, save_episode
from fssgui.settings import Autosave
from fork_writers import shared_server, version

KILLS_PER_KIND = 30
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fork server needs os.fork (POSIX)")


@pytest.fixture(scope="module")
def server():
    return shared_server()


def _same(episode, k: int) -> None:
    """``episode`` is version ``k`` exactly: every pixel, every mask, the notes."""
    expected = version(k)
    assert episode.class_name == expected.class_name
    assert episode.notes == expected.notes
    np.testing.assert_array_equal(episode.query_image, expected.query_image)
    np.testing.assert_array_equal(episode.query_mask, expected.query_mask)
    assert len(episode.supports) == len(expected.supports)
    for got, want in zip(episode.supports, expected.supports):
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.mask, want.mask)


def _version_of(episode) -> int:
    return int(episode.class_name.split()[1])


def test_a_save_killed_at_any_moment_leaves_the_old_or_the_new_episode(server, tmp_path):
    rng = random.Random(1)
    folder = tmp_path / "ep"
    save_episode(version(0), folder)
    (folder / "mine.txt").write_text("the user's own file")
    on_disk, start = 0, 1
    for _ in range(KILLS_PER_KIND):
        last = server.run_and_kill("episode", folder, start, rng.uniform(0.0, 0.25))
        episode = load_episode(folder)  # complete: every file it names is there and valid
        found = _version_of(episode)
        # the last version reported saved, or the one in flight whose swap completed unreported
        assert found in ({on_disk, start} if last < start else {last, last + 1}), (found, last, start)
        _same(episode, found)
        assert (folder / "mine.txt").read_text() == "the user's own file"
        on_disk, start = found, max(last, found) + 1
    # what the killed writers left beside the folder is removed by the next save
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ep"]
    save_episode(version(start), folder)
    assert [p.name for p in tmp_path.iterdir()] == ["ep"], leftovers
    _same(load_episode(folder), start)


def test_an_autosave_killed_at_any_moment_restores_the_last_snapshot(server, tmp_path):
    rng = random.Random(2)
    root = tmp_path / "autosave"
    first = Autosave(root)
    first.write(version(0), "/episodes/source-0", dirty=True)
    first.release()  # the first window "crashed"
    on_disk, start = 0, 1
    for _ in range(KILLS_PER_KIND):
        last = server.run_and_kill("autosave", root, start, rng.uniform(0.0, 0.25))
        restart = Autosave(root)  # the next start, through the calls the window makes
        info = restart.restorable()
        assert info is not None and info.dirty and not info.clean_exit
        episode, history = restart.read(), restart.read_history()
        found = _version_of(episode)
        assert found in ({on_disk, start} if last < start else {last, last + 1}), (found, last, start)
        _same(episode, found)
        assert info.source == f"/episodes/source-{found}"  # the session belongs to the snapshot
        assert not history.error
        restart.release()
        on_disk, start = found, max(last, found) + 1
    # one slot throughout (each start took the killed writer's), and no session file beside it
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["episode", "lock"]


def test_the_window_restores_the_snapshot_a_killed_writer_left(qtbot, tmp_path, make_window, server):
    root = tmp_path / "autosave"
    Autosave(root).write(version(0), "", dirty=True)
    last = server.run_and_kill("autosave", root, 1, 0.3)
    window = make_window(autosave_root=root, show=False)
    assert window.episode_io.restore_if_any()
    episode = window.current_episode()
    assert _version_of(episode) in (last, last + 1)
    _same(episode, _version_of(episode))
    assert window.edits.dirty and not window.errors


@pytest.mark.parametrize("damage", ["png", "json", "session", "history", "gone"])
def test_a_corrupt_autosave_is_set_aside_with_a_message(qtbot, tmp_path, make_window, damage):
    root = tmp_path / "autosave"
    crashed = Autosave(root)
    crashed.write(version(3), "/episodes/three", dirty=True)
    crashed.release()
    snapshot = root / "episode"
    if damage == "png":
        (snapshot / "support_0.png").write_bytes((snapshot / "support_0.png").read_bytes()[:50])
    elif damage == "json":
        (snapshot / "episode.json").write_text("{ not json")
    elif damage == "session":
        (snapshot / "session.json").write_bytes(b"\x00\xff garbage")
    elif damage == "history":
        (snapshot / Autosave.HISTORY_FILE).write_bytes(b"PK\x03\x04 not a history")
    else:
        (snapshot / "query.png").unlink()
    window = make_window(autosave_root=root, show=False)
    restored = window.episode_io.restore_if_any()
    if damage in ("session", "history"):  # the episode itself is fine: restored (from an unknown source)
        assert restored and _version_of(window.current_episode()) == 3
        return
    assert not restored
    aside = [p for p in root.iterdir() if p.name.startswith("unreadable-")]
    assert len(aside) == 1 and (aside[0] / "episode.json").exists()  # kept for the user, not deleted
    assert not snapshot.exists()
    assert len(window.errors) == 1 and "set aside as" in window.errors[0] and str(aside[0]) in window.errors[0]
    window.set_episode(version(4), None, dirty=True)  # the window goes on working, and autosaves again
    window.episode_io.write_autosave()
    window.episode_io.flush_autosave()
    assert _version_of(window.episode_io.autosave.read()) == 4
    assert Autosave(root).restorable() is None  # the slot is the running window's
