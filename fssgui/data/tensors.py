"""Episodes as model tensors (torch ``Dataset``) for training and evaluation.

Images are resized to ``size x size`` without keeping the aspect ratio (as DCAMA and AffEx do;
bilinear for images, nearest for masks) and normalised with the model's mean/std.
Augmentation (training only): an independent random horizontal flip of every image with its
mask, drawn from ``(seed, index)`` so that an epoch is reproducible.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .datasets import EpisodeSpec, FSSDataset


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)


class EpisodeTensorDataset(Dataset):
    """Item i: dict of ``query [3,S,S]``, ``query_mask [S,S]`` (long, 255 = ignore),
    ``supports [K,3,S,S]``, ``support_masks [K,S,S]`` (float 0/1) and ``class_index``."""

    def __init__(self, dataset: FSSDataset, episodes: Sequence[EpisodeSpec], size: int,
                 mean: Sequence[float], std: Sequence[float], *, augment: bool = False, seed: int = 0):
        self.dataset = dataset
        self.episodes = list(episodes)
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.episodes)

    def _image(self, image: np.ndarray) -> torch.Tensor:
        x = resize_image(image, self.size).astype(np.float32) / 255.0
        x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def __getitem__(self, index: int) -> dict:
        spec = self.episodes[index]
        data = self.dataset.load_episode(spec)
        rng = np.random.default_rng([self.seed, index])
        pairs = [(data.query_image, data.query_mask)] + list(zip(data.support_images, data.support_masks))
        images, masks = [], []
        for image, mask in pairs:
            if self.augment and rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            images.append(self._image(np.ascontiguousarray(image)))
            masks.append(torch.from_numpy(resize_mask(np.ascontiguousarray(mask), self.size).astype(np.int64)))
        return {
            "query": images[0],
            "query_mask": masks[0],
            "supports": torch.stack(images[1:]),
            "support_masks": (torch.stack(masks[1:]) == 1).float(),
            "class_index": spec.class_index,
        }
