"""Evaluation reports: JSON, markdown in the paper's layout, Parquet, PNG; the tables
and notes ``cv_report`` and the HTML pages share."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from psicbatch import metrics
from psicbatch.fingerprints import seen_before
from psicbatch.part_scores import PartScores
from psicbatch.scores import (
    HEADLINE,
    DefectTypeScores,
    EvaluationSummary,
    Metric,
    MetricDelta,
    SegmentationScores,
    TypeEscapes,
)
from psicbatch.wording import counted

T = TypeVar("T")
U = TypeVar("U")
Item = TypeVar("Item", contravariant=True)  # a column for a type serves its subtypes too


@dataclass(frozen=True)
class Column(Generic[Item]):
    """One column of a report table: its header and how a row's item fills its cell."""

    header: str
    cell: Callable[[Item], object]

    def on(self, part: Callable[[U], Item]) -> Column[U]:
        """The same column for rows that hold its item as ``part`` of them."""
        return Column(self.header, lambda row: self.cell(part(row)))


def column_table(columns: Sequence[Column[T]], items: Iterable[T]) -> list[str]:
    """Lines of a markdown table with one row per item."""
    return markdown_table(
        [column.header for column in columns],
        [[column.cell(item) for column in columns] for item in items],
    )


def html_table(columns: Sequence[Column[T]], items: Iterable[T]) -> str:
    return html_grid(
        [column.header for column in columns],
        [[column.cell(item) for column in columns] for item in items],
    )


