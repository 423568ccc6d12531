import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from testkit import make_episode
from fssgui.episode import load_episode, save_episode
from fssgui.errors import EpisodeError


def _write(folder: Path, episode=None):
    episode = episode or make_episode(shots=2)
    save_episode(episode, folder)
    return folder / "episode.json"


def _edit(json_path: Path, change):
    spec = json.loads(json_path.read_text())
    change(spec)
    json_path.write_text(json.dumps(spec))


def test_round_trip_is_exact(tmp_path):
    episode = make_episode(shots=2)
    episode.region = np.zeros(episode.query_image.shape[:2], bool)
    episode.region[10:20, 10:30] = True
    save_episode(episode, tmp_path / "ep")
    loaded = load_episode(tmp_path / "ep")
    assert loaded.class_name == "disc"
    np.testing.assert_array_equal(loaded.query_image, episode.query_image)
    np.testing.assert_array_equal(loaded.query_mask, episode.query_mask)
    np.testing.assert_array_equal(loaded.region, episode.region)
    assert loaded.shots == 2
    for a, b in zip(loaded.supports, episode.supports):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    # the json file can be named directly too
    assert load_episode(tmp_path / "ep" / "episode.json").shots == 2


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path):
    save_episode(make_episode(shots=1), tmp_path / "ep")
    save_episode(make_episode(shots=3, seed=1), tmp_path / "ep")
    assert load_episode(tmp_path / "ep").shots == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep"]
    assert not (tmp_path / "ep" / "support_3.png").exists()


def test_failed_save_keeps_the_old_episode(tmp_path):
    save_episode(make_episode(shots=1), tmp_path / "ep")
    bad = make_episode(shots=1)
    bad.supports[0].mask[:] = False
    with pytest.raises(EpisodeError, match="empty"):
        save_episode(bad, tmp_path / "ep")
    assert load_episode(tmp_path / "ep").shots == 1


