"""Training losses: eq. (2)'s weighted cross-entropy, the optional soft Dice term, and
step 2's weight of defective images."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(
    logits: torch.Tensor, masks: torch.Tensor, alpha_cap: float = 1.0
) -> torch.Tensor:
    """Eq. (2) with alpha = share of background pixels in the batch, at most ``alpha_cap``
    (a cap below 1 weighs defect pixels less, so masks grow less beyond the annotations).

    Divided by the total weight rather than the pixel count: the gradient's direction is
    eq. (2)'s, but its size no longer shrinks with the (tiny) share of defect pixels.
    """
    targets = masks.float()
    alpha = (1.0 - targets.mean()).clamp_max(alpha_cap)
    weights = torch.where(masks, alpha, 1.0 - alpha)
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (weights * losses).sum() / weights.sum().clamp_min(1e-12)


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice, per image with defect pixels, averaged over those images.

    Overlap counted per image, as mask IoU is scored: eq. (2) alone rewards a wide margin of
    saturated probabilities around thin defects, which Dice charges as false positives.
    Images without defect pixels add nothing (cross-entropy keeps them clean).
    """
    has_defect = masks.flatten(1).any(1)
    if not has_defect.any():
        return logits.float().sum() * 0.0
    probabilities = torch.sigmoid(logits.float()).flatten(1)[has_defect]
    targets = masks.flatten(1)[has_defect].float()
    dice = 2 * (probabilities * targets).sum(1) / (probabilities.sum(1) + targets.sum(1))
    return 1.0 - dice.mean()


def defect_weight(labels: torch.Tensor) -> torch.Tensor:
    """Step 2's weight of a defective image in its binary cross-entropy: defect-free over
    defective images, so that the few defective ones weigh as much in all as the many
    good ones (on the labels' device)."""
    positives = float(labels.sum())
    return torch.tensor((len(labels) - positives) / max(positives, 1.0), device=labels.device)


def segmentation_loss(
    logits: torch.Tensor, masks: torch.Tensor, alpha_cap: float = 1.0, dice_weight: float = 0.0
) -> torch.Tensor:
    """Eq. (2) (with ``alpha_cap``), plus ``dice_weight`` times the soft Dice loss."""
    loss = weighted_cross_entropy(logits, masks, alpha_cap)
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice_loss(logits, masks)
    return loss
