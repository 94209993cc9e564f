"""Build-time parity: the engine against the checkpoint in plain fp32 torch, on the same images.

Exported or reduced-precision engines can silently differ from the framework; a build
measures how much and refuses engines that change decisions or masks noticeably.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from psicbatch.checkpoint import Checkpoint
from psicbatch.engines.base import Engine
from psicbatch.engines.build_options import MIN_MASK_IOU
from psicbatch.engines.export import ProbabilityModel
from psicbatch.metrics import mask_iou
from psicbatch.preprocess import normalize


def synthetic_parity_images(
    checkpoint: Checkpoint, size: tuple[int, int], count: int = 8
) -> np.ndarray:
    """Textured images, half with defects, for parity checks when no images are given."""
    from psicbatch.data.synth import synth_image  # here: SciPy, which only builds need

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
    expected, actual = np.concatenate(expected_p), np.concatenate(actual_p)
    expected_maps, actual_maps = np.concatenate(expected_s), np.concatenate(actual_s)
    thresholds = checkpoint.thresholds
    expected_defective = expected >= thresholds.classification
    flips = expected_defective != (actual >= thresholds.classification)
    ious = [
        mask_iou(e >= thresholds.segmentation, a >= thresholds.segmentation)
        for e, a in zip(expected_maps, actual_maps, strict=True)
    ]
    # The masks that matter are those of images judged defective: `run` writes only those
    # by default, and empty or speck masks on the others would hide or exaggerate drift.
    judged = [iou for iou, defective in zip(ious, expected_defective, strict=True) if defective]
    return {
        "images": len(expected),
        "max_abs_probability_diff": float(np.abs(expected - actual).max()),
        "max_abs_mask_probability_diff": float(np.abs(expected_maps - actual_maps).max()),
        "decision_flips": int(flips.sum()),
        "decision_flip_rate": float(flips.mean()),
        "mask_iou_mean": float(np.mean(ious)),
        "mask_iou_min": float(np.min(ious)),
        "images_judged_defective": len(judged),
        "mask_iou_mean_judged_defective": float(np.mean(judged)) if judged else None,
        "mask_iou_min_judged_defective": float(np.min(judged)) if judged else None,
    }


def parity_problem(parity: dict[str, Any], min_mask_iou: float = MIN_MASK_IOU) -> str | None:
    """Why the engine disagrees too much with fp32, or None. Masks are compared on the
    images fp32 judges defective, or on all images when there are none."""
    if parity["decision_flips"]:
        return (
            f"{parity['decision_flips']} of {parity['images']} defect decisions differ from "
            "the fp32 model"
        )
    iou = parity["mask_iou_mean_judged_defective"]
    where = f"the {parity['images_judged_defective']} images judged defective"
    if iou is None:
        iou, where = parity["mask_iou_mean"], f"the {parity['images']} images"
    if iou < min_mask_iou:
        return (
            f"masks agree with the fp32 model at IoU {iou:.3f} on average over {where}, "
            f"below {min_mask_iou}"
        )
    return None
