"""A self-contained HTML page about a run's results, for a person to look at.

Everything (plots, thumbnails) is embedded as base64 PNG, so the page can be mailed or
archived alone. Thumbnails are the images as stored at their paths with the mask tinted
over them in red (``pictures``); an image that can no longer be read is listed without
a thumbnail. The paths come from the results file, so they are read as ``run`` reads its
inputs: regular files only, within the same size and decoding-time limits.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from psicbatch.data.images import read_image
from psicbatch.paths import readable_path, row_file
from psicbatch.pictures import (
    BLUE,
    RED,
    PictureReader,
    figure_data_uri,
    png_data_uri,
    tinted_thumbnail,
)
from psicbatch.run import rle
from psicbatch.run.files import FileLimits
from psicbatch.run.headers import read_bytes
from psicbatch.run.limited import call_limited
from psicbatch.run.output_guard import REPORT, REPORT_MARKER, write_checked
from psicbatch.run.part_files import late_said
from psicbatch.run.part_table import PartGrouping, part_counts, part_table
from psicbatch.run.results import (
    described,
    field_text,
    judged_by,
    late_images,
    read_results_table,
    results_counts,
)
from psicbatch.run.results_comparison import ComparedRuns, compare_results
from psicbatch.run.timeline import timeline, timeline_figure
from psicbatch.scores import AppliedDecisions
from psicbatch.wording import counted

THUMBNAIL_HEIGHT = 220
ERRORS_LISTED = 200  # the page names these; the rest are counted


def thumbnail(
    row: dict[str, Any],
    limits: FileLimits,
    reader: PictureReader,
    other_mask: dict[str, Any] | None = None,
) -> str | None:
    """The image with its mask in red (and ``other_mask``, another run's, in blue),
    scaled to THUMBNAIL_HEIGHT; None if ``reader`` gives none within ``limits``, or a
    mask (of an edited results file) cannot be decoded or does not fit it."""
    path = row_file(row)
    masks = [(row["mask"], RED), *([(other_mask, BLUE)] if other_mask is not None else [])]

    def read() -> np.ndarray:  # within the limit, reading too: a share may stop answering
        data, _, _ = read_bytes(path, limits.max_bytes)  # refuses huge headers too
        return read_image(path, 3, data)

    image = reader.read(lambda: call_limited(read, limits.decode_seconds))
    if image is None:
        return None
    try:
        layers = [(rle.decode(mask), colour) for mask, colour in masks]
    except ValueError:  # a damaged RLE
        return None
    if any(mask.shape != image.shape[:2] for mask, _ in layers):
        return None
    return png_data_uri(tinted_thumbnail(image, THUMBNAIL_HEIGHT, layers))


def histogram(probabilities: np.ndarray, threshold: float | None = None) -> str:
    """The probabilities' histogram, with the image threshold marked: how many images sit
    near the decision is what a person checks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 2.6), dpi=100)
    axes.hist(probabilities, bins=40, range=(0, 1), color="#4063a0")
    axes.set(xlabel="defect probability", ylabel="images")
    if threshold is not None:
        axes.axvline(threshold, color="#c03030", linestyle="--")
        right = threshold < 0.7  # the label beside the line, inside the plot
        axes.text(
            threshold + (0.01 if right else -0.01),
            0.95,
            f"threshold {threshold:.3g}",
            color="#c03030",
            ha="left" if right else "right",
            va="top",
            transform=axes.get_xaxis_transform(),
        )
    figure.tight_layout()
    return figure_data_uri(figure)


def nearest_threshold(
    table: pa.Table, readable: pa.ChunkedArray, threshold: float, count: int
) -> list[dict[str, Any]]:
    """The readable rows whose probability lies nearest the threshold, nearest first,
    judged either way: the borderline parts a person should look at first."""
    candidates = pc.indices_nonzero(readable)
    distance = pc.abs(pc.subtract(pc.take(table["probability"], candidates), threshold))
    order = pc.array_sort_indices(distance)
    return table.take(pc.take(candidates, order[:count])).to_pylist()


def _card(row: dict[str, Any], uri: str | None, judged: str = "") -> str:
    e = html.escape
    picture = f'<img src="{uri}" alt="{e(row["path"])}">' if uri else "<p>(image unreadable)</p>"
    return (
        f'<figure class="defect">{picture}<figcaption>{e(row["path"])}<br>'
        f"p = {row['probability']:.3f}{judged}, {row['mask_area']} px</figcaption></figure>"
    )


