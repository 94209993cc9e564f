"""Evaluation and cross-validation reports: JSON, markdown in the paper's layout, Parquet, PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from psicbatch import metrics

# Paper Tables 1 and 3 (percent), for side-by-side comparison.
PAPER_RESULTS = {
    "kolektorsdd": {
        "mask_miou": 88.49,
        "boundary_miou": 73.99,
        "auc": 98.05,
        "map": 96.43,
        "accuracy": 98.53,
    },
    "kolektorsdd2": {
        "mask_miou": 86.13,
        "boundary_miou": 70.98,
        "auc": 96.34,
        "map": 93.27,
        "accuracy": 97.50,
    },
    "dagm": {
        "mask_miou": 89.10,
        "boundary_miou": 82.55,
        "auc": 100.0,
        "map": 100.0,
        "accuracy": 100.0,
    },
}


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Lines of a markdown table; cells are written with str()."""
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")


def plot_curves(out_dir: Path, rows: list[dict[str, Any]], title: str) -> list[Path]:
    """PR and ROC curves of the image-level probabilities, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array([r["is_defective"] for r in rows], bool)
    scores = np.array([r["probability"] for r in rows], float)
    if labels.all() or not labels.any():
        return []
    precision, recall, _ = metrics.precision_recall_curve(labels, scores)
    fpr, tpr = metrics.roc_curve(labels, scores)
    paths = []
    for name, x, y, xlabel, ylabel, value in (
        (
            "pr_curve.png",
            recall,
            precision,
            "recall",
            "precision",
            f"AP {metrics.average_precision(labels, scores):.4f}",
        ),
        (
            "roc_curve.png",
            fpr,
            tpr,
            "false positive rate",
            "true positive rate",
            f"AUC {metrics.roc_auc(labels, scores):.4f}",
        ),
    ):
        figure, axes = plt.subplots(figsize=(4.5, 4.5), dpi=100)
        axes.step(x, y, where="post", label=value)
        axes.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1.01), ylim=(0, 1.01), title=title)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left" if name == "pr_curve.png" else "lower right")
        figure.tight_layout()
        figure.savefig(out_dir / name)
        plt.close(figure)
        paths.append(out_dir / name)
    return paths


def evaluation_markdown(summary: dict[str, Any], title: str) -> str:
    seg, cls = summary["segmentation"], summary["classification"]
    lines = [
        f"# {title}",
        "",
        f"{summary['images']} images, {summary['defective_images']} defective.",
    ]
    if "engine" in summary:
        lines += ["", f"Engine: {_engine_line(summary['engine'])}."]
    lines += [
        "",
        "| Mask mIoU (%) | Boundary mIoU (%) | two-class mIoU (%) | AUC (%) | AP (%) "
        "| Accuracy (%) | FP | FN |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {_pct(seg['mask_miou'])} | {_pct(seg['boundary_miou'])} "
        f"| {_pct(seg['two_class_miou'])} | {_pct(cls['auc'])} | {_pct(cls['ap'])} "
        f"| {_pct(cls['accuracy'])} | {cls['fp']} | {cls['fn']} |",
        "",
        *readings_table(seg),
        "",
        METRIC_NOTE,
        "",
    ]
    if "comparison" in summary:
        comparison = summary["comparison"]
        lines += [
            f"## Against {comparison.get('reference', 'the reference')} "
            f"({_engine_line(comparison['reference_engine'])})",
            "",
        ]
        lines += markdown_table(
            ["metric (%)", "this engine", "reference", "delta (points)"],
            [
                [name, _pct(v["engine"]), _pct(v["reference"]), f"{100 * v['delta']:+.2f}"]
                for name, v in comparison["metrics"].items()
            ],
        )
        lines.append("")
    return "\n".join(lines)


READINGS = (
    ("defective images only", ""),
    ("all images", "_all"),
    ("all images, masks gated by the image decision", "_gated"),
)


def readings_table(segmentation: dict[str, Any]) -> list[str]:
    """Mask and boundary mIoU in the three readings, labelled."""
    return markdown_table(
        ["Mask / Boundary mIoU (%) over", "Mask mIoU", "Boundary mIoU"],
        [
            [
                label,
                _pct(segmentation[f"mask_miou{suffix}"]),
                _pct(segmentation[f"boundary_miou{suffix}"]),
            ]
            for label, suffix in READINGS
            if f"mask_miou{suffix}" in segmentation
        ],
    )


def _engine_line(engine: dict[str, Any]) -> str:
    why = f" ({engine['selection']})" if engine.get("selection") else ""
    return (
        f"{engine['backend']} {engine['precision']} on {engine['device']}{why}, "
        f"{engine['input_size'][0]}x{engine['input_size'][1]}, engine sha256 "
        f"{engine['engine_sha256'][:12]}"
    )


METRIC_NOTE = (
    "Mask mIoU and Boundary mIoU in the first table are averaged over the defective images "
    "(strict: what an overlay of a defective part shows). Over all images, a defect-free "
    "image scores 1 when nothing is predicted on it and 0 otherwise; gated, the mask of an "
    "image judged defect-free counts as empty, as `psicbatch run --masks gated` writes it. "
    "The paper's Table 1 says its figures cover 'all defect segmentation images' without "
    "saying how defect-free images count; its narrow fold-to-fold spread suggests the "
    "all-image readings. two-class mIoU is the mean of defect and background IoU over all "
    "images' pooled pixels. IoUs are computed at each image's original resolution."
)


def write_evaluation_report(out_dir: Path, rows: list[dict], summary: dict, title: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", summary)
    write_predictions(out_dir / "predictions.parquet", rows)
    plot_curves(out_dir, rows, title)
    (out_dir / "report.md").write_text(evaluation_markdown(summary, title))


def cross_validation_tables(fold_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Table 1 (mean / max / min over folds) and Table 3 (AUC, mAP, accuracy) in percent."""

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "mean": 100 * float(np.mean(values)),
            "max": 100 * max(values),
            "min": 100 * min(values),
        }

    segs = [s["segmentation"] for s in fold_summaries]
    clss = [s["classification"] for s in fold_summaries]
    return {
        "table1": {
            "mask_iou": stats([s["mask_miou"] for s in segs]),
            "boundary_iou": stats([s["boundary_miou"] for s in segs]),
            "two_class_miou": stats([s["two_class_miou"] for s in segs]),
            **{
                f"{kind}_iou{suffix}": stats([s[f"{kind}_miou{suffix}"] for s in segs])
                for _, suffix in READINGS[1:]
                for kind in ("mask", "boundary")
                if all(f"{kind}_miou{suffix}" in s for s in segs)
            },
        },
        "table3": {
            "auc": 100 * float(np.mean([c["auc"] for c in clss])),
            "map": 100 * float(np.mean([c["ap"] for c in clss])),
            "accuracy": 100 * float(np.mean([c["accuracy"] for c in clss])),
            "fp": sum(c["fp"] for c in clss),
            "fn": sum(c["fn"] for c in clss),
        },
    }


