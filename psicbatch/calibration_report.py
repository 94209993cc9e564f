"""The calibration reports: markdown (the operating point, the trade-off as a table,
each fold's point, the images nearest the threshold) and one self-contained HTML page
with the escape / false-reject curve and thumbnails where the files can be read."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psicbatch.calibrate import Calibration, Validation
from psicbatch.data.images import read_image
from psicbatch.decisions import Decisions, OperatingPoint, target_text
from psicbatch.fingerprints import calibration_notes
from psicbatch.paths import file_head
from psicbatch.pictures import PictureReader, figure_data_uri, png_data_uri, tinted_thumbnail
from psicbatch.region_record import short
from psicbatch.reports import TYPE_ESCAPE_COLUMNS, Column, column_table, html_table

THUMBNAIL_HEIGHT = 160
MARKDOWN_TITLE = "Decisions for the line"  # how calibrate's reports are known again
HTML_TITLE = "psicbatch decisions"


def type_title(point: OperatingPoint) -> str:
    """The heading of each defect type's escapes, counted in images or in parts."""
    return f"Defective {point.unit} by type, with these decisions"


def is_calibration_markdown(path: Path) -> bool:
    return file_head(path).startswith(f"# {MARKDOWN_TITLE}\n".encode())


def is_calibration_page(path: Path) -> bool:
    head = file_head(path)
    return head.startswith(b"<!DOCTYPE html>") and f"<title>{HTML_TITLE}</title>".encode() in head


POINT_COLUMNS: tuple[Column[OperatingPoint], ...] = (
    Column("threshold", lambda p: f"{p.threshold:.4g}"),
    Column("escapes", lambda p: f"{p.escapes} of {p.defective}"),
    Column("escape rate (%)", lambda p: f"{100 * p.escape_rate:.2f}"),
    Column("95% upper bound (%)", lambda p: f"{100 * p.escape_rate_upper:.1f}"),
    Column("false rejects", lambda p: f"{p.false_rejects} of {p.good}"),
    Column("false-reject rate (%)", lambda p: f"{100 * p.false_reject_rate:.2f}"),
)


COUNTED_COLUMNS = (Column[OperatingPoint]("counted in", lambda p: p.unit), *POINT_COLUMNS)


def chosen_points(
    result: Calibration,
) -> tuple[Sequence[Column[OperatingPoint]], list[OperatingPoint]]:
    """The operating point's table: decisions chosen for parts also counted in images."""
    if result.in_images is None:
        return POINT_COLUMNS, [result.chosen]
    return COUNTED_COLUMNS, [result.chosen, result.in_images]


def _point(item: tuple[int, OperatingPoint]) -> OperatingPoint:
    return item[1]


FOLD_COLUMNS: tuple[Column[tuple[int, OperatingPoint]], ...] = (
    Column("fold", lambda item: item[0]),
    *(column.on(_point) for column in POINT_COLUMNS),
)


def labelled(image: dict[str, Any]) -> str:
    """``good``, ``defective`` or, where a review named its type, ``defective (crack)``."""
    if not image["defective"]:
        return "good"
    return f"defective ({image['defect_type']})" if image["defect_type"] else "defective"


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
    unit = chosen.unit
    axes.set(xscale="log", xlabel="image threshold", ylabel=f"% of defective / good {unit}")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure_data_uri(figure)


def thumbnail(path: Path, reader: PictureReader) -> str | None:
    image = reader.read(lambda: read_image(path, 3))
    return None if image is None else png_data_uri(tinted_thumbnail(image, THUMBNAIL_HEIGHT))


def calibration_html(decisions: Decisions, data: Validation, result: Calibration) -> str:
    e = html.escape
    cards = []
    reader = PictureReader()
    for image in result.nearest:
        uri = thumbnail(image["file"], reader)
        picture = f'<img src="{uri}" alt="">' if uri else "<p>(image not readable here)</p>"
        label = labelled(image)
        cards.append(
            f"<figure>{picture}<figcaption>{e(image['path'])}<br>{label}, "
            f"p = {image['probability']:.4g}, {image['mask_area']} px</figcaption></figure>"
        )
    types = ""
    if result.chosen.by_type:
        table = html_table(TYPE_ESCAPE_COLUMNS, result.chosen.by_type)
        types = f"<h2>{type_title(result.chosen)}</h2>{table}"
    folds = ""
    if result.per_fold:
        table = html_table(FOLD_COLUMNS, result.per_fold.items())
        folds = f"<h2>Each fold's own operating point</h2>{table}"
    curve = curve_png(result.points, result.chosen)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{HTML_TITLE}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
