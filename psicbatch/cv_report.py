"""``cv``'s report in the paper's layout (Tables 1 and 3, the folds), as ``report.md`` and
as ``report.html``, a self-contained page with the pooled curves and links to each
fold's page. Both are rendered from one list of blocks, so they say the same."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from psicbatch.fine_tuning import started_from
from psicbatch.pictures import png_bytes_uri
from psicbatch.reports import (
    DEFECT_TYPE_COLUMNS,
    DEFECT_TYPE_TITLE,
    METRIC_NOTE,
    RATE_COLUMNS,
    READINGS,
    Column,
    Rates,
    html_grid,
    markdown_table,
    metric_column,
    part_rates,
    percent,
    reading_columns,
)
from psicbatch.scores import CLASSIFICATION, HEADLINE, EvaluationSummary, SegmentationScores

# Paper Tables 1 and 3 (percent), for side-by-side comparison; "ap" is the paper's mAP.
PAPER_RESULTS = {
    "kolektorsdd": {
        "mask_miou": 88.49,
        "boundary_miou": 73.99,
        "auc": 98.05,
        "ap": 96.43,
        "accuracy": 98.53,
    },
    "kolektorsdd2": {
        "mask_miou": 86.13,
        "boundary_miou": 70.98,
        "auc": 96.34,
        "ap": 93.27,
        "accuracy": 97.50,
    },
    "dagm": {
        "mask_miou": 89.10,
        "boundary_miou": 82.55,
        "auc": 100.0,
        "ap": 100.0,
        "accuracy": 100.0,
    },
}


def cross_validation_tables(fold_summaries: list[EvaluationSummary]) -> dict[str, Any]:
    """Table 1 (mean / max / min over folds of every segmentation score) and Table 3 (the
    mean over folds of AUC, AP (the paper's mAP) and accuracy; FP and FN summed), in percent."""

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "mean": 100 * float(np.mean(values)),
            "max": 100 * max(values),
            "min": 100 * min(values),
        }

    return {
        "table1": {
            score.name: stats([getattr(s.segmentation, score.name) for s in fold_summaries])
            for score in fields(SegmentationScores)
        },
        "table3": {
            **{
                metric.name: 100 * float(np.mean([metric.of(s) for s in fold_summaries]))
                for metric in CLASSIFICATION
            },
            "fp": sum(s.classification.fp for s in fold_summaries),
            "fn": sum(s.classification.fn for s in fold_summaries),
        },
    }


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str  # `code` in backticks


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]

    @classmethod
    def of(cls, columns: Sequence[Column[Any]], items: Iterable[Any]) -> Table:
        return cls(
            [column.header for column in columns],
            [[str(column.cell(item)) for column in columns] for item in items],
        )


@dataclass(frozen=True)
class Curves:
    """The pooled curves: beside the markdown, embedded in the page."""

    files: list[Path]


@dataclass(frozen=True)
class Pages:
    """Each fold's page: named in the markdown, linked on the page."""

    text: str
    pages: list[str]


Block = Heading | Paragraph | Code | Table | Curves | Pages


def _fold_summary(fold: dict[str, Any]) -> EvaluationSummary:
    """A ``cv`` fold record's summary."""
    summary: EvaluationSummary = fold["summary"]
    return summary


def _seen(summary: EvaluationSummary) -> str:
    """How many of a fold's test images its model was trained on (copies known by
    content), and how many chose its starting model's epochs where any did."""
    overlap = summary.overlap
    if overlap is None or overlap.training is None:
        return "not recorded"
    chose = f" (and {overlap.chosen} that chose {overlap.chosen_for})" if overlap.chosen else ""
    return f"{overlap.training}{chose}"


FOLD_COLUMNS: tuple[Column[dict[str, Any]], ...] = (
    Column("fold", lambda fold: fold["fold"]),
    Column[EvaluationSummary]("test images", lambda s: s.images).on(_fold_summary),
    Column[EvaluationSummary]("defective", lambda s: s.defective_images).on(_fold_summary),
    *(
        metric_column(metric, metric.label).on(_fold_summary)
        for metric in HEADLINE
        if metric.name != "two_class_miou"
    ),
    Column[EvaluationSummary]("test images seen in training", _seen).on(_fold_summary),
    Column("train time (min)", lambda fold: f"{fold['train_minutes']:.1f}"),
)