def html_grid(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; cells are written with str(), escaped."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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


def metric_column(metric: Metric, header: str) -> Column[EvaluationSummary]:
    return Column(header, lambda summary: percent(metric.of(summary)))


SUMMARY_COLUMNS: tuple[Column[EvaluationSummary], ...] = (
    *(metric_column(metric, f"{metric.label} (%)") for metric in HEADLINE),
    Column("FP", lambda s: s.classification.fp),
    Column("FN", lambda s: s.classification.fn),
)
METRIC_LABELS = {metric.name: metric.label for metric in HEADLINE}
COMPARISON_COLUMNS: tuple[Column[tuple[str, MetricDelta]], ...] = (
    Column("metric (%)", lambda item: METRIC_LABELS.get(item[0], item[0])),
    Column("this engine", lambda item: percent(item[1].engine)),
    Column("reference", lambda item: percent(item[1].reference)),
    Column("delta (points)", lambda item: f"{100 * item[1].delta:+.2f}"),
)


def evaluation_context(summary: EvaluationSummary) -> list[str]:
    """The sentences that say what was scored: images, engine, the image decision, region
    of interest."""
    sentences = [f"{summary.images} images, {summary.defective_images} defective."]
    if summary.division is not None:
        sentences.append(f"{summary.division}.")
    if summary.unmasked_defective:
        sentences.append(
            f"{summary.unmasked_defective} of the defective images have no mask: they count "
            "for the image decision (AUC, AP, escapes) and in no mask score."
        )
    if summary.source is not None:
        sentences.append(summary.source)
    if summary.engine is not None:
        sentences.append(f"Engine: {summary.engine.line()}.")
    sentences += seen_before(summary.overlap, "training")
    sentences += seen_before(summary.overlap, "chosen")
    if summary.decisions is not None:
        sentences.append(f"Judged defective: {summary.decisions.line()}.")
    if summary.roi is not None:
        roi = summary.roi
        sentences.append(
            f"Masks scored inside the region of interest {roi['file']} "
            f"(sha256 {roi['sha256'][:12]})."
        )
    return sentences


@dataclass(frozen=True)
class Rates:
    """Escapes (defective images judged good) and false rejects (good images judged
    defective) on one set of images: what a line's decisions are chosen for."""

    images: str
    escapes: int
    defective: int
    false_rejects: int
    good: int

    @classmethod
    def of(cls, summary: EvaluationSummary) -> Rates:
        counts = summary.classification
        return cls(
            "these images", counts.fn, counts.fn + counts.tp, counts.fp, counts.fp + counts.tn
        )

    @classmethod
    def of_parts(cls, parts: PartScores) -> Rates:
        return cls(
            "their parts (images of a part judged together)",
            parts.escapes,
            parts.defective,
            parts.false_rejects,
            parts.good,
        )


def part_rates(summary: EvaluationSummary) -> tuple[list[Rates], list[str]]:
    """The escapes and false rejects counted in parts, and what the parts are; nothing
    where every part is one image."""
    parts = summary.parts
    if parts is None:
        return [], []
    were = "was" if parts.caught_elsewhere == 1 else "were"
    elsewhere = (
        f" {parts.caught_elsewhere} of the defective parts rejected {were} rejected only for "
        "an image without a defect."
        if parts.caught_elsewhere
        else ""
    )
    ranking = (
        f" Ranked by their images' largest probability, parts score AUC {percent(parts.auc)}% "
        f"and AP {percent(parts.ap)}%."
        if parts.good and parts.defective
        else f" All are {'defective' if parts.defective else 'good'}: no ranking of parts to score."
    )
    sentence = (
        f"{counted(parts.parts, 'part')} of up to {parts.largest} "
        f"images ({parts.grouping}), "
        f"{parts.defective} defective: a part is defective when any of its images is, and "
        f"rejected when any of its images is judged defective.{ranking}{elsewhere}"
    )
    return [Rates.of_parts(parts)], [sentence]


def escape_bound(escapes: int, defective: int) -> str:
    """The one-sided 95% upper bound of the escape rate ``defective`` images vouch for."""
    from psicbatch.decisions import upper_bound  # scipy: only where rates are shown

    if not defective:
        return "n/a"
    return f"{100 * upper_bound(escapes, defective):.1f}%"


def _share(count: int, total: int) -> str:
    return f"{count} of {total} ({100 * count / total:.1f}%)" if total else "n/a (none)"


RATE_COLUMNS: tuple[Column[Rates], ...] = (
    Column("images", lambda r: r.images),
    Column("escapes (defective judged good)", lambda r: _share(r.escapes, r.defective)),
    Column("escape rate, 95% upper bound", lambda r: escape_bound(r.escapes, r.defective)),
    Column("false rejects (good judged defective)", lambda r: _share(r.false_rejects, r.good)),
)


TYPE_ESCAPE_COLUMNS: tuple[Column[TypeEscapes], ...] = (
    Column("defect type", lambda t: t.label),
    Column("escapes (judged good)", lambda t: _share(t.escapes, t.images)),
    Column("escape rate, 95% upper bound", lambda t: escape_bound(t.escapes, t.images)),
)
DEFECT_TYPE_COLUMNS: tuple[Column[DefectTypeScores], ...] = (
    *TYPE_ESCAPE_COLUMNS,
    Column("images with a mask", lambda t: t.with_masks),
    Column("Mask mIoU (%) of those", lambda t: percent(t.mask_miou)),
)
DEFECT_TYPE_TITLE = "Defective images by type"


def decision_rates(summary: EvaluationSummary) -> tuple[list[Rates], list[str]]:
    """The escapes and false rejects of the evaluated images, and of the validation
    images calibrated decisions were chosen on, with sentences setting them against the
    decisions' target."""
    measured = Rates.of(summary)
    of_parts, sentences = part_rates(summary)
    rows = [measured, *of_parts]
    decisions = summary.decisions
    if decisions is None:
        return rows, sentences
    sentences += seen_before(summary.overlap, "validation")
    validation = decisions.validation
    in_parts = validation.get("unit") == "parts"
    if {"escapes", "defective", "false_rejects", "good"} <= set(validation):
        source = validation.get("source")
        what = "validation parts" if in_parts else "validation"
        rows.append(
            Rates(
                f"{what} ({source})" if source else what,
                validation["escapes"],
                validation["defective"],
                validation["false_rejects"],
                validation["good"],
            )
        )
    # Decisions chosen for parts are held to their target in parts, where there are any.
    target_rates = of_parts[0] if in_parts and of_parts else measured
    where = "these images' parts" if target_rates is not measured else "these images"
    for key, what, count, total in (
        ("max_escape_rate", "escape rate", target_rates.escapes, target_rates.defective),
        (
            "max_false_reject_rate",
            "false-reject rate",
            target_rates.false_rejects,
            target_rates.good,
        ),
    ):
        if key in decisions.target and total:
            sentences.append(_against_target(what, count / total, decisions.target[key], where))
    limits = decisions.target.get("max_escape_rate_of") or {}
    for kind in summary.defect_types:
        if kind.defect_type in limits and kind.images:
            what = f"escape rate of {kind.label}"
            rate = kind.escapes / kind.images
            sentences.append(_against_target(what, rate, limits[kind.defect_type]))
    return rows, sentences


def _against_target(what: str, rate: float, limit: float, where: str = "these images") -> str:
    verdict = "within" if rate <= limit else "above"
    return (
        f"The {what} on {where}, {100 * rate:.1f}%, is {verdict} the target the "
        f"decisions were chosen for (at most {100 * limit:g}%)."
    )


def evaluation_markdown(summary: EvaluationSummary, title: str) -> str:
    lines = [f"# {title}"]
    for sentence in evaluation_context(summary):
        lines += ["", sentence]
    lines += [
        "",
        *column_table(SUMMARY_COLUMNS, [summary]),
        "",
        *readings_table(summary.segmentation),
        "",
        METRIC_NOTE,
        "",
    ]
    rates, verdicts = decision_rates(summary)
    lines += ["## Escapes and false rejects", "", *column_table(RATE_COLUMNS, rates), ""]
    for sentence in verdicts:
        lines += [sentence, ""]
    if summary.defect_types:
        table = column_table(DEFECT_TYPE_COLUMNS, summary.defect_types)
        lines += [f"## {DEFECT_TYPE_TITLE}", "", *table, ""]
    comparison = summary.comparison
    if comparison is not None:
        lines += [
            f"## Against {comparison.reference} ({comparison.reference_engine.line()})",
            "",
            *column_table(COMPARISON_COLUMNS, comparison.metrics.items()),
            "",
        ]
    return "\n".join(lines)


READINGS = (
    ("defective images only", ""),
    ("all images", "all"),
    ("all images, masks gated by the image decision", "gated"),
)


def reading_columns(segmentation: SegmentationScores) -> tuple[Column[tuple[str, str]], ...]:
    """Columns of mask and boundary mIoU, one row per reading (``READINGS``)."""
    return (
        Column("Mask / Boundary mIoU (%) over", lambda item: item[0]),
        Column("Mask mIoU", lambda item: percent(segmentation.reading("mask", item[1]))),
        Column("Boundary mIoU", lambda item: percent(segmentation.reading("boundary", item[1]))),
    )


def readings_table(segmentation: SegmentationScores) -> list[str]:
    """Mask and boundary mIoU in the three readings, labelled."""
    return column_table(reading_columns(segmentation), READINGS)


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


def write_evaluation_report(
    out_dir: Path, rows: list[dict], summary: EvaluationSummary, title: str
) -> list[Path]:
    """``metrics.json``, ``predictions.parquet``, ``report.md`` and the curves (their paths
    are returned)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", summary)
    write_predictions(out_dir / "predictions.parquet", rows)
    curves = plot_curves(out_dir, rows, title)
    (out_dir / "report.md").write_text(evaluation_markdown(summary, title))
    return curves


def percent(value: float) -> str:
    """A share as a percentage with two decimals; n/a where there is none."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _json_default(value: Any) -> Any:
    if isinstance(value, EvaluationSummary):
        return value.to_dict()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
