"""The parity weight rule (``/work/shared/parity/README.md`` §1) and helpers for the parity tests.

Every value depends only on the state-dict key (a ``module.`` prefix is ignored) and the shape,
so the official harness and this project fill identical weights without sharing files.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

PARITY_DIR = Path(__file__).parent / "data" / "parity"


def parity_value(key: str, shape) -> torch.Tensor:
    name = key[len("module."):] if key.startswith("module.") else key
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    shape = tuple(int(s) for s in shape)
    if name.endswith("running_var"):
        v = rng.uniform(0.5, 1.5, size=shape)
    elif name.endswith("running_mean"):
        v = rng.normal(0.0, 0.1, size=shape)
    elif len(shape) <= 1:
        v = (1.0 + rng.normal(0.0, 0.1, size=shape)) if name.endswith("weight") else rng.normal(0.0, 0.1, size=shape)
    else:
        v = rng.normal(0.0, 1.0, size=shape) / math.sqrt(max(1, int(np.prod(shape[1:]))))
    return torch.from_numpy(np.asarray(v, dtype=np.float32))


def manifest(npz: Mapping[str, np.ndarray]) -> list[tuple[str, tuple[int, ...], bool]]:
    """(key, shape, filled) of every official state-dict entry, in order."""
    return [
        (str(k), tuple(json.loads(str(s))), bool(f))
        for k, s, f in zip(npz["sd_keys"], npz["sd_shapes"], npz["sd_filled"])
    ]


def parity_state_dict(model: torch.nn.Module, npz: Mapping[str, np.ndarray], prefix: str = "module.") -> dict:
    """The model's state dict with the filled entries replaced by the rule, keys prefixed.

    Entries the official constructor left alone (``num_batches_tracked``, PE tables...) keep the
    re-implementation's constructed values.
    """
    own = model.state_dict()
    out = {}
    for key, shape, filled in manifest(npz):
        value = parity_value(key, shape) if filled else own[key].clone()
        out[prefix + key] = value
    return out