def _joined(report: dict[str, Any]) -> list[Block]:
    """The sentences saying how images were grouped into folds: by a pattern, where one
    was given, and groups kept in one fold because they hold identical images."""
    blocks: list[Block] = []
    if report.get("group_by"):
        blocks.append(
            Paragraph(
                f"Images whose ids share the match of `{report['group_by']}` are kept in one "
                f"fold: {report['groups']} groups."
            )
        )
    joined = report.get("joined_groups") or []
    if joined:
        sets = ", ".join(f"({', '.join(groups)})" for groups in joined)
        blocks.append(
            Paragraph(
                f"Groups holding identical image files, each kept within one fold so that no "
                f"test image is a copy of a training image: {sets}."
            )
        )
    return blocks


def _table1(report: dict[str, Any]) -> Table:
    t1 = report["tables"]["table1"]
    paper = PAPER_RESULTS.get(report["layout"], {})
    spread = ("mask_miou", "boundary_miou")
    header = [
        "",
        *(
            header
            for kind in ("Mask", "Boundary")
            for header in (f"{kind} mIoU", f"Max {kind} IoU", f"Min {kind} IoU")
        ),
        "two-class mIoU",
    ]
    rows = [
        [
            "psicbatch",
            *(f"{t1[name][stat]:.2f}" for name in spread for stat in ("mean", "max", "min")),
            f"{t1['two_class_miou']['mean']:.2f}",
        ]
    ]
    if paper:
        rows.append(
            ["paper", *(cell for name in spread for cell in (f"{paper[name]:.2f}", "", "")), ""]
        )
    return Table(header, rows)


def _table3(report: dict[str, Any]) -> Table:
    t3 = report["tables"]["table3"]
    paper = PAPER_RESULTS.get(report["layout"], {})
    header = ["", *("mAP" if m.name == "ap" else m.label for m in CLASSIFICATION), "FP", "FN"]
    rows = [
        ["psicbatch", *(f"{t3[m.name]:.2f}" for m in CLASSIFICATION), str(t3["fp"]), str(t3["fn"])]
    ]
    if paper:
        rows.append(["paper", *(f"{paper[m.name]:.2f}" for m in CLASSIFICATION), "", ""])
    return Table(header, rows)


def _network(report: dict[str, Any]) -> str:
    """The network the folds trained: its width and input size (and how it was chosen),
    and what scored it."""
    options = report["options"]
    height, width = options["input_size"]
    size = report.get("input_size_choice") or f"{height}x{width}"
    start = report.get("init")
    fine_tuned = f", every fold fine-tuned from {started_from(start)}" if start else ""
    scored = dict.fromkeys(  # folds resumed elsewhere can differ in device
        engine.ran_as() for fold in report["folds"] if (engine := fold["summary"].engine)
    )
    scoring = f"; each fold's model scored with {' or '.join(scored)}" if scored else ""
    return f"PSIC-Net at width {options['width']}, input {size}{fine_tuned}{scoring}"


def _blocks(report: dict[str, Any], curves: list[Path]) -> list[Block]:
    """The report, in order: folds' ``summary`` and ``pooled`` are ``EvaluationSummary``s."""
    t1 = report["tables"]["table1"]
    mean_readings = SegmentationScores(**{name: t1[name]["mean"] / 100 for name in t1})
    pooled: EvaluationSummary = report["pooled"]
    pooled_scores = ", ".join(
        f"{m.label} {percent(m.of(pooled))}"
        for m in HEADLINE
        if m.name in ("auc", "ap", "mask_miou", "boundary_miou")
    )
    pages = report.get("fold_pages") or []
    return [
        Heading(1, f"{len(report['folds'])}-fold cross-validation on {report['dataset']}"),
        Paragraph(
            f"Layout `{report['layout']}`, {report['images']} images "
            f"({report['defective_images']} defective); {_network(report)}. Command:"
        ),
        Code(report["command"]),
        *_joined(report),
        Heading(2, "Segmentation (paper Table 1 layout, %)"),
        _table1(report),
        Paragraph(
            "Mean, max and min are over folds; each fold's value is the mean over its "
            "defective test images (strict reading)."
        ),
        Heading(3, "The three readings of mask and boundary mIoU (mean over folds, %)"),
        Table.of(reading_columns(mean_readings), READINGS),
        Heading(2, "Classification (paper Table 3 layout, %)"),
        _table3(report),
        Paragraph("mAP is the mean of the folds' AP; FP and FN are summed over folds."),
        Heading(2, "Folds"),
        Table.of(FOLD_COLUMNS, report["folds"]),
        *_best_epochs(report),
        Paragraph(f"Pooled over all folds' test predictions: {pooled_scores}."),
        *_defect_types(pooled),
        *_parts(pooled),
        *([Curves(curves)] if curves else []),
        *(
            [Pages("Each fold's test set, with the images its model got most wrong", pages)]
            if pages
            else []
        ),
        Paragraph(METRIC_NOTE),
    ]


