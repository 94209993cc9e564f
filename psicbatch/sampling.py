"""What each training epoch sees: balanced draws, random flips, dilated masks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from psicbatch.errors import PsicbatchError

DILATION_CHUNK = 16  # masks dilated at once


def dilate_masks(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """N x 1 x H x W masks grown by ``pixels`` (a square neighbourhood). Only masks with a
    defect pixel are dilated, a few at a time: max-pooling every mask at once would take
    float32 copies of the whole set (8 bytes per pixel of every image, at once)."""
    if pixels <= 0:
        return masks
    kernel = 2 * pixels + 1
    dilated = masks.clone()
    defective = torch.nonzero(masks.flatten(1).any(dim=1)).flatten().tolist()
    for start in range(0, len(defective), DILATION_CHUNK):
        chunk = defective[start : start + DILATION_CHUNK]
        pooled = F.max_pool2d(masks[chunk].float(), kernel, stride=1, padding=pixels)
        dilated[chunk] = pooled > 0
    return dilated


def balanced_order(labels: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """Every defective image plus as many defect-free ones, drawn afresh, shuffled."""
    positives = np.flatnonzero(labels.numpy())
    negatives = np.flatnonzero(~labels.numpy())
    if positives.size == 0:
        raise PsicbatchError("training needs at least one defective image")
    count = min(positives.size, negatives.size)
    order = np.concatenate([positives, rng.choice(negatives, size=count, replace=False)])
    rng.shuffle(order)
    return order


def random_flips(images: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator) -> tuple:
    """Each image (and its mask) flipped left-right and/or up-down, each with p = 0.5."""
    images, masks = images.clone(), masks.clone()
    for index in range(len(images)):
        dims = [d for d, flip in ((-1, rng.random() < 0.5), (-2, rng.random() < 0.5)) if flip]
        if dims:
            images[index] = images[index].flip(dims)
            masks[index] = masks[index].flip(dims)
    return images, masks
