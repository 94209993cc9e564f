"""What each training epoch sees: balanced draws, random flips and random gains."""

from __future__ import annotations

import numpy as np
import torch

from psicbatch.errors import PsicbatchError


def balanced_order(
    labels: torch.Tensor, rng: np.random.Generator, among: torch.Tensor | None = None
) -> np.ndarray:
    """Every defective image plus as many defect-free ones, drawn afresh, shuffled; only
    those ``among`` (bool), where given."""
    kept = np.ones(len(labels), bool) if among is None else among.numpy()
    positives = np.flatnonzero(labels.numpy() & kept)
    negatives = np.flatnonzero(~labels.numpy() & kept)
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


def random_gains(
    images: torch.Tensor, spread: float, max_value: float, rng: np.random.Generator
) -> torch.Tensor:
    """Each image's pixels (as they are decoded, before normalisation) times its own gain
    drawn from [1 - spread, 1 + spread], clipped to the pixel range: the light or
    exposure of a line drifts, and a model that saw only one level judges parts by it."""
    gains = rng.uniform(1 - spread, 1 + spread, len(images)).astype(np.float32)
    scale = torch.from_numpy(gains).to(images.device).view(-1, *([1] * (images.dim() - 1)))
    return (images.float() * scale).clamp_(0, max_value)
