"""Two windows on the same autosave folder and settings file: neither loses the other's work.
Each window autosaves into its own slot (held by a lock the system drops when the process ends);
each settings save merges what that window changed into the file, under a lock."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fork_writers import ForkServer, shared_server, version
from fssgui.settings import MAX_RECENT, Autosave, Settings
from fssgui.locks import FileLock
from hostile_testkit import REPO


def _class(episode) -> str:
    return episode.class_name


def test_two_autosaves_keep_their_own_snapshots(tmp_path):
    root = tmp_path / "autosave"
    a, b = Autosave(root), Autosave(root)
    a.write(version(1), "/episodes/a", dirty=True)
    b.write(version(2), "/episodes/b", dirty=True)
    a.write(version(3), "/episodes/a", dirty=True)  # A's later edit does not touch B's snapshot
    assert a.slot != b.slot
    assert _class(a.read()) == "version 3" and _class(b.read()) == "version 2"
    assert a.restorable().source == "/episodes/a" and b.restorable().source == "/episodes/b"
    # A crashes; the next start restores A's edits, not the running B's
    a.release()
    c = Autosave(root)
    info = c.restorable()
    assert info is not None and info.source == "/episodes/a" and _class(c.read()) == "version 3"
    # B closes with unsaved edits; the start after that gets them
    b.mark_clean_exit(dirty=True)
    d = Autosave(root)
    assert d.restorable().source == "/episodes/b" and _class(d.read()) == "version 2"
    # nothing else waits: a new window takes a free slot and offers nothing
    e = Autosave(root)
    assert e.restorable() is None
    e.write(version(4), "", dirty=True)
    assert e.slot not in (c.slot, d.slot)
    # C closes cleanly (everything saved): its snapshot is gone, its slot free for the next window
    c.mark_clean_exit(dirty=False)
    assert not (c.slot / Autosave.SNAPSHOT_FOLDER).exists()
    f = Autosave(root)
    f.write(version(5), "", dirty=True)
    assert f.slot == c.slot
    for window in (d, e, f):
        window.mark_clean_exit(dirty=False)


def test_the_newest_left_snapshot_is_offered_first(tmp_path):
    root = tmp_path / "autosave"
    windows = [Autosave(root) for _ in range(3)]
    for i, window in enumerate(windows):
        window.write(version(i), f"/episodes/{i}", dirty=True)
        time.sleep(0.01)
    for window in windows:
        window.release()  # all three crash
    restored = []
    starts = []
    for _ in range(3):
        start = Autosave(root)
        info = start.restorable()
        restored.append(info.source)
        starts.append(start)  # still running: its slot stays taken
    assert restored == ["/episodes/2", "/episodes/1", "/episodes/0"]
    assert Autosave(root).restorable() is None


def test_two_writer_processes_autosave_side_by_side_and_both_are_restored(tmp_path):
    server = shared_server()
    server.reported()
    root = tmp_path / "autosave"
    far = 10**6  # the second writer's versions start here: the first cannot reach them in a second
    first = server.start("autosave", root, 100)
    time.sleep(0.3)
    second = server.start("autosave", root, far)
    time.sleep(0.6)
    server.kill(first)
    server.kill(second)
    done = server.reported()
    last = {100: max(k for k in done if k < far), far: max(k for k in done if k >= far)}
    one, two = Autosave(root), Autosave(root)
    restored = {one.restorable().source, two.restorable().source}
    versions = [int(s.rsplit("-", 1)[1]) for s in restored]
    families = {(far if k >= far else 100): k for k in versions}
    assert set(families) == {100, far}, restored  # each window's own work, neither lost
    for family, k in families.items():
        assert k in (last[family], last[family] + 1)
    assert {_class(one.read()), _class(two.read())} == {f"version {k}" for k in families.values()}


def test_settings_saves_merge_what_each_window_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSGUI_HOME", str(tmp_path / "home"))
    Settings().save()
    a, b = Settings.load(), Settings.load()
    a.brush_size = 40
    a.add_recent_episode("/episodes/a")
    b.colormap = "viridis"
    b.add_recent_episode("/episodes/b")
    b.add_recent_checkpoint("/weights/b.pth")
    a.save()
    b.save()  # B never saw A's changes; it keeps them
    merged = Settings.load()
    assert merged.brush_size == 40 and merged.colormap == "viridis"
    assert merged.recent_episodes[:2] == [str(Path("/episodes/b").resolve()), str(Path("/episodes/a").resolve())]
    assert merged.recent_checkpoints == [str(Path("/weights/b.pth").resolve())]
    assert b.brush_size == 40  # and B now holds the merged values
    # the same setting changed in both: the later save wins
    a.theme, b.theme = "dark", "light"
    a.save()
    b.save()
    assert Settings.load().theme == "light"
    # a Settings made in code (not loaded) writes all its values, as before
    Settings(brush_size=9).save()
    assert Settings.load().brush_size == 9 and Settings.load().colormap == "inferno"


def test_two_processes_saving_settings_lose_no_recent_episode(tmp_path, monkeypatch):
    home = tmp_path / "home"
    server = shared_server()
    server.reported()
    pids = [server.start("settings", home, start) for start in (100, 200)]
    for pid in pids:
        ForkServer.wait(pid)
    done = server.reported()
    assert sorted(done) == [100 + i for i in range(6)] + [200 + i for i in range(6)]
    monkeypatch.setenv("FSSGUI_HOME", str(home))
    settings = Settings.load()
    assert not settings.load_problem
    assert sorted(settings.recent_episodes) == sorted(str(Path(f"/episodes/{k}").resolve()) for k in done)
    assert len(settings.recent_episodes) == MAX_RECENT == 12
    assert settings.training["i"] == 5  # the last save of one of the two


def test_file_lock_excludes_and_is_dropped_by_a_killed_holder(tmp_path):
    path = tmp_path / "x.lock"
    one, two = FileLock(path), FileLock(path)
    assert one.try_acquire() and not two.try_acquire()
    with pytest.raises(OSError, match="still locked"):
        two.acquire(timeout=0.05)
    one.release()
    assert two.try_acquire()
    two.release()
    holder = ("import os, sys; from fssgui.locks import FileLock; FileLock(sys.argv[1]).try_acquire() or sys.exit(3); "
              "os.kill(os.getpid(), 9)")  # a holder that dies without releasing
    proc = subprocess.run([sys.executable, "-c", holder, str(path)], env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == -9
    assert one.try_acquire()
    one.release()
