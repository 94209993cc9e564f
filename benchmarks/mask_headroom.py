"""How far a better pixel threshold could take the strict mask mIoU of a committed
KolektorSDD cross-validation, and whether its masks miss defect pixels or overreach.

For each fold's model (``FOLD/model.pt``; git-ignored, present where the CV ran): the
strict mask mIoU (defective test images only) at the model's own threshold, at the threshold
chosen for mean IoU on its training images scored at full resolution (as evaluation scores),
and at the best threshold for the test images themselves (an upper bound no deployment
has). From the committed per-image predictions: median precision and recall of the masks
over the defective test images, and how many defect-free test images get mask pixels.

Usage: python benchmarks/mask_headroom.py CV_DIR [KOLEKTORSDD_DIR]
Writes mask_headroom.json and mask_headroom.md into CV_DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.checkpoint import load_checkpoint  # noqa: E402
from psicbatch.data.images import read_mask  # noqa: E402
from psicbatch.data.layouts import read_dataset  # noqa: E402
from psicbatch.data.memory import load_into_memory  # noqa: E402
from psicbatch.memory_inference import predict_batches  # noqa: E402
from psicbatch.metrics import mask_iou  # noqa: E402
from psicbatch.pixel_threshold import choose_pixel_threshold, pixel_histograms  # noqa: E402
from psicbatch.precision import resolve_precision  # noqa: E402
from psicbatch.preprocess import resize_probabilities  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kolektorsdd"


def full_size_probabilities(model, checkpoint, data, indices: list[int]) -> list[torch.Tensor]:
    """Each image's pixel probabilities brought back to its original size."""
    device = torch.device("cpu")
    precision = resolve_precision("auto", "torch", device)
    maps = []
    for batch, _, segmentation in predict_batches(
        model, data.images[indices], checkpoint.preprocessing, 16, device, precision
    ):
        for offset, probabilities in enumerate(segmentation):
            size = data.original_sizes[indices[batch.start + offset]]
            maps.append(resize_probabilities(probabilities[None], size)[0, 0])
    return maps


def histograms(maps: list[torch.Tensor], masks: list[np.ndarray]) -> tuple:
    """Per-image histograms of the defect and the background pixels' probabilities."""
    pairs = [pixel_histograms(p, torch.from_numpy(m)) for p, m in zip(maps, masks, strict=True)]
    defect, clean = zip(*pairs, strict=True)
    return torch.stack(defect), torch.stack(clean)


def strict_miou(maps: list[torch.Tensor], masks: list[np.ndarray], threshold: float) -> float:
    ious = [mask_iou(m, p.numpy() >= threshold) for p, m in zip(maps, masks, strict=True)]
    return 100 * float(np.mean(ious))


def threshold_rows(cv_dir: Path, data_dir: Path) -> list[dict]:
    samples = read_dataset(data_dir, "kolektorsdd")
    test_ids = json.loads((cv_dir / "splits.json").read_text())["test_ids"]
    first = load_checkpoint(cv_dir / "fold1" / "model.pt")
    data = load_into_memory(samples, tuple(first.preprocessing.input_size), 1)
    rows = []
    for fold, ids in enumerate(test_ids, start=1):
        checkpoint = load_checkpoint(cv_dir / f"fold{fold}" / "model.pt")
        held_out = set(ids)
        defective = [i for i, s in enumerate(samples) if s.is_defective]
        train = [i for i in defective if samples[i].id not in held_out]
        test = [i for i in defective if samples[i].id in held_out]
        train_masks = [read_mask(samples[i].mask_path) for i in train]
        test_masks = [read_mask(samples[i].mask_path) for i in test]
        model = checkpoint.build_model()
        train_maps = full_size_probabilities(model, checkpoint, data, train)
        test_maps = full_size_probabilities(model, checkpoint, data, test)
        own = checkpoint.thresholds.segmentation
        full_size = choose_pixel_threshold(*histograms(train_maps, train_masks), "iou")
        best = choose_pixel_threshold(*histograms(test_maps, test_masks), "iou")
        rows.append(
            {
                "fold": fold,
                "model_threshold": own,
                "model_threshold_miou": strict_miou(test_maps, test_masks, own),
                "full_size_threshold": full_size,
                "full_size_threshold_miou": strict_miou(test_maps, test_masks, full_size),
                "test_best_threshold": best,
                "test_best_threshold_miou": strict_miou(test_maps, test_masks, best),
            }
        )
    return rows


def mask_shape(cv_dir: Path) -> dict[str, float]:
    """How masks err: on defective images (precision, recall, size against the annotation)
    and on defect-free ones (any pixel there costs a whole image in the all-image reading)."""
    rows = pq.read_table(cv_dir / "predictions.parquet").to_pylist()
    defective = [r for r in rows if r["is_defective"]]
    clean = [r for r in rows if not r["is_defective"]]
    hit = np.array([r["defect_intersection"] for r in defective], dtype=float)
    predicted = np.array([r["predicted_defect_pixels"] for r in defective], dtype=float)
    truth = np.array([r["true_defect_pixels"] for r in defective], dtype=float)
    return {
        "median_precision": float(np.median(hit / np.maximum(predicted, 1))),
        "median_recall": float(np.median(hit / truth)),
        "median_predicted_to_true_pixels": float(np.median(predicted / truth)),
        "images": len(defective),
        "images_predicted_over_1.5x_true_pixels": int((predicted > 1.5 * truth).sum()),
        "defect_free_images": len(clean),
        "defect_free_images_with_mask_pixels": sum(r["predicted_defect_pixels"] > 0 for r in clean),
    }


def main() -> None:
    cv_dir = Path(sys.argv[1])
    data_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_DATA
    rows = threshold_rows(cv_dir, data_dir)
    shape = mask_shape(cv_dir)
    result = {"folds": rows, "masks_on_defective_images": shape}
    (cv_dir / "mask_headroom.json").write_text(json.dumps(result, indent=2) + "\n")
    columns = ("model_threshold", "full_size_threshold", "test_best_threshold")
    table = [
        [str(r["fold"]), *(f"{r[c]:.4f} → {r[c + '_miou']:.2f}" for c in columns)] for r in rows
    ]
    table.append(["mean", *(f"{np.mean([r[c + '_miou'] for r in rows]):.2f}" for c in columns)])
    lines = [
        f"# Strict mask mIoU against the pixel threshold ({cv_dir.name})",
        "",
        "```",
        "python benchmarks/mask_headroom.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        "Defective test images only, % (threshold → mIoU). The last column chooses the",
        "threshold on the test images themselves: an upper bound, not a deployable setting.",
        "",
        *markdown_table(
            [
                "fold",
                "model's threshold",
                "chosen on training images at full size",
                "best for the test images",
            ],
            table,
        ),
        "",
        "Masks on the defective test images (medians over images): precision "
        f"{shape['median_precision']:.2f}, recall {shape['median_recall']:.2f}, predicted / "
        f"annotated pixels {shape['median_predicted_to_true_pixels']:.2f}; masks over 1.5 "
        f"times the annotated pixels on {shape['images_predicted_over_1.5x_true_pixels']} of "
        f"{shape['images']} images. Defect-free test images with any mask pixel (ungated): "
        f"{shape['defect_free_images_with_mask_pixels']} of {shape['defect_free_images']}.",
    ]
    (cv_dir / "mask_headroom.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
