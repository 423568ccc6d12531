"""The causal metrics' batch size chosen for the device (``fssgui.models.base.default_causal_batch_size``)."""
from __future__ import annotations

import pytest
import torch

from fssgui.models.base import (
    MAX_CAUSAL_BATCH,
    OTHER_ACCELERATOR_BATCH,
    EpisodeTensors,
    batch_size_for_memory,
    default_causal_batch_size,
)


class CountingModel:
    """Counts forwards: on the CPU the choice must cost none."""

    def __init__(self) -> None:
        self.forwards = 0

    def encode_query(self, query):
        self.forwards += 1

    def predict(self, batch, **kwargs):
        self.forwards += 1


def _episode(device: str) -> EpisodeTensors:
    return EpisodeTensors(torch.zeros(1, 3, 8, 8, device=device), torch.zeros(1, 1, 3, 8, 8, device=device),
                          torch.zeros(1, 1, 8, 8, device=device))


def test_cpu_is_one_state_per_forward_and_runs_nothing():
    model = CountingModel()
    assert default_causal_batch_size(model, _episode("cpu")) == 1
    assert model.forwards == 0


def test_accelerator_without_memory_query():
    model = CountingModel()
    assert default_causal_batch_size(model, _episode("meta")) == OTHER_ACCELERATOR_BATCH
    assert default_causal_batch_size(model, _episode("meta"), max_batch=3) == 3
    assert model.forwards == 0


@pytest.mark.parametrize(
    "free,state,expected",
    [(80 * 2**30, 2**30, MAX_CAUSAL_BATCH), (10 * 2**30, 2**30, 5), (2**30, 2**30, 1), (2**20, 2**30, 1),
     (10 * 2**30, 0, MAX_CAUSAL_BATCH)],
)
def test_batch_size_from_free_memory(free, state, expected):
    assert batch_size_for_memory(free, state) == expected