def test_mask_value_one_is_foreground(tmp_path):
    json_path = _write(tmp_path / "ep")
    mask = cv2.imread(str(tmp_path / "ep" / "support_0_mask.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(tmp_path / "ep" / "support_0_mask.png"), (mask > 0).astype(np.uint8))
    loaded = load_episode(json_path)
    assert loaded.supports[0].mask.sum() == (mask > 0).sum()


@pytest.mark.parametrize(
    "change, message, names",
    [
        (lambda s: s.update(version=2), "unknown episode format version 2", "episode.json"),
        (lambda s: s.update(format="other"), "not an fssgui episode", "episode.json"),
        (lambda s: s.update(supports=[]), "K = 0", "episode.json"),
        (lambda s: s["query"].update(image="missing.png"), "query image file not found", "missing.png"),
        (lambda s: s["supports"][1].update(mask="../outside.png"), "escapes the episode folder", "episode.json"),
        (lambda s: s["supports"][0].update(image="/etc/passwd"), "must be relative", "episode.json"),
        (lambda s: s.update(query="x"), "\"query\" must be an object", "episode.json"),
    ],
)
def test_malformed_json_is_one_clear_error(tmp_path, change, message, names):
    json_path = _write(tmp_path / "ep")
    _edit(json_path, change)
    with pytest.raises(EpisodeError) as info:
        load_episode(json_path)
    text = str(info.value)
    assert message in text and names in text and "\n" not in text


def test_unreadable_image(tmp_path):
    json_path = _write(tmp_path / "ep")
    (tmp_path / "ep" / "support_1.png").write_bytes(b"not a png at all")
    with pytest.raises(EpisodeError, match=r"support_1\.png: not a readable image"):
        load_episode(json_path)


def test_mask_size_differs_from_image(tmp_path):
    json_path = _write(tmp_path / "ep")
    cv2.imwrite(str(tmp_path / "ep" / "support_0_mask.png"), np.full((10, 10), 255, np.uint8))
    with pytest.raises(EpisodeError, match=r"support_0_mask\.png: support 0 mask is 10x10 but its image is 80x60"):
        load_episode(json_path)


def test_empty_support_mask(tmp_path):
    json_path = _write(tmp_path / "ep")
    cv2.imwrite(str(tmp_path / "ep" / "support_1_mask.png"), np.zeros((60, 80), np.uint8))
    with pytest.raises(EpisodeError, match=r"support_1_mask\.png: support 1 mask is empty"):
        load_episode(json_path)


def test_mask_with_grey_levels_is_rejected(tmp_path):
    json_path = _write(tmp_path / "ep")
    cv2.imwrite(str(tmp_path / "ep" / "query_mask.png"), np.full((60, 80), 128, np.uint8))
    with pytest.raises(EpisodeError, match=r"query_mask\.png: mask values must be 0 and 255"):
        load_episode(json_path)


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(EpisodeError, match="episode file not found"):
        load_episode(tmp_path / "nothing")
    (tmp_path / "ep").mkdir()
    (tmp_path / "ep" / "episode.json").write_text("{oops")
    with pytest.raises(EpisodeError, match="not valid JSON"):
        load_episode(tmp_path / "ep")


def test_saved_files_have_the_usual_permissions(tmp_path):
    import os
    import stat

    from fssgui.io import _umask

    save_episode(make_episode(), tmp_path / "ep")
    umask = _umask()
    assert stat.S_IMODE(os.stat(tmp_path / "ep").st_mode) == 0o777 & ~umask
    for path in (tmp_path / "ep").iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path.name


def test_incomplete_episodes_load_only_when_allowed(tmp_path):
    from fssgui.episode import write_episode_files

    episode = make_episode(shots=1)
    episode.supports[0].mask[:] = False  # what a half-edited episode in the app may hold
    (tmp_path / "snap").mkdir()
    write_episode_files(episode, tmp_path / "snap")
    with pytest.raises(EpisodeError, match="support 0 mask is empty"):
        load_episode(tmp_path / "snap")
    loaded = load_episode(tmp_path / "snap", allow_incomplete=True)
    assert not loaded.supports[0].mask.any()
    np.testing.assert_array_equal(loaded.query_image, episode.query_image)


# ------------------------------------------------------------------------------ notes
NOTES = "# disc (2-shot)\r\n\nSupports: bright discs. Query: the same disc — ünïcödé, tabs\tand CRLF kept.\n"


def test_notes_round_trip_exactly_and_are_named_in_the_json(tmp_path):
    episode = make_episode(shots=2)
    episode.notes = NOTES
    json_path = save_episode(episode, tmp_path / "ep")
    assert json.loads(json_path.read_text())["notes"] == "NOTES.md"
    assert (tmp_path / "ep" / "NOTES.md").read_bytes() == NOTES.encode("utf-8")
    loaded = load_episode(tmp_path / "ep")
    assert loaded.notes == NOTES
    assert loaded.copy().notes == NOTES
    # saved again (the app's "Save"), the notes stay and are still the same bytes
    save_episode(loaded, tmp_path / "ep")
    assert load_episode(tmp_path / "ep").notes == NOTES


def test_without_notes_no_file_and_a_null_key(tmp_path):
    json_path = save_episode(make_episode(), tmp_path / "ep")
    assert json.loads(json_path.read_text())["notes"] is None
    assert not (tmp_path / "ep" / "NOTES.md").exists()
    assert load_episode(tmp_path / "ep").notes == ""


def test_older_folders_without_a_notes_key_read_notes_md(tmp_path):
    json_path = save_episode(make_episode(), tmp_path / "ep")
    _edit(json_path, lambda s: s.pop("notes"))  # as written before notes were saved (and the demos)
    assert load_episode(tmp_path / "ep").notes == ""  # no NOTES.md: no notes, still loads
    (tmp_path / "ep" / "NOTES.md").write_bytes(NOTES.encode("utf-8"))
    assert load_episode(tmp_path / "ep").notes == NOTES
    # an old folder's notes in another encoding still load (undecodable bytes replaced)
    (tmp_path / "ep" / "NOTES.md").write_bytes("caf\xe9 notes".encode("latin-1"))
    assert load_episode(tmp_path / "ep").notes == "caf\ufffd notes"
    # an explicit null means no notes, even with a stray NOTES.md beside it
    _edit(json_path, lambda s: s.update(notes=None))
    assert load_episode(tmp_path / "ep").notes == ""


def test_demo_episode_notes_survive_a_re_save(tmp_path):
    import shutil

    from fssgui.resources import demo_dir

    source = demo_dir() / "flag"
    copy = tmp_path / "flag"
    shutil.copytree(source, copy)
    loaded = load_episode(copy)
    assert loaded.notes == (source / "NOTES.md").read_text(encoding="utf-8") and loaded.notes.startswith("# flag")
    loaded.class_name = "flag (edited)"
    save_episode(loaded, copy)
    assert (copy / "NOTES.md").read_bytes() == (source / "NOTES.md").read_bytes()
    again = load_episode(copy)
    assert again.notes == loaded.notes and again.class_name == "flag (edited)"
    # the notes follow the episode: cleared in the episode, gone from the folder (not left stale)
    again.notes = ""
    save_episode(again, copy)
    assert not (copy / "NOTES.md").exists() and load_episode(copy).notes == ""


@pytest.mark.parametrize(
    "change, content, message",
    [
        (lambda s: s.update(notes="missing.md"), None, "notes file not found"),
        (lambda s: s.update(notes="../outside.md"), None, "escapes the episode folder"),
        (lambda s: s.update(notes=3), None, "notes must be a relative path string"),
        (lambda s: s.update(notes="NOTES.md"), b"\xff\xfe bad", "notes are not UTF-8 text"),
    ],
)
def test_bad_notes_are_one_clear_error(tmp_path, change, content, message):
    json_path = _write(tmp_path / "ep")
    if content is not None:
        (tmp_path / "ep" / "NOTES.md").write_bytes(content)
    _edit(json_path, change)
    with pytest.raises(EpisodeError) as info:
        load_episode(json_path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_oversized_notes_are_refused(tmp_path, monkeypatch):
    import fssgui.episode as episode_module

    episode = make_episode()
    episode.notes = "x" * 100
    save_episode(episode, tmp_path / "ep")
    monkeypatch.setattr(episode_module, "MAX_NOTES_BYTES", 99)
    with pytest.raises(EpisodeError, match=r"NOTES\.md: notes file is 100 bytes"):
        load_episode(tmp_path / "ep")


# ------------------------------------------------------------------ the user's other files
def test_re_saving_keeps_the_users_files_and_drops_the_old_episode_files(tmp_path):
    folder = tmp_path / "ep"
    save_episode(make_episode(shots=3), folder)
    (folder / "README.txt").write_text("my notes about where the images come from")
    (folder / "results").mkdir()
    (folder / "results" / "run1.csv").write_text("a,b\n1,2\n")
    (folder / ".hidden").write_bytes(b"\x00\x01")
    (folder / "link").symlink_to("README.txt")
    save_episode(make_episode(shots=1, seed=3), folder)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    assert names == [".hidden", "README.txt", "episode.json", "link", "query.png", "query_mask.png", "results",
                     "results/run1.csv", "support_0.png", "support_0_mask.png"]
    assert (folder / "README.txt").read_text() == "my notes about where the images come from"
    assert (folder / "results" / "run1.csv").read_text() == "a,b\n1,2\n"
    assert (folder / ".hidden").read_bytes() == b"\x00\x01"
    assert (folder / "link").is_symlink() and os.readlink(folder / "link") == "README.txt"
    assert load_episode(folder).shots == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep"]  # no temporary or old folder left


def test_re_saving_a_hand_written_episode_replaces_the_files_it_named(tmp_path):
    folder = tmp_path / "ep"
    save_episode(make_episode(shots=1), folder)
    (folder / "images").mkdir()
    os.replace(folder / "query.png", folder / "images" / "q.png")
    (folder / "images" / "other.png").write_bytes(b"kept")
    _edit(folder / "episode.json", lambda s: s["query"].update(image="./images/q.png"))
    loaded = load_episode(folder)
    save_episode(loaded, folder)
    assert not (folder / "images" / "q.png").exists()  # the old episode's file, now query.png
    assert (folder / "images" / "other.png").read_bytes() == b"kept"
    np.testing.assert_array_equal(load_episode(folder).query_image, loaded.query_image)


def test_a_failed_save_keeps_the_users_files(tmp_path, monkeypatch):
    import fssgui.episode as episode_module

    folder = tmp_path / "ep"
    save_episode(make_episode(), folder)
    (folder / "mine.txt").write_text("mine")

    def failing_link(source, target):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(episode_module, "_link_or_copy", failing_link)
    with pytest.raises(OSError, match="disk full"):
        save_episode(make_episode(seed=2), folder)
    assert (folder / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep"]


def test_files_are_copied_where_hard_links_fail(tmp_path, monkeypatch):
    folder = tmp_path / "ep"
    save_episode(make_episode(), folder)
    (folder / "mine.txt").write_text("mine")

    def no_links(*args, **kwargs):
        raise OSError("hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    save_episode(make_episode(seed=2), folder)
    assert (folder / "mine.txt").read_text() == "mine"


def test_saving_over_a_folder_that_is_not_an_episode_is_refused(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(EpisodeError, match="holds files but no episode.json"):
        save_episode(make_episode(), other)
    assert sorted(p.name for p in other.iterdir()) == ["holiday.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(EpisodeError, match="not a folder"):
        save_episode(make_episode(), tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    save_episode(make_episode(), empty)  # an empty folder is fine
    assert load_episode(empty).shots == 1


def test_saving_through_a_symbolic_link_keeps_the_link(tmp_path):
    real = tmp_path / "real"
    save_episode(make_episode(), real)
    (tmp_path / "alias").symlink_to(real)
    json_path = save_episode(make_episode(shots=2), tmp_path / "alias")
    assert json_path == tmp_path / "alias" / "episode.json"
    assert (tmp_path / "alias").is_symlink() and load_episode(real).shots == 2
