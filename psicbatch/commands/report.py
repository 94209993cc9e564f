"""``psicbatch report``: a page, tables and mask images of a run's results."""

from __future__ import annotations

from pathlib import Path

import click

from psicbatch.commands import SUMMARIES
from psicbatch.commands.options import (
    AT_LEAST_ONE,
    NON_NEGATIVE_INT,
    POSITIVE,
    Location,
    OutputPath,
    need_group_by,
)
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path
from psicbatch.run.csv_table import CSV_TABLE, write_csv_table
from psicbatch.run.files import DEFAULT_DECODE_SECONDS, DEFAULT_MAX_MIB, MIB, FileLimits
from psicbatch.run.html_report import write_report
from psicbatch.run.mask_images import write_mask_images
from psicbatch.run.output_guard import REPORT, check_output
from psicbatch.run.part_table import PARTS_TABLE, PartGrouping, write_part_table
from psicbatch.run.watch_parts import recorded_grouping


def _check_report_options(
    results: Path,
    html_path: Path | None,
    csv_path: Path | None,
    parts_path: Path | None,
    group_by: str | None,
    part_images: int | None,
    compare_to: Path | None,
) -> None:
    """Options that need another, or that cannot go together, refused before any work."""
    if parts_path is not None and group_by is None:
        raise click.BadParameter("--parts-csv needs --group-by, which names a part's images")
    if group_by is not None and parts_path is None and html_path is None and csv_path is None:
        raise click.BadParameter(
            "--group-by counts parts for --parts-csv, --csv or the page (--html)"
        )
    need_group_by(part_images, group_by)
    if compare_to is not None:
        if html_path is None:
            raise click.BadParameter("the comparison is on the page: give --html too")
        if compare_to.resolve() == results.resolve():
            raise click.BadParameter("compares RESULTS with themselves", param_hint="--compare-to")


@click.command("report", short_help=SUMMARIES["report"])
@click.argument("results", type=Location(path_type=Path))
@click.option(
    "--html",
    "-o",
    "--out",
    "html_path",
    type=OutputPath(dir_okay=False),
    help="The page (default: report.html, unless only tables or mask images are asked for).",
)
@click.option(
    "--csv",
    "csv_path",
    type=OutputPath(dir_okay=False),
    help="Also (or only) a CSV table: one row per image, boxes split into columns, no masks.",
)
@click.option(
    "--parts-csv",
    "parts_path",
    type=OutputPath(dir_okay=False),
    help="Also (or only) a CSV table of parts (with --group-by): a part is rejected when any "
    "of its images was judged defective.",
)
@click.option(
    "--group-by",
    metavar="REGEX",
    help="The images of one part are those whose paths share this pattern's match (its "
    "first group, if it has one): '(part[0-9]+)_cam'. For --parts-csv; the page counts "
    "parts too, and --csv gives each image its part and the part's decision.",
)
@click.option(
    "--part-images",
    type=AT_LEAST_ONE,
    metavar="N",
    help="With --group-by: a part has N images (its sides, its cameras); one with fewer, "
    "none judged defective, is incomplete rather than passed.",
)
@click.option(
    "--mask-images",
    "mask_folder",
    type=OutputPath(file_okay=False),
    help="Also (or only) a folder with each non-empty mask as a 1-bit PNG at its image's "
    "size, listed in masks.csv.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an earlier psicbatch page, table or mask export at --html, --csv, "
    "--parts-csv, --mask-images.",
)
@click.option(
    "--compare-to",
    type=Location(path_type=Path, exists=True),
    help="Another run's results of the same images (a file or a --watch folder): the page "
    "adds what this run decided differently (e.g. a new model's run beside the line's).",
)
@click.option(
    "--top",
    type=NON_NEGATIVE_INT,
    default=24,
    show_default=True,
    help="Thumbnails of the most likely defects, of the images nearest the threshold, and "
    "of the decisions that changed.",
)
@click.option(
    "--max-file-size",
    default=DEFAULT_MAX_MIB,
    show_default=True,
    type=POSITIVE,
    help="MiB; larger images get no thumbnail.",
)
@click.option(
    "--decode-timeout",
    type=POSITIVE,
    default=DEFAULT_DECODE_SECONDS,
    show_default=True,
    help="Seconds one image may take to decode for its thumbnail.",
)
def report_command(
    results: Path,
    html_path: Path | None,
    csv_path: Path | None,
    parts_path: Path | None,
    group_by: str | None,
    part_images: int | None,
    mask_folder: Path | None,
    overwrite: bool,
    compare_to: Path | None,
    top: int,
    max_file_size: float,
    decode_timeout: float,
) -> None:
    """A self-contained HTML page about a results file: counts, defects, errors; with
    --csv, a table of it for spreadsheets; with --parts-csv, its parts rejected or passed;
    with --mask-images, its masks as image files.

    RESULTS is a results file of psicbatch run, or a --watch output folder (or one
    date=... or hour=... folder in it). With --compare-to, the page also sets it beside
    another run's results of the same images: the decisions that changed, how far the
    probabilities moved, how well the masks agree.
    """
    if html_path is None and csv_path is None and mask_folder is None and parts_path is None:
        html_path = Path("report.html")
    recorded = recorded_grouping(results)  # a watch's parts, as it decided them by default
    if group_by is None and recorded is not None and (parts_path or html_path or csv_path):
        group_by, part_images = recorded.pattern, part_images or recorded.images
    _check_report_options(
        results, html_path, csv_path, parts_path, group_by, part_images, compare_to
    )
    grouping = None if group_by is None else PartGrouping(group_by, part_images)
    outputs = {
        kind: path
        for kind, path in ((REPORT, html_path), (CSV_TABLE, csv_path), (PARTS_TABLE, parts_path))
        if path
    }
    what = "the results folder" if results.is_dir() else "the results file"
    for kind, path in outputs.items():
        if not path.absolute().parent.is_dir():
            raise PsicbatchError(f"{readable_path(path)}: its folder does not exist")
        named: dict[str, Path | None] = {what: results, "the results compared": compare_to}
        named.update({f"the {other.noun}": p for other, p in outputs.items() if other != kind})
        check_output(path, kind, named_inputs=named, overwrite=overwrite)
    if mask_folder is not None:
        written = write_mask_images(results, mask_folder, overwrite)
        click.echo(f"wrote {readable_path(mask_folder)}: {written}")
    if csv_path is not None:
        written = write_csv_table(results, csv_path, grouping)
        click.echo(f"wrote {readable_path(csv_path)}: {written}")
    if parts_path is not None and grouping is not None:
        written = write_part_table(results, parts_path, grouping)
        click.echo(f"wrote {readable_path(parts_path)}: {written}")
    if html_path is not None:
        limits = FileLimits(int(max_file_size * MIB), decode_timeout)
        counts = write_report(results, html_path, top, limits, compare_to, grouping)
        click.echo(f"wrote {readable_path(html_path)}: {counts}")
