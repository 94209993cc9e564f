"""The evaluation's page for a person to look at, self-contained (pictures embedded): the
figures of ``report.md``, the curves, and the images the engine got most wrong
(``gallery``) with their true and predicted masks tinted over them."""

from __future__ import annotations

import html
import math
from pathlib import Path

from psicbatch.data.images import read_image
from psicbatch.gallery import KINDS, THUMBNAIL_HEIGHT, Example, Gallery, Kind
from psicbatch.paths import row_file
from psicbatch.pictures import (
    RED,
    PictureReader,
    png_bytes_uri,
    png_data_uri,
    thumbnail_size,
    tinted_thumbnail,
)
from psicbatch.reports import (
    COMPARISON_COLUMNS,
    DEFECT_TYPE_COLUMNS,
    DEFECT_TYPE_TITLE,
    METRIC_NOTE,
    RATE_COLUMNS,
    READINGS,
    SUMMARY_COLUMNS,
    decision_rates,
    evaluation_context,
    html_table,
    reading_columns,
)
from psicbatch.scores import EvaluationSummary

TRUE_ONLY = (0, 170, 0)  # a true defect pixel the engine missed
BOTH = (255, 200, 0)  # a true defect pixel the engine found
PREDICTED_ONLY = RED  # a defect pixel the engine found where there is none


def evaluation_html(
    summary: EvaluationSummary, gallery: Gallery, title: str, curves: list[Path]
) -> str:
    e = html.escape
    context = "".join(f"<p>{e(sentence)}</p>" for sentence in evaluation_context(summary))
    rates, verdicts = decision_rates(summary)
    decisions = (
        "<h2>Escapes and false rejects</h2>"
        + html_table(RATE_COLUMNS, rates)
        + "".join(f"<p>{e(sentence)}</p>" for sentence in verdicts)
    )
    if summary.defect_types:
        decisions += f"<h2>{DEFECT_TYPE_TITLE}</h2>" + html_table(
            DEFECT_TYPE_COLUMNS, summary.defect_types
        )
    comparison = ""
    if summary.comparison is not None:
        reference = summary.comparison
        comparison = (
            f"<h2>Against {e(reference.reference)} ({e(reference.reference_engine.line())})</h2>"
            + html_table(COMPARISON_COLUMNS, reference.metrics.items())
        )
    pictures = "".join(
        f'<img src="{png_bytes_uri(curve.read_bytes())}" alt="{e(curve.stem)}">' for curve in curves
    )
    reader = PictureReader()
    sections = "".join(_section(kind, gallery, reader) for kind in KINDS)
    swatch = '<span class="swatch" style="background: rgb{}"></span> {}'
    legend = ", ".join(
        swatch.format(colour, name)
        for colour, name in (
            (BOTH, "true defect found"),
            (TRUE_ONLY, "true defect missed"),
            (PREDICTED_ONLY, "predicted where there is none"),
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>psicbatch evaluation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 90em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
.images {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; border: 1px solid #ccc; padding: 6px; max-width: 340px; }}
figcaption {{ font-size: 0.8em; word-break: break-all; }}
.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; }}
.note {{ font-size: 0.85em; color: #555; }}
</style></head><body>
<h1>{e(title)}</h1>{context}
{html_table(SUMMARY_COLUMNS, [summary])}
{html_table(reading_columns(summary.segmentation), READINGS)}
<p class="note">{e(METRIC_NOTE)}</p>{decisions}{comparison}
<div>{pictures}</div>
<p>Masks as scored, tinted over each image: {legend}.</p>
{sections}
</body></html>
"""


def _section(kind: Kind, gallery: Gallery, reader: PictureReader) -> str:
    examples = gallery.worst(kind)
    count = gallery.counts[kind.title]
    shown = f"{len(examples)} of {count}" if count > len(examples) else str(count)
    cards = "".join(_card(example, reader) for example in examples) or "<p>None.</p>"
    return (
        f"<h2>{html.escape(kind.title)} ({shown})</h2>"
        f'<p class="note">{html.escape(kind.order)}</p><div class="images">{cards}</div>'
    )


def _card(example: Example, reader: PictureReader) -> str:
    e = html.escape
    row = example.row
    uri = _thumbnail(example, reader)
    picture = f'<img src="{uri}" alt="">' if uri else "<p>(image not readable here)</p>"
    iou = "" if math.isnan(row["mask_iou"]) else f", mask IoU {row['mask_iou']:.3f}"
    true = row["true_defect_pixels"]
    return (
        f"<figure>{picture}<figcaption>{e(row['path'])}<br>"
        f"p = {row['probability']:.4g}{iou}, {row['predicted_defect_pixels']} px predicted, "
        f"{'no true mask' if true is None else f'{true} px true'}</figcaption></figure>"
    )


def _thumbnail(example: Example, reader: PictureReader) -> str | None:
    """The image read again, its masks tinted over it; None when it cannot be read or
    is no longer the size it was scored at."""
    image = reader.read(lambda: read_image(row_file(example.row), 3))
    if image is None:
        return None
    if thumbnail_size(image.shape[:2], THUMBNAIL_HEIGHT) != example.truth.shape:
        return None
    truth, predicted = example.truth, example.predicted
    layers = [
        (truth & predicted, BOTH),
        (truth & ~predicted, TRUE_ONLY),
        (predicted & ~truth, PREDICTED_ONLY),
    ]
    return png_data_uri(tinted_thumbnail(image, THUMBNAIL_HEIGHT, layers))
