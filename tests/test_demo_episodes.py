"""The demo episodes shipped in ``fssgui/resources/demo``: they load, are documented, and the built-in
models (``matcher-effnet``, whose failure PROVENANCE.md documents, and the default model the app
opens them with) beat the trivial all-foreground prediction on each of them.

The model IoUs are printed (run with ``-s`` to see them)."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from fssgui.episode import Episode, load_episode
from fssgui.imaging import foreground_iou
from fssgui.resources import default_demo_episode, demo_dir, demo_episodes

EPISODE_DIRS = demo_episodes()
EPISODE_NAMES = [p.name for p in EPISODE_DIRS]
# The deliberate failure episode (see fssgui/resources/demo/PROVENANCE.md). It is NOT exempt from the
# IoU check: the model misses half of the person yet still beats all-foreground.
FAILURE_EPISODE = "person-failure-dark-coat"


def test_there_are_enough_demo_episodes() -> None:
    assert len(EPISODE_DIRS) >= 4, EPISODE_NAMES
    assert "person" in EPISODE_NAMES and FAILURE_EPISODE in EPISODE_NAMES


@pytest.mark.parametrize("name", EPISODE_NAMES)
def test_demo_episode_loads_and_validates(name: str) -> None:
    episode = load_episode(demo_dir() / name)
    episode.validate(name)
    assert episode.class_name
    assert episode.query_mask is not None and episode.query_mask.any(), f"{name}: no ground truth"
    assert not episode.query_mask.all()
    for image in [episode.query_image] + [s.image for s in episode.supports]:
        assert max(image.shape[:2]) <= 512, f"{name}: images must stay small (long side <= 512)"
    for png in (demo_dir() / name).glob("*mask*.png"):
        raw = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert raw.ndim == 2 and set(np.unique(raw).tolist()) <= {0, 255}, f"{png}: masks are 0/255"
    assert (demo_dir() / name / "NOTES.md").is_file()


def test_required_episode_kinds() -> None:
    episodes = {name: load_episode(demo_dir() / name) for name in EPISODE_NAMES}
    assert any(ep.shots >= 2 for ep in episodes.values()), "a 2-shot episode"
    person = episodes["person"]
    assert person.class_name == "person" and person.shots == 1 and person.query_mask is not None
    assert person.region is not None and person.region.any()
    # a person in one photo is the support, a person in another photo the query
    support_image = person.supports[0].image
    assert support_image.shape != person.query_image.shape or not np.array_equal(support_image, person.query_image)
    assert "failure" in episodes[FAILURE_EPISODE].class_name


def test_default_txt_names_existing_episodes() -> None:
    names = [line.strip() for line in (demo_dir() / "default.txt").read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    assert names, "default.txt is empty"
    for name in names:
        assert (demo_dir() / name / "episode.json").is_file(), f"default.txt names a missing episode {name!r}"
    assert default_demo_episode() == demo_dir() / names[0]


def test_provenance_mentions_every_image_file() -> None:
    provenance = (demo_dir() / "PROVENANCE.md").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"`([\w.-]+/[\w.-]+\.png)`", provenance))
    shipped = {f"{p.parent.name}/{p.name}" for d in EPISODE_DIRS for p in d.glob("*.png")}
    assert shipped, "no PNG files found"
    assert not shipped - mentioned, f"not in PROVENANCE.md: {sorted(shipped - mentioned)}"
    assert not mentioned - shipped, f"PROVENANCE.md lists files that do not exist: {sorted(mentioned - shipped)}"
    for photo in ("skimage/data/astronaut.png", "skimage/data/camera.png", "sample_data/grace_hopper.jpg"):
        assert photo in provenance


# ------------------------------------------------------------------------------ the built-in model
@pytest.fixture(scope="module")
def matcher():
    from fssgui.models import build_model

    torch.manual_seed(0)
    model = build_model("matcher-effnet")
    model.eval()
    return model


def _predict(model, episode: Episode) -> np.ndarray:
    """The pipeline's official predicted mask at the query's size."""
    from fssgui.pipeline import EpisodeRun, LoadedModel, ModelSpec

    loaded = LoadedModel(ModelSpec(model.entry.name, None, "cpu"), model, torch.device("cpu"))
    return EpisodeRun(loaded, episode).predicted().mask


@pytest.fixture(scope="module")
def default_model():
    """The model the app opens the demo with (``DEFAULT_MODEL``, matcher-lite2 today)."""
    from fssgui.models import build_model
    from fssgui.models.registry import DEFAULT_MODEL

    return build_model(DEFAULT_MODEL).eval()


@pytest.mark.parametrize("name", EPISODE_NAMES)
@pytest.mark.parametrize("which", ["matcher", "default_model"])
def test_builtin_model_beats_all_foreground(request, which: str, name: str) -> None:
    model = request.getfixturevalue(which)
    episode = load_episode(demo_dir() / name)
    predicted = _predict(model, episode)
    model_iou = foreground_iou(predicted, episode.query_mask)
    trivial_iou = foreground_iou(np.ones_like(episode.query_mask), episode.query_mask)
    label = model.entry.name
    print(f"\n{name}: {label} foreground IoU {model_iou:.3f}, all-foreground {trivial_iou:.3f}")
    assert model_iou > trivial_iou, f"{name}: {label} {model_iou:.3f} <= all-foreground {trivial_iou:.3f}"


def test_failure_episode_fails_for_the_documented_reason(matcher) -> None:
    """PROVENANCE.md says the dark coat is lost to the support's dark *background* (helmet visor,
    pedestal). Painting those support pixels grey must bring a large part of the person back."""
    episode = load_episode(demo_dir() / FAILURE_EPISODE)
    support = episode.supports[0]
    dark_background = ~support.mask & (cv2.cvtColor(support.image, cv2.COLOR_RGB2GRAY) < 70)
    assert dark_background.mean() > 0.15
    painted = episode.copy()
    painted.supports[0].image[dark_background] = 200
    before = foreground_iou(_predict(matcher, episode), episode.query_mask)
    after = foreground_iou(_predict(matcher, painted), episode.query_mask)
    print(f"\n{FAILURE_EPISODE}: IoU {before:.3f}, with the dark support background painted grey {after:.3f}")
    assert after > before + 0.1