def _best_epochs(report: dict[str, Any]) -> list[Block]:
    """Where each fold's training scored best on its test images, epoch by epoch
    (``cv --score-epochs``): the epochs the folds agree on are the ones to train for."""
    scored = [fold for fold in report["folds"] if fold.get("best_epochs")]
    if not scored:
        return []
    return [
        Heading(3, "Best epochs on each fold's test images (--score-epochs)"),
        *(Paragraph(f"Fold {fold['fold']}: {'; '.join(fold['best_epochs'])}.") for fold in scored),
        Paragraph(
            "Each epoch was scored on the fold's test images with its phase's own loss "
            "(and, from step 2 on, the AP); the models are those of the last epoch, "
            "scored above."
        ),
    ]


def _defect_types(pooled: EvaluationSummary) -> list[Block]:
    """Each defect type's escapes and masks over all folds, where a review named types."""
    if not pooled.defect_types:
        return []
    return [
        Heading(3, f"{DEFECT_TYPE_TITLE} (pooled over folds)"),
        Table.of(DEFECT_TYPE_COLUMNS, pooled.defect_types),
    ]


def _parts(pooled: EvaluationSummary) -> list[Block]:
    """The image decisions counted in parts over all folds, where parts have several
    images (each fold's threshold on its own test parts)."""
    rates, sentences = part_rates(pooled)
    if not rates:
        return []
    return [
        Heading(3, "Escapes and false rejects in parts (pooled over folds)"),
        Table.of(RATE_COLUMNS, [Rates.of(pooled), *rates]),
        *(Paragraph(sentence) for sentence in sentences),
    ]


def cross_validation_markdown(report: dict[str, Any], curves: list[Path]) -> str:
    """``cv``'s ``report.md`` (the ``curves`` beside it)."""
    lines: list[str] = []
    for block in _blocks(report, curves):
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text]
        elif isinstance(block, Paragraph):
            lines += [block.text]
        elif isinstance(block, Code):
            lines += ["```", block.text, "```"]
        elif isinstance(block, Table):
            lines += markdown_table(block.header, block.rows)
        elif isinstance(block, Curves):
            lines += [" ".join(f"![{curve.stem}]({curve.name})" for curve in block.files)]
        else:
            lines += [f"{block.text}: " + ", ".join(f"`{page}`" for page in block.pages) + "."]
        lines.append("")
    return "\n".join(lines)


def cross_validation_html(report: dict[str, Any], curves: list[Path]) -> str:
    """``cv``'s ``report.html``: the same blocks, the pooled curves embedded, and each
    fold's page linked (relative links: the folder moves as a whole)."""
    e = html.escape
    parts: list[str] = []
    for block in _blocks(report, curves):
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{e(block.text)}</code></pre>")
        elif isinstance(block, Table):
            parts.append(html_grid(block.header, block.rows))
        elif isinstance(block, Curves):
            parts += [
                f'<img src="{png_bytes_uri(curve.read_bytes())}" alt="{e(curve.stem)}">'
                for curve in block.files
            ]
        else:
            links = ", ".join(f'<a href="{e(page)}">{e(page)}</a>' for page in block.pages)
            parts.append(f"<p>{e(block.text)}: {links}.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>psicbatch cross-validation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 90em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
pre {{ white-space: pre-wrap; background: #f4f4f4; padding: 6px; }}
img {{ max-width: 45%; }}
</style></head><body>
{"".join(parts)}
</body></html>
"""


def _inline(text: str) -> str:
    """Escaped text with `code` in backticks as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
