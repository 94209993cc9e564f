"""Build-time parity: the engine against the checkpoint in plain fp32 torch, on the same images.

Exported or reduced-precision engines can silently differ from the framework; a build
measures how much and refuses engines that change decisions or masks noticeably.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from psicbatch.checkpoint import Checkpoint
from psicbatch.data.synth import synth_image
from psicbatch.engines.base import Engine
from psicbatch.engines.export import ProbabilityModel
from psicbatch.metrics import mask_iou
from psicbatch.preprocess import normalize

MIN_MASK_IOU = 0.9


def synthetic_parity_images(
    checkpoint: Checkpoint, size: tuple[int, int], count: int = 8
) -> np.ndarray:
    """Textured images, half with defects, for parity checks when no images are given."""
    rng = np.random.default_rng(0)
    channels = checkpoint.model_config.in_channels
    images = np.stack([synth_image(rng, *size, defective=i % 2 == 0)[0] for i in range(count)])
    batch = torch.from_numpy(images)[:, None].repeat(1, channels, 1, 1)
    return normalize(batch, checkpoint.preprocessing).numpy()


def measure_parity(engine: Engine, checkpoint: Checkpoint, images: np.ndarray) -> dict[str, Any]:
    reference = ProbabilityModel(checkpoint.build_model())
    batch = engine.batch_range[1]
    expected_p, expected_s, actual_p, actual_s = [], [], [], []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        if len(chunk) < engine.batch_range[0]:
            break
        with torch.no_grad():
            p, s = reference(torch.from_numpy(chunk))
        expected_p.append(p.numpy())
        expected_s.append(s[:, 0].numpy())
        engine_p, engine_s = engine.infer(torch.from_numpy(chunk))
        actual_p.append(engine_p.cpu().numpy())
        actual_s.append(engine_s.cpu().numpy())
    expected_p, actual_p = np.concatenate(expected_p), np.concatenate(actual_p)
    expected_s, actual_s = np.concatenate(expected_s), np.concatenate(actual_s)
    thresholds = checkpoint.thresholds
    flips = (expected_p >= thresholds.classification) != (actual_p >= thresholds.classification)
    ious = [
        mask_iou(e >= thresholds.segmentation, a >= thresholds.segmentation)
        for e, a in zip(expected_s, actual_s, strict=True)
    ]
    # Masks that are empty in both agree trivially: report the defective ones apart.
    with_defects = [
        i for i, e in zip(ious, expected_s, strict=True) if (e >= thresholds.segmentation).any()
    ]
    return {
        "images": len(expected_p),
        "max_abs_probability_diff": float(np.abs(expected_p - actual_p).max()),
        "max_abs_mask_probability_diff": float(np.abs(expected_s - actual_s).max()),
        "decision_flips": int(flips.sum()),
        "decision_flip_rate": float(flips.mean()),
        "mask_iou_mean": float(np.mean(ious)),
        "mask_iou_min": float(np.min(ious)),
        "images_with_defect_pixels": len(with_defects),
        "mask_iou_mean_with_defect_pixels": float(np.mean(with_defects)) if with_defects else None,
    }


def parity_problem(parity: dict[str, Any], min_mask_iou: float = MIN_MASK_IOU) -> str | None:
    """Why the engine disagrees too much with fp32, or None. Masks are judged on the images
    where fp32 finds defect pixels (empty masks agree trivially and would hide a drift),
    or on all images when there are none."""
    if parity["decision_flips"]:
        return (
            f"{parity['decision_flips']} of {parity['images']} defect decisions differ from "
            "the fp32 model"
        )
    iou = parity["mask_iou_mean_with_defect_pixels"]
    where = f"the {parity['images_with_defect_pixels']} images with defect pixels"
    if iou is None:
        iou, where = parity["mask_iou_mean"], f"the {parity['images']} images"
    if iou < min_mask_iou:
        return (
            f"masks agree with the fp32 model at IoU {iou:.3f} on average over {where}, "
            f"below {min_mask_iou}"
        )
    return None
