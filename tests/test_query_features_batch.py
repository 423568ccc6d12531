"""Every few-shot model reuses one query's ``encode_query`` features for a batch of episodes that
share the query: causal states evaluated together (several per batch on a GPU) and DeepLift's
input + baseline pair. SimPropNet and I2R used to fail on it (shape errors)."""
from __future__ import annotations

import pytest
import torch

from fssgui.models.base import EpisodeTensors
from fssgui.models.registry import get_entry

# one model per class (the other registered variants share the code path)
MODELS = ["simpropnet-resnet50", "i2r-resnet50", "matcher-effnet", "matcher-lite2", "dcama-resnet50", "dmtnet"]


@pytest.mark.parametrize("name", MODELS)
def test_one_query_encoding_serves_a_batch_of_episodes(name):
    entry = get_entry(name)
    torch.manual_seed(0)
    model = entry.builder().eval()
    size = entry.input_size
    query = torch.randn(1, 3, size, size)
    supports = torch.randn(2, 1, 3, size, size)
    masks = torch.zeros(2, 1, size, size)
    masks[0, 0, : size // 2] = 1
    masks[1, 0, :, size // 3 :] = 1
    with torch.no_grad():
        features = model.encode_query(query)
        together = model.predict(EpisodeTensors(query.expand(2, -1, -1, -1), supports, masks),
                                 query_features=features).logits
        alone = [model.predict(EpisodeTensors(query, supports[i : i + 1], masks[i : i + 1]),
                               query_features=features).logits for i in range(2)]
    assert together.shape[0] == 2
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-4, atol=1e-4)
