from __future__ import annotations

import json
import math

import numpy as np
import pytest

from psicbatch import metrics
from psicbatch.scores import EvaluationSummary


def box(shape: tuple[int, int], top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + height, left : left + width] = True
    return mask


def test_mask_iou_hand_cases() -> None:
    empty = np.zeros((10, 10), bool)
    full = np.ones((10, 10), bool)
    assert metrics.mask_iou(empty, empty) == 1.0
    assert metrics.mask_iou(full, full) == 1.0
    assert metrics.mask_iou(full, empty) == 0.0
    one = box((10, 10), 4, 4, 1, 1)
    assert metrics.mask_iou(one, one) == 1.0
    assert metrics.mask_iou(one, box((10, 10), 4, 5, 1, 1)) == 0.0
    # 4x4 vs 4x2 inside it: 8 / 16
    assert metrics.mask_iou(box((10, 10), 0, 0, 4, 4), box((10, 10), 0, 0, 4, 2)) == 0.5


def test_boundary_band_width_follows_the_diagonal() -> None:
    # 100x100 image: d = round(0.02 * 141.4) = 3 px; a 20x20 square keeps its 14x14 core.
    square = box((100, 100), 40, 40, 20, 20)
    band = metrics.boundary_band(square)
    assert band.sum() == 20 * 20 - 14 * 14
    assert not band[45:55, 45:55].any() and band[40, 40] and band[42, 50]


def test_boundary_band_at_image_border() -> None:
    # The image border counts as contour: a mask covering the whole image is all band within d.
    full = np.ones((100, 100), bool)
    band = metrics.boundary_band(full)
    assert band.sum() == 100 * 100 - 94 * 94
    # A square in the corner gets its band along the image edges too.
    corner = box((100, 100), 0, 0, 10, 10)
    assert metrics.boundary_band(corner).sum() == 100 - 4 * 4


