import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_episode
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

    from fssgui.imaging import _umask

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
