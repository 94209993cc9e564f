"""The calibration report as one self-contained HTML page: the operating point, the
escape / false-reject curve, each fold's point, and the images nearest the threshold
(with thumbnails where the files can be read)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from psicbatch.calibrate import Calibration
from psicbatch.data.images import ImageReadError, read_image
from psicbatch.decisions import Decisions, OperatingPoint
from psicbatch.reports import Column

T = TypeVar("T")
THUMBNAIL_HEIGHT = 160


def html_table(columns: Sequence[Column[T]], items: Iterable[T]) -> str:
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c.cell(item)))}</td>" for c in columns) + "</tr>"
        for item in items
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def curve_png(points: list[OperatingPoint], chosen: OperatingPoint) -> str:
    """Escape and false-reject rates against the threshold, the chosen one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = [max(p.threshold, 1e-6) for p in points]
    figure, axes = plt.subplots(figsize=(7, 3.4), dpi=100)
    axes.step(thresholds, [100 * p.escape_rate for p in points], where="post", label="escapes")
    axes.step(
        thresholds, [100 * p.false_reject_rate for p in points], where="post", label="false rejects"
    )
    axes.axvline(max(chosen.threshold, 1e-6), color="#c03030", linestyle="--", label="chosen")
    axes.set(xscale="log", xlabel="image threshold", ylabel="% of defective / good images")
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail(path: str) -> str | None:
    try:
        image = Image.fromarray(read_image(Path(path), 3))
    except (ImageReadError, OSError):
        return None
    scale = THUMBNAIL_HEIGHT / image.height
    image = image.resize((max(1, round(image.width * scale)), THUMBNAIL_HEIGHT))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def calibration_html(
    decisions: Decisions,
    result: Calibration,
    summary: str,
    point_columns: Sequence[Column[OperatingPoint]],
    fold_columns: Sequence[Column[tuple[int, OperatingPoint]]],
) -> str:
    e = html.escape
    cards = []
    for image in result.nearest:
        uri = thumbnail(image["path"])
        picture = f'<img src="{uri}" alt="">' if uri else "<p>(image not readable here)</p>"
        label = "defective" if image["defective"] else "good"
        cards.append(
            f"<figure>{picture}<figcaption>{e(image['path'])}<br>{label}, "
            f"p = {image['probability']:.4g}, {image['mask_area']} px</figcaption></figure>"
        )
    folds = ""
    if result.per_fold:
        table = html_table(fold_columns, result.per_fold.items())
        folds = f"<h2>Each fold's own operating point</h2>{table}"
    rows: list[Any] = [result.chosen]
    curve = curve_png(result.points, result.chosen)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>psicbatch decisions</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
.images {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; border: 1px solid #ccc; padding: 6px; max-width: 260px; }}
figcaption {{ font-size: 0.8em; word-break: break-all; }}
</style></head><body>
<h1>Decisions for the line</h1>
<p>{e(summary)}</p>
<pre>{e(decisions.command)}</pre>
<h2>Operating point</h2>{html_table(point_columns, rows)}
<h2>Escapes and false rejects against the threshold</h2><img src="{curve}" alt="">
{folds}
<h2>Images nearest the threshold</h2><div class="images">{"".join(cards)}</div>
</body></html>
"""