def write_report(
    results: Path,
    html_path: Path,
    top: int,
    limits: FileLimits,
    compare_to: Path | None = None,
    grouping: PartGrouping | None = None,
) -> str:
    """Build the page and write it atomically, only over nothing or an earlier report;
    the counts it shows (and the comparison), in one line."""
    page, counts = build_report(results, top, limits, compare_to, grouping)
    write_checked(html_path, REPORT, lambda temporary: temporary.write_text(page, encoding="utf-8"))
    return counts


def build_report(
    results: Path,
    top: int = 24,
    limits: FileLimits | None = None,
    compare_to: Path | None = None,
    grouping: PartGrouping | None = None,
) -> tuple[str, str]:
    """The page, and its counts in one line; with ``compare_to`` (another run's results
    of the same images, a file or a watch folder) a section on what this run decided
    differently; with ``grouping``, its parts' decisions counted (``part_table``). The
    rows stay in one Arrow table (a day of a line's results can hold millions); only the
    rows the page shows become Python."""
    limits = limits or FileLimits()
    table, metadata = read_results_table(results)
    # Read before any thumbnail is made, so that a bad one fails at once.
    that = (compare_to, *read_results_table(compare_to)) if compare_to is not None else None
    images, defect_count, error_count = results_counts(table)
    readable = pc.is_null(table["error"])  # masks and indices: no copy of the table
    defects = pc.indices_nonzero(pc.and_(readable, pc.fill_null(table["is_defect"], False)))
    order = pc.array_sort_indices(pc.take(table["probability"], defects), order="descending")
    shown = table.take(pc.take(defects, order[:top])).to_pylist()  # the stable sort's first
    e = html.escape
    made: dict[tuple[Path, str], str | None] = {}
    reader = PictureReader()

    def picture(row: dict[str, Any]) -> str | None:
        """The row's thumbnail, made once: a row can be both a likely defect and one of
        the borderline images."""
        key = (row_file(row), str(row.get("mask")))
        if key not in made:
            made[key] = thumbnail(row, limits, reader)
        return made[key]

    cards = [_card(row, picture(row)) for row in shown]
    readable_count = images - error_count
    rate = defect_count / readable_count if readable_count else 0.0
    shown_counts = ("results", "images", "defective", "errors")  # at the top of the page
    description = described(results, table, metadata)
    meta_rows = "".join(
        f"<tr><th>{e(key)}</th><td>{e(field_text(value))}</td></tr>"
        for key, value in description.items()
        if key not in shown_counts
    )
    judged = judged_by(metadata)
    histogram_html = _histogram_section(table, readable, judged) if readable_count else ""
    borderline = _borderline_section(table, readable, judged, top, picture) if judged else ""
    counts = (
        f"{counted(images, 'image')}, {defect_count} defective, {counted(error_count, 'error')}"
    )
    parts, in_parts = _parts_section(table, grouping, top) if grouping else ("", "")
    counts += f"; {in_parts}" if in_parts else ""
    late, late_line = _late_section(late_images(results), top)
    counts += f"; {late_line}" if late_line else ""
    comparison = ""
    if that is not None:
        other, other_table, other_run = that
        changes = compare_results(table, other_table)
        comparison = _comparison_section(
            (table, description),
            (other_table, described(other, other_table, other_run)),
            changes,
            top,
            limits,
        )
        counts += f"; compared with {readable_path(other)}: {changes.line()}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{REPORT_MARKER.decode()}