def cross_validation_markdown(report: dict[str, Any]) -> str:
    t1, t3 = report["tables"]["table1"], report["tables"]["table3"]
    paper = PAPER_RESULTS.get(report["layout"])
    lines = [
        f"# {len(report['folds'])}-fold cross-validation on {report['dataset']}",
        "",
        f"Layout `{report['layout']}`, {report['images']} images "
        f"({report['defective_images']} defective). Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
        "## Segmentation (paper Table 1 layout, %)",
        "",
        "| | Mask mIoU | Max Mask IoU | Min Mask IoU | Boundary mIoU | Max Boundary IoU "
        "| Min Boundary IoU | two-class mIoU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| psicbatch | {t1['mask_iou']['mean']:.2f} | {t1['mask_iou']['max']:.2f} "
        f"| {t1['mask_iou']['min']:.2f} | {t1['boundary_iou']['mean']:.2f} "
        f"| {t1['boundary_iou']['max']:.2f} | {t1['boundary_iou']['min']:.2f} "
        f"| {t1['two_class_miou']['mean']:.2f} |",
    ]
    if paper:
        lines.append(
            f"| paper | {paper['mask_miou']:.2f} | | | {paper['boundary_miou']:.2f} | | | |"
        )
    lines += [
        "",
        "Mean, max and min are over folds; each fold's value is the mean over its defective "
        "test images (strict reading).",
        "",
        "### The three readings of mask and boundary mIoU (mean over folds, %)",
        "",
        *readings_table(
            {
                f"{kind}_miou{suffix}": t1[f"{kind}_iou{suffix}"]["mean"] / 100
                for _, suffix in READINGS
                for kind in ("mask", "boundary")
                if f"{kind}_iou{suffix}" in t1
            }
        ),
        "",
        "## Classification (paper Table 3 layout, %)",
        "",
        "| | AUC | mAP | Accuracy | FP | FN |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| psicbatch | {t3['auc']:.2f} | {t3['map']:.2f} | {t3['accuracy']:.2f} "
        f"| {t3['fp']} | {t3['fn']} |",
    ]
    if paper:
        lines.append(
            f"| paper | {paper['auc']:.2f} | {paper['map']:.2f} | {paper['accuracy']:.2f} | | |"
        )
    lines += ["", "mAP is the mean of the folds' AP; FP and FN are summed over folds.", ""]
    lines += ["## Folds", ""]
    lines += markdown_table(
        [
            "fold",
            "test images",
            "defective",
            "Mask mIoU",
            "Boundary mIoU",
            "AUC",
            "AP",
            "Accuracy",
            "train time (min)",
        ],
        [
            [
                fold["fold"],
                s["images"],
                s["defective_images"],
                _pct(s["segmentation"]["mask_miou"]),
                _pct(s["segmentation"]["boundary_miou"]),
                _pct(s["classification"]["auc"]),
                _pct(s["classification"]["ap"]),
                _pct(s["classification"]["accuracy"]),
                f"{fold['train_minutes']:.1f}",
            ]
            for fold in report["folds"]
            for s in [fold["summary"]]
        ],
    )
    pooled = report["pooled"]
    lines += [
        "",
        f"Pooled over all folds' test predictions: AUC {_pct(pooled['classification']['auc'])}, "
        f"AP {_pct(pooled['classification']['ap'])}, "
        f"Mask mIoU {_pct(pooled['segmentation']['mask_miou'])}, "
        f"Boundary mIoU {_pct(pooled['segmentation']['boundary_miou'])}.",
        "",
        METRIC_NOTE,
        "",
    ]
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
