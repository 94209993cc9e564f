"""Choosing the pixel threshold from the training images' probabilities."""

from __future__ import annotations

import torch

HISTOGRAM_BINS = 2000


def pixel_histograms(
    probabilities: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's histograms (HISTOGRAM_BINS over [0, 1]) of its defect and background
    pixels' probabilities: what ``choose_pixel_threshold`` chooses from."""
    return (
        torch.histc(probabilities[mask], HISTOGRAM_BINS, 0, 1),
        torch.histc(probabilities[~mask], HISTOGRAM_BINS, 0, 1),
    )


def choose_pixel_threshold(defect: torch.Tensor, background: torch.Tensor, criterion: str) -> float:
    """The pixel threshold (a bin edge) from per-image histograms (images x bins) of the
    probabilities of defect and background pixels.

    ``f1``: best F1 of all images' pixels pooled (the same threshold as best pooled IoU,
    since IoU = F1 / (2 - F1)). ``iou``: best mean IoU over the images with defect
    pixels, the strict mask mIoU that evaluation reports, where every image counts alike
    whatever its defect's size.
    """
    if defect.sum() == 0:
        return 0.5
    edges = torch.linspace(0, 1, defect.shape[1] + 1)
    # Predicting defect for p >= edges[i]: counts at or above each edge.
    true_pos = defect.flip(1).cumsum(1).flip(1)
    false_pos = background.flip(1).cumsum(1).flip(1)
    if criterion == "iou":
        defective = defect.sum(1) > 0
        totals = defect.sum(1, keepdim=True)
        ious = true_pos / (false_pos + totals).clamp_min(1)  # TP / (TP + FP + FN)
        score = ious[defective].mean(0)
    else:
        tp, fp = true_pos.sum(0), false_pos.sum(0)
        score = 2 * tp / (tp + fp + defect.sum()).clamp_min(1)
    return max(float(edges[int(score.argmax())]), 0.005)