<title>psicbatch report: {e(readable_path(results.name))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.counts td {{ padding: 0 1.5em 0 0; font-size: 1.3em; }}
.defects {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.defect {{ margin: 0; border: 1px solid #ccc; padding: 6px; max-width: 320px; }}
.defect figcaption {{ font-size: 0.8em; word-break: break-all; }}
table.meta th {{ text-align: left; padding-right: 1em; }}
</style></head><body>
<h1>psicbatch report: {e(readable_path(results))}</h1>
<table class="counts"><tr><td>{counted(images, "image")}</td><td>{defect_count} defective</td>
<td>{100 * rate:.1f}% of readable images defective</td><td>{counted(error_count, "error")}</td>
</tr></table>
{parts}{late}{comparison}
<h2>Defect probability</h2>{histogram_html}
{_over_time_section(table)}
<h2>Most likely defects ({len(shown)} of {defect_count})</h2>
<div class="defects">{"".join(cards) or "<p>No defects found.</p>"}</div>
{borderline}
{_errors_section(table, readable, error_count)}
<h2>Run</h2><table class="meta">{meta_rows}</table>
</body></html>
"""
    return page, counts


def _histogram_section(table: pa.Table, readable: pa.Array, judged: AppliedDecisions | None) -> str:
    """The readable images' probabilities as a histogram, with the threshold they were
    judged by where the results record it."""
    probabilities = pc.filter(table["probability"], readable).to_numpy()
    threshold = judged.threshold if judged else None
    picture = f'<img src="{histogram(probabilities, threshold)}">'
    return f"<p>Judged defective: {html.escape(judged.line())}.</p>{picture}" if judged else picture


def _borderline_section(
    table: pa.Table,
    readable: pa.Array,
    judged: AppliedDecisions,
    top: int,
    picture: Callable[[dict[str, Any]], str | None],
) -> str:
    """The ``top`` images nearest the threshold, judged either way."""
    nearest = nearest_threshold(table, readable, judged.threshold, top)
    verdict = {True: " (judged defective)", False: " (judged good)"}
    return (
        f"<h2>Nearest the threshold ({len(nearest)})</h2><p>The images whose probability "
        "lies closest to the threshold, judged either way, nearest first: the borderline "
        'parts to look at first.</p><div class="defects">'
        + "".join(_card(row, picture(row), verdict[bool(row["is_defect"])]) for row in nearest)
        + "</div>"
    )


def _errors_section(table: pa.Table, readable: pa.Array, error_count: int) -> str:
    """The first ``ERRORS_LISTED`` unreadable images and why, and how many more there are."""
    e = html.escape
    listed = table.take(pc.indices_nonzero(pc.invert(readable))[:ERRORS_LISTED]).to_pylist()
    items = "".join(f"<li><code>{e(r['path'])}</code>: {e(r['error'])}</li>" for r in listed)
    if error_count > len(listed):
        items += (
            f"<li>and {error_count - len(listed)} more (every one is in the results; "
            "<code>psicbatch report --csv</code> lists them)</li>"
        )
    return f"<h2>Errors ({error_count})</h2><ul>{items or '<li>none</li>'}</ul>"


def _parts_section(table: pa.Table, grouping: PartGrouping, top: int) -> tuple[str, str]:
    """The page's parts: their decisions counted, and the first ``top`` of those neither
    rejected nor passed (an image not inspected, images missing: a camera or a file to
    look at); and the counts in a line."""
    e = html.escape
    decided = part_table(table, grouping)
    in_parts = part_counts(decided)
    section = f"<p>Parts (--group-by <code>{e(grouping.pattern)}</code>): {e(in_parts)}.</p>"
    undecided = decided.filter(pc.is_in(decided["decision"], pa.array(["unknown", "incomplete"])))
    if undecided.num_rows:
        rows = "".join(
            f"<tr><td>{e(part['part'])}</td><td>{part['decision']}</td><td>{part['images']}</td>"
            f"<td>{part['errors']}</td></tr>"
            for part in undecided.slice(0, top).to_pylist()
        )
        section += (
            f"<h2>Parts neither rejected nor passed ({undecided.num_rows})</h2>"
            '<table class="meta"><tr><th>part</th><th>decision</th><th>images</th>'
            f"<th>errors</th></tr>{rows}</table>"
        )
    return section, in_parts


def _over_time_section(table: pa.Table) -> str:
    """A watch's images and their share judged defective over time; nothing for a
    results file (no time per image) or a stretch too short to show one."""
    line = timeline(table)
    if line is None:
        return ""
    highest = line.highest()
    said = f" The {html.escape(highest)}." if highest else ""
    return (
        f"<h2>Over time</h2><p>Images per {line.width_said()} (by when their file was "
        f"complete), and the share of the readable ones judged defective.{said}</p>"
        f'<img src="{timeline_figure(line)}">'
    )


def _late_section(lines: list[dict[str, str]], top: int) -> tuple[str, str]:
    """The images a watch noted as late (they came after their part was decided), those
    judged defective first: a passed part one of them shows defective is a part to pull
    from the line's good ones. The first ``top``, and their counts in a line."""
    if not lines:
        return "", ""
    e = html.escape
    said = late_said(lines)
    first = sorted(lines, key=lambda line: (line["is_defect"] != "true", line["error"] == ""))
    rows = "".join(
        f"<tr><td>{e(line['part'])}</td><td>{e(line['decision'])}</td><td>{e(line['now'])}</td>"
        f"<td><code>{e(line['path'])}</code></td><td>{e(line['noted_at'])}</td>"
        f"<td>{_late_result(line)}</td></tr>"
        for line in first[:top]
    )
    section = (
        f"<h2>Images after their part's decision ({len(lines)})</h2><p>Each came after the "
        "watch had decided its part, and did not change that decision; <i>now</i> is the "
        "decision the part would get on every image of it so far (the parts counted above "
        "are counted on all their images, these too): a part passed that one of them shows "
        "defective is a part to pull, an incomplete one now passed a part to release. "
        f"{e(said)}.</p>"
        '<table class="meta"><tr><th>part</th><th>decided</th><th>now</th><th>image</th>'
        f"<th>noted</th><th>result</th></tr>{rows}</table>"
    )
    return section, said


def _late_result(line: dict[str, str]) -> str:
    if line["error"]:
        return f"error: {html.escape(line['error'])}"
    judged = "judged defective" if line["is_defect"] == "true" else "judged good"
    return f"{judged}, probability {html.escape(line['probability'])}"


def _comparison_section(
    this: tuple[pa.Table, dict[str, Any]],
    that: tuple[pa.Table, dict[str, Any]],
    compared: ComparedRuns,
    top: int,
    limits: FileLimits,
) -> str:
    """What this run decided differently from the other (each: its rows and
    ``described`` description) on the same images: counts, probability changes, mask
    agreement, and the changed images (this run's mask in red, the other's in blue),
    largest probability change first."""
    (table, said), (other_table, other_said) = this, that
    e = html.escape
    name = e(str(other_said["results"]))
    shifts = compared.shifts
    facts: list[tuple[str, Any]] = [
        ("this run", _run_line(said)),
        ("the other run", _run_line(other_said)),
        ("images with a result in both", compared.both),
        ("judged defective in both", compared.judged.get("defective/defective", 0)),
        ("judged good in both", compared.judged.get("good/good", 0)),
        ("now judged defective (good there)", compared.newly_defective),
        ("now judged good (defective there)", compared.newly_good),
        ("only in this run (or an error there)", compared.only_here),
        ("only in the other run (or an error here)", compared.only_there),
        ("files changed between the runs (not compared)", compared.changed_files),
    ]
    if shifts.size:
        percentiles = np.percentile(shifts, [50, 95])
        facts.append(
            (
                "probability change",
                f"median {percentiles[0]:.3g}, 95th percentile {percentiles[1]:.3g}, "
                f"largest {shifts.max():.3g}",
            )
        )
    if compared.mask_ious:
        facts.append(
            (
                "masks of images both judge defective",
                f"mean IoU {np.mean(compared.mask_ious):.3f} over {len(compared.mask_ious)} "
                f"images (lowest {min(compared.mask_ious):.3f})",
            )
        )
    rows = "".join(f"<tr><th>{e(key)}</th><td>{e(str(value))}</td></tr>" for key, value in facts)
    ours, theirs = compared.changed_rows(0, top)
    shown = table.take(ours).to_pylist()
    before = other_table.select(["probability", "is_defect", "mask"]).take(theirs).to_pylist()
    cards = []
    reader = PictureReader()
    for row, there in zip(shown, before, strict=True):
        verdict = "defective" if row["is_defect"] else "good"
        was = "defective" if there["is_defect"] else "good"
        caption = f" (was {there['probability']:.3f}), judged {verdict} (was {was})"
        cards.append(_card(row, thumbnail(row, limits, reader, there["mask"]), caption))
    listed = table["path"].take(compared.changed_rows(top, top + ERRORS_LISTED)[0]).to_pylist()
    more = compared.changed.num_rows - top - len(listed)
    items = "".join(f"<li><code>{e(path)}</code></li>" for path in listed)
    if more > 0:
        items += f"<li>and {more} more</li>"
    return (
        f'<h2>Compared with {name}</h2><table class="meta">{rows}</table>'
        f"<h3>Decisions that changed ({compared.changed.num_rows})</h3><p>Largest probability "
        "change first; this run's mask in red, the other run's in blue.</p>"
        f'<div class="defects">{"".join(cards) or "<p>None.</p>"}</div>'
        + (f"<ul>{items}</ul>" if items else "")
    )


def _run_line(said: dict[str, Any]) -> str:
    """A run's results, engine and how it judged images (its ``described`` description),
    in one line."""
    facts = [
        str(said["results"]),
        str(said.get("engine") or "engine not recorded"),
        *([f"engine sha256 {said['engine_sha256'][:12]}"] if said.get("engine_sha256") else []),
        *([f"judged defective: {said['judged defective']}"] if "judged defective" in said else []),
    ]
    return ", ".join(facts)