.images {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; border: 1px solid #ccc; padding: 6px; max-width: 260px; }}
figcaption {{ font-size: 0.8em; word-break: break-all; }}
</style></head><body>
<h1>Decisions for the line</h1>
<p>{e(summary_line(decisions, data, result.chosen))}</p>
<pre>{e(decisions.command)}</pre>
<h2>Operating point</h2>{html_table(*chosen_points(result))}
{types}
<h2>Escapes and false rejects against the threshold</h2><img src="{curve}" alt="">
{folds}
<h2>Images nearest the threshold</h2><div class="images">{"".join(cards)}</div>
</body></html>
"""


def _area(decisions: Decisions) -> str:
    pixels, size = decisions.rule.min_area, decisions.pixel_size_mm
    if size is None:
        return f"{pixels} pixels"
    return f"{pixels} pixels ({pixels * size**2:.3g} mm² at {size:g} mm per pixel)"


def summary_line(decisions: Decisions, data: Validation, point: OperatingPoint) -> str:
    rule = decisions.rule
    rule_text = {
        "classifier": "the image probability alone",
        "both": f"the image probability and a mask of at least {_area(decisions)}",
        "either": f"the image probability, or a mask of at least {_area(decisions)}",
    }[rule.name]
    region = (
        f" Masks counted inside the region of interest {short(decisions.roi)}, which runs of "
        "these decisions apply."
        if decisions.roi is not None
        else ""
    )
    validation = decisions.validation
    seen = calibration_notes(
        validation.get("seen_in_training"), validation.get("seen_in_choosing"), len(data.files)
    )
    training = "".join(f" Note: {note}." for note in seen)
    return (
        f"Target: {target_text(decisions.target)}; decision by "
        f"{rule_text}. Validation: {data.source}, {point.defective} defective and "
        f"{point.good} good {point.unit}{_of_images(data, point)}.{region}{training} Set by "
        f"{decisions.set_by} at {decisions.set_at}."
    )


def _of_images(data: Validation, point: OperatingPoint) -> str:
    """How many images the parts hold, where parts were counted; a part is rejected when
    any of its images is judged defective."""
    if point.unit != "parts":
        return ""
    return (
        f" ({len(data.labels)} images; a part is defective when any of its images is, and "
        "rejected when any of its images is judged defective)"
    )


def calibration_markdown(decisions: Decisions, data: Validation, result: Calibration) -> str:
    point = result.chosen
    lines = [
        f"# {MARKDOWN_TITLE}",
        "",
        summary_line(decisions, data, point),
        "",
        "```",
        decisions.command,
        "```",
        "",
        "## Operating point",
        "",
        *column_table(*chosen_points(result)),
        "",
        f"With {point.defective} defective validation {point.unit} and {point.escapes} "
        "escaping, the "
        f"escape rate on new parts is below {100 * point.escape_rate_upper:.1f}% with 95% "
        "confidence (one-sided Clopper-Pearson bound): that is all this many defects can "
        f"vouch for. More labelled defective {point.unit} narrow it (about 3/n with none "
        "escaping).",
    ]
    if result.chosen.by_type:
        lines += [
            "",
            f"## {type_title(result.chosen)}",
            "",
            *column_table(TYPE_ESCAPE_COLUMNS, result.chosen.by_type),
        ]
    if result.per_fold:
        lines += [
            "",
            "## Per fold (each fold's own operating point for the same target)",
            "",
            "Cross-validation predictions come from one model per fold, so the operating "
            "point above mixes models; a decision file belongs with the model its "
            "predictions came from. Each fold's own point:",
            "",
        ]
        lines += column_table(FOLD_COLUMNS, result.per_fold.items())
    lines += ["", "## Trade-off (every distinct decision on these images)", ""]
    lines += column_table(POINT_COLUMNS, _spread(result.points, point))
    lines += ["", "## Images nearest the threshold", ""]
    lines += column_table(
        (
            Column("path", lambda image: image["path"]),
            Column("probability", lambda image: f"{image['probability']:.4f}"),
            Column("labelled", labelled),
            Column("mask area (px)", lambda image: image["mask_area"]),
        ),
        result.nearest,
    )
    return "\n".join(lines) + "\n"


def _spread(points: list[OperatingPoint], chosen: OperatingPoint) -> list[OperatingPoint]:
    """At most 15 rows: evenly spaced over the curve, with the chosen point."""
    step = max(1, len(points) // 14)
    kept = {id(p): p for p in points[::step]}
    kept[id(chosen)] = chosen
    return sorted(kept.values(), key=lambda p: p.threshold)
