"""Held-out images scored after every training epoch (``train --validation DATA``).

A training's own loss keeps falling while the network learns its few defect images by
heart; the same loss on images it never learns from stops falling, then rises, where
more epochs stop helping. Each epoch is scored with its phase's own objective (eq. 2 for
the masks, the weighted binary cross-entropy for the image decision; eq. 1's mix end to
end), without flips or random light, and, once the image decision trains, with the
paper's average precision of the image probabilities. Scoring changes nothing in the
model (no gradients, normalisation layers in evaluation mode, no random numbers drawn):
a training with validation gives the model one without gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from psicbatch.checkpoint import Preprocessing
from psicbatch.data.masks import DefectMasks
from psicbatch.data.memory import TensorDataset
from psicbatch.losses import defect_weight, segmentation_loss
from psicbatch.metrics import average_precision
from psicbatch.model import PSICNet
from psicbatch.precision import autocast
from psicbatch.preprocess import normalize
from psicbatch.train_options import TrainOptions


@dataclass
class EpochValidation:
    """The validation images in memory, as training holds its own, and how to score a
    model on them."""

    data: TensorDataset
    options: TrainOptions
    device: torch.device
    precision: str
    masks: DefectMasks = field(init=False)  # training's targets: dilated as asked

    def __post_init__(self) -> None:
        self.masks = self.data.masks.dilated(self.options.dilate)

    def segmentation(self, model: PSICNet, preprocessing: Preprocessing) -> dict[str, float]:
        """Eq. (2) (and the Dice term, where trained with it) over the images whose masks
        are known, batch by batch as training weighs them."""
        known = torch.nonzero(self.data.masks_known()).flatten().numpy()
        total, count = 0.0, 0
        model.eval()
        with torch.no_grad():
            for start in range(0, len(known), self.options.batch_size):
                index = known[start : start + self.options.batch_size]
                images = normalize(self.data.images[index].to(self.device), preprocessing)
                masks = self.masks[index].to(self.device)
                with autocast(self.device, self.precision):
                    _, seg_logits = model.segment(images)
                height, width = masks.shape[-2:]
                loss = segmentation_loss(
                    seg_logits[..., :height, :width],
                    masks,
                    self.options.alpha_cap,
                    self.options.dice_weight,
                )
                total, count = total + float(loss) * len(index), count + len(index)
        return {"loss": total / count if count else math.nan}

    def classification(self, model: PSICNet, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
        """The image decision's loss and AP, from the frozen network's outputs for the
        validation images (``Trainer._frozen_outputs``: computed once per training)."""
        pooled, stats = (held[0] for held in inputs)  # as they are: no random light
        model.eval()
        with torch.no_grad(), autocast(self.device, self.precision):
            logits = model.classifier.head(pooled, stats).squeeze(1)
        return self._decision_scores(logits.float())

    def end_to_end(
        self, model: PSICNet, preprocessing: Preprocessing, mix: float
    ) -> dict[str, float]:
        """Eq. (1) at this epoch's mix, and the image decision's AP."""
        model.eval()
        seg_total, logits = 0.0, []
        with torch.no_grad():
            for start in range(0, len(self.data.images), self.options.batch_size):
                index = np.arange(
                    start, min(start + self.options.batch_size, len(self.data.images))
                )
                images = normalize(self.data.images[index].to(self.device), preprocessing)
                with autocast(self.device, self.precision):
                    seg_logits, cls_logits = model(images)
                loss = segmentation_loss(
                    seg_logits,
                    self.masks[index].to(self.device),
                    self.options.alpha_cap,
                    self.options.dice_weight,
                )
                seg_total += float(loss) * len(index)
                logits.append(cls_logits.float().squeeze(1))
        labels = self.data.labels.float().to(self.device)
        decision = F.binary_cross_entropy_with_logits(torch.cat(logits), labels)
        seg_loss = seg_total / len(self.data.images)
        scores = self._decision_scores(torch.cat(logits))
        scores["loss"] = mix * seg_loss + self.options.delta * (1 - mix) * float(decision)
        return scores

    def _decision_scores(self, logits: torch.Tensor) -> dict[str, float]:
        """The weighted binary cross-entropy (defective images weighed by good/defective,
        as training weighs its own) and the average precision."""
        labels = self.data.labels.float().to(logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=defect_weight(labels))
        probabilities = torch.sigmoid(logits).cpu().numpy()
        ap = average_precision(self.data.labels.numpy(), probabilities)
        return {"loss": float(loss), "ap": float(ap)}


def best_epoch(phase: str, measures: dict[str, list[float]]) -> int | None:
    """The epoch (from 1) whose weights ``--keep best`` keeps, None where no epoch scored
    finite: the masks' lowest held-out loss; the image decision's highest AP, among equal
    APs the lowest loss in step 2 and the latest epoch end to end (whose loss weighs the
    masks and the decision differently every epoch, so losses of two epochs do not
    compare). Equal scores otherwise keep the earlier epoch."""
    losses, aps = measures.get("loss", []), measures.get("ap")

    def ranked(epoch: int) -> tuple[float, ...]:
        loss = losses[epoch] if math.isfinite(losses[epoch]) else math.inf
        if aps is None:
            return (-loss,)
        ap = aps[epoch] if math.isfinite(aps[epoch]) else -math.inf
        return (ap, epoch) if phase == "end-to-end" else (ap, -loss)

    scored = [
        epoch
        for epoch in range(len(losses))
        if math.isfinite(losses[epoch]) or (aps is not None and math.isfinite(aps[epoch]))
    ]
    return max(scored, key=ranked) + 1 if scored else None


def best_epochs(history: dict[str, dict[str, list[float]]]) -> list[str]:
    """Each phase's best epoch by its validation scores, in words: where the lowest loss
    (or highest AP) came well before the last epoch, fewer epochs would have done."""
    said = []
    for phase, measures in history.items():
        for measure, values in measures.items():
            finite = [
                (value, epoch) for epoch, value in enumerate(values, 1) if math.isfinite(value)
            ]
            if not finite:
                continue
            best, epoch = (max if measure == "ap" else min)(finite, key=lambda pair: pair[0])
            name = "AP highest" if measure == "ap" else "loss lowest"
            shown, last = (_shown(measure, value) for value in (best, values[-1]))
            said.append(
                f"{phase} {name} at its last epoch, {epoch} ({shown})"
                if epoch == len(values)
                else f"{phase} {name} at epoch {epoch} of {len(values)} ({shown}; last {last})"
            )
    return said


def kept_epochs_text(training: dict[str, Any]) -> str | None:
    """Which epoch's weights each phase kept (``--keep best``) and what it scored, in
    words; None where the last epochs were kept."""
    kept = training.get("kept_epochs")
    if not kept:
        return None
    history, done = training["validation_history"], training["epochs_done"]
    phases = []
    for phase, epoch in kept.items():
        measures = history.get(phase, {})
        scored = ", ".join(
            f"{measure.replace('ap', 'AP')} {_shown(measure, measures[measure][epoch - 1])}"
            for measure in ("ap", "loss")
            if measure in measures
        )
        phases.append(f"{phase} epoch {epoch} of {done[phase]} ({scored})")
    return f"kept {', '.join(phases)} (--keep best)"


def _shown(measure: str, value: float) -> str:
    """A validation score as every line says it: the AP in percent, a loss to 4 figures."""
    return f"{100 * value:.2f}" if measure == "ap" else f"{value:.4g}"
