"""Batched forward passes on images already in memory (uint8 tensors): training's
threshold search and studies. Not the run path, which goes through engines."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from psicbatch.model import PSICNet
from psicbatch.precision import autocast
from psicbatch.preprocess import Preprocessing, normalize


def predict_batches(
    model: PSICNet,
    images: torch.Tensor,
    preprocessing: Preprocessing,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield (index slice, image probabilities N, segmentation probabilities N x 1 x H x W)."""
    model.eval().to(device)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = normalize(images[start : start + batch_size].to(device), preprocessing)
            with autocast(device, precision):
                seg_logits, cls_logits = model(batch)
            yield (
                slice(start, start + len(batch)),
                torch.sigmoid(cls_logits.float()).squeeze(1).cpu(),
                torch.sigmoid(seg_logits.float()).cpu(),
            )
