"""The paper's metrics (section 4.3): segmentation IoUs and classification AUC / AP / accuracy.

Segmentation is scored at each image's original resolution:

- ``mask_iou``: |G ∩ P| / |G ∪ P| (eq. 3), for one image.
- ``boundary_iou``: eq. 4 after Cheng et al. 2021: the inner boundary band of each mask
  (pixels of the mask within ``d`` of its contour, the image border counting as contour,
  ``d`` = 2% of the image diagonal), then the IoU of the two bands.
- The paper's "Mask mIoU" / "Boundary mIoU" are these IoUs averaged over the *defective*
  test images. We also report ``two_class_miou``: the usual semantic-segmentation mIoU over
  all test images (defect and background IoU from pooled pixel counts, averaged).
"""

from __future__ import annotations

import math

import numpy as np

BOUNDARY_DILATION_RATIO = 0.02


def mask_iou(truth: np.ndarray, prediction: np.ndarray) -> float:
    """IoU of two binary masks; 1.0 when both are empty (nothing to find, nothing found)."""
    intersection, union = pixel_counts(truth, prediction)[:2]
    return 1.0 if union == 0 else float(intersection / union)


def boundary_band(mask: np.ndarray, ratio: float = BOUNDARY_DILATION_RATIO) -> np.ndarray:
    """Mask pixels within d = ratio * diagonal (at least 1 px) of the mask's contour."""
    height, width = mask.shape
    distance = max(1, round(ratio * math.hypot(height, width)))
    band = np.zeros_like(mask, dtype=bool)
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return band
    # Eroding with the outside (and the image border) as background, as the reference code
    # does; within the mask's bounding box only, since outside it every pixel is
    # background either way: a defect covers a small part of its image.
    from scipy import ndimage  # here: every command imports this module, few score boundaries

    box = (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
    part = mask[box]
    eroded = ndimage.binary_erosion(
        part, structure=np.ones((3, 3), bool), iterations=distance, border_value=0
    )
    band[box] = part & ~eroded
    return band


def boundary_iou(
    truth: np.ndarray, prediction: np.ndarray, ratio: float = BOUNDARY_DILATION_RATIO
) -> float:
    return mask_iou(boundary_band(truth, ratio), boundary_band(prediction, ratio))


def pixel_counts(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """[defect intersection, defect union, background intersection, background union],
    from three counts: both masks' background is every pixel outside the defect union,
    either mask's every pixel outside the defect intersection."""
    intersection = np.count_nonzero(np.logical_and(truth, prediction))
    union = np.count_nonzero(truth) + np.count_nonzero(prediction) - intersection
    pixels = np.broadcast(truth, prediction).size
    return np.array([intersection, union, pixels - union, pixels - intersection], dtype=np.int64)


def two_class_miou(counts: np.ndarray) -> float:
    """Mean of defect and background IoU from pooled ``pixel_counts`` (summed over images)."""
    defect = counts[0] / counts[1] if counts[1] else 1.0
    background = counts[2] / counts[3] if counts[3] else 1.0
    return float((defect + background) / 2)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney statistic, ties counted as half)."""
    labels = np.asarray(labels, bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, float))
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as sum (R_n - R_{n-1}) P_n over thresholds."""
    labels = np.asarray(labels, bool)
    if labels.sum() == 0:
        return float("nan")
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.sum(np.diff(recall[::-1], prepend=0) * precision[::-1]))


def precision_recall_curve(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at each distinct score (descending recall), plus thresholds."""
    true_positives, false_positives, thresholds = _cumulative_counts(labels, scores)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / max(1, int(np.asarray(labels, bool).sum()))
    return precision[::-1], recall[::-1], thresholds[::-1]


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates from the strictest threshold to the loosest."""
    labels = np.asarray(labels, bool)
    true_positives, false_positives, _ = _cumulative_counts(labels, scores)
    tpr = np.concatenate([[0], true_positives / max(1, labels.sum())])
    fpr = np.concatenate([[0], false_positives / max(1, (~labels).sum())])
    return fpr, tpr


def classification_counts(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Confusion counts and accuracy of image-level decisions."""
    labels = np.asarray(labels, bool)
    predicted = np.asarray(predicted, bool)
    return {
        "tp": int((predicted & labels).sum()),
        "fp": int((predicted & ~labels).sum()),
        "fn": int((~predicted & labels).sum()),
        "tn": int((~predicted & ~labels).sum()),
        "accuracy": float((predicted == labels).mean()) if labels.size else float("nan"),
    }


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the highest F1 (midpoint to the next lower score)."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, float)
    if labels.sum() == 0:
        return 0.5
    true_positives, false_positives, thresholds = _cumulative_counts(labels, scores)
    f1 = 2 * true_positives / (true_positives + false_positives + labels.sum())
    best = int(np.argmax(f1))
    below = scores[scores < thresholds[best]]
    return float((thresholds[best] + below.max()) / 2) if below.size else float(thresholds[best])


def _cumulative_counts(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP and FP counts when predicting positive for scores >= each distinct threshold."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, float)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_each = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
    true_positives = np.cumsum(sorted_labels)[last_of_each].astype(float)
    false_positives = (last_of_each + 1) - true_positives
    return true_positives, false_positives, sorted_scores[last_of_each]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their average rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(values.size)
    start = 0
    for end in np.r_[np.nonzero(np.diff(sorted_values))[0] + 1, values.size]:
        ranks[order[start:end]] = (start + end + 1) / 2
        start = end
    return ranks