def test_boundary_band_keeps_small_masks_whole() -> None:
    one = box((100, 100), 50, 50, 1, 1)
    assert np.array_equal(metrics.boundary_band(one), one)
    assert metrics.boundary_iou(one, one) == 1.0
    assert metrics.boundary_iou(one, np.zeros_like(one)) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_the_band_and_counts_equal_their_definitions_on_random_masks(seed: int) -> None:
    """Eroding around the mask only, and counting background pixels from the defect
    counts, give exactly what whole-image erosion and direct counts give: for blobs that
    touch the image border, several blobs, and empty masks."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    height, width = rng.integers(20, 120, size=2)
    shapes = [np.zeros((height, width), bool) for _ in range(2)]
    for mask in shapes:
        for _ in range(rng.integers(0, 4)):  # 0 blobs: an empty mask
            y, x = rng.integers(0, height), rng.integers(0, width)
            h, w = rng.integers(1, height // 2 + 2), rng.integers(1, width // 2 + 2)
            mask[y : y + h, x : x + w] = True
        mask ^= rng.random(mask.shape) < 0.02  # ragged edges and specks
    truth, prediction = shapes
    distance = max(1, round(metrics.BOUNDARY_DILATION_RATIO * math.hypot(height, width)))
    for mask in shapes:
        eroded = ndimage.binary_erosion(
            mask, structure=np.ones((3, 3), bool), iterations=distance, border_value=0
        )
        assert np.array_equal(metrics.boundary_band(mask), mask & ~eroded)
    expected = [
        np.logical_and(truth, prediction).sum(),
        np.logical_or(truth, prediction).sum(),
        np.logical_and(~truth, ~prediction).sum(),
        np.logical_or(~truth, ~prediction).sum(),
    ]
    assert metrics.pixel_counts(truth, prediction).tolist() == expected


def test_boundary_iou_is_stricter_than_mask_iou() -> None:
    truth = box((100, 100), 30, 30, 40, 40)
    prediction = box((100, 100), 32, 32, 40, 40)
    assert metrics.boundary_iou(truth, prediction) < metrics.mask_iou(truth, prediction)


def test_two_class_miou() -> None:
    truth = box((4, 4), 0, 0, 2, 2)  # 4 defect pixels
    prediction = box((4, 4), 0, 0, 2, 1)  # 2 of them found
    counts = metrics.pixel_counts(truth, prediction)
    assert counts.tolist() == [2, 4, 12, 14]
    assert metrics.two_class_miou(counts) == pytest.approx((2 / 4 + 12 / 14) / 2)
    empty = np.zeros((4, 4), bool)
    assert metrics.two_class_miou(metrics.pixel_counts(empty, empty)) == 1.0


@pytest.mark.parametrize("seed", range(8))
def test_auc_and_ap_match_scikit_learn(seed: int) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score  # 2 s to import

    rng = np.random.default_rng(seed)
    labels = rng.random(60) < 0.25
    labels[:2] = [True, False]
    scores = np.round(rng.random(60) + 0.4 * labels, 1)  # rounding creates ties
    assert metrics.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores)
    )


def test_perfect_and_degenerate_classification() -> None:
    labels = np.array([0, 0, 1, 1], bool)
    assert metrics.roc_auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.average_precision(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.roc_auc(labels, np.full(4, 0.5)) == 0.5
    assert math.isnan(metrics.roc_auc(np.zeros(4, bool), np.arange(4.0)))
    assert math.isnan(metrics.average_precision(np.zeros(4, bool), np.arange(4.0)))


def test_classification_counts() -> None:
    counts = metrics.classification_counts([1, 1, 0, 0, 0], [1, 0, 1, 0, 0])
    assert counts == {"tp": 1, "fp": 1, "fn": 1, "tn": 2, "accuracy": 0.6}


def test_best_f1_threshold_separates_classes() -> None:
    labels = np.array([0, 0, 0, 1, 1], bool)
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    threshold = metrics.best_f1_threshold(labels, scores)
    assert 0.3 < threshold <= 0.7
    assert metrics.classification_counts(labels, scores >= threshold)["accuracy"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_curves_and_best_f1_threshold_match_scikit_learn(seed: int) -> None:
    from sklearn.metrics import f1_score
    from sklearn.metrics import precision_recall_curve as sk_pr
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(seed)
    labels = rng.random(60) < 0.3
    scores = np.round(rng.random(60) * 0.6 + 0.4 * labels, 2)  # ties included
    precision, recall, thresholds = metrics.precision_recall_curve(labels, scores)
    sk_precision, sk_recall, sk_thresholds = sk_pr(labels, scores)
    # scikit-learn appends the (precision 1, recall 0) end point and may stop at full recall.
    kept = len(sk_thresholds)
    np.testing.assert_allclose(precision[-kept:], sk_precision[:-1])
    np.testing.assert_allclose(recall[-kept:], sk_recall[:-1])
    np.testing.assert_allclose(thresholds[-kept:], sk_thresholds)
    fpr, tpr = metrics.roc_curve(labels, scores)
    sk_fpr, sk_tpr, _ = sk_roc(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    # The chosen threshold reaches the best F1 any threshold can.
    threshold = metrics.best_f1_threshold(labels, scores)
    best = max(f1_score(labels, scores >= t) for t in np.unique(scores))
    assert f1_score(labels, scores >= threshold) == pytest.approx(best)


def score_row(defective: bool, probability: float, iou: float, predicted_pixels: int) -> dict:
    from psicbatch.evaluate import PIXEL_COUNT_KEYS

    return {
        "is_defective": defective,
        "probability": probability,
        "predicted_defective": probability >= 0.5,
        "mask_iou": iou if defective else math.nan,
        "boundary_iou": iou / 2 if defective else math.nan,
        "predicted_defect_pixels": predicted_pixels,
        **dict.fromkeys(PIXEL_COUNT_KEYS, 1),
    }


def test_all_image_and_gated_mask_miou_by_hand() -> None:
    from psicbatch.evaluate import metrics_summary

    rows = [
        score_row(False, 0.1, math.nan, 0),  # defect-free, predicted empty: 1 in both readings
        score_row(False, 0.2, math.nan, 1),  # defect-free, one pixel, judged good: all 0, gated 1
        score_row(False, 0.9, math.nan, 5),  # defect-free, judged defective with pixels: 0, 0
        score_row(True, 0.3, 0.6, 40),  # defective but below the image threshold: all 0.6, gated 0
        score_row(True, 0.8, 0.8, 50),  # defective, found: 0.8 in every reading
    ]
    summary = metrics_summary(rows)
    segmentation = summary.segmentation
    assert segmentation.mask_miou == pytest.approx((0.6 + 0.8) / 2)  # defective only
    assert segmentation.mask_miou_all == pytest.approx((1 + 0 + 0 + 0.6 + 0.8) / 5)
    assert segmentation.mask_miou_gated == pytest.approx((1 + 1 + 0 + 0 + 0.8) / 5)
    assert segmentation.boundary_miou_all == pytest.approx((1 + 0 + 0 + 0.3 + 0.4) / 5)
    assert segmentation.boundary_miou_gated == pytest.approx((1 + 1 + 0 + 0 + 0.4) / 5)
    assert (summary.classification.fp, summary.classification.fn) == (1, 1)
    # The JSON form (metrics.json, cv.json) reads back to the same summary.
    assert EvaluationSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_the_applied_decision_is_worded_and_read_back() -> None:
    from psicbatch.evaluate import metrics_summary
    from psicbatch.scores import AppliedDecisions

    assert AppliedDecisions(0.5).line() == "probability >= 0.5, from the model's threshold"
    both = AppliedDecisions(0.25, "both", 10, "the decision file d.json")
    assert both.line() == (
        "probability >= 0.25 and at least 10 defect pixels (rule both), from the decision file "
        "d.json"
    )
    either = AppliedDecisions(0.9, "either", 0, "x").line()  # any mask pixel judges
    assert either.startswith("probability >= 0.9 or at least 1 defect pixel (rule either)")
    summary = metrics_summary([score_row(True, 0.8, 0.8, 50), score_row(False, 0.1, math.nan, 0)])
    summary.decisions = both
    assert EvaluationSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary
    older = summary.to_dict()
    del older["decisions"]  # a summary written before decisions were recorded
    assert EvaluationSummary.from_dict(older).decisions is None
