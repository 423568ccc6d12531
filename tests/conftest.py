import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

from fssgui.episode import Episode, Support


def make_episode(shots: int = 1, size=(60, 80), seed: int = 0) -> Episode:
    """A small synthetic episode: a bright disc on noise, in every image."""
    rng = np.random.default_rng(seed)
    h, w = size

    def picture(cy, cx, r):
        image = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
        yy, xx = np.mgrid[:h, :w]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        image[mask] = (230, 180, 40)
        return image, mask

    query, query_mask = picture(h // 2, w // 2, min(h, w) // 4)
    supports = [Support(*picture(h // 3 + i, w // 3 + i, min(h, w) // 5)) for i in range(shots)]
    return Episode(query, supports, "disc", query_mask=query_mask)


@pytest.fixture
def episode():
    return make_episode()
