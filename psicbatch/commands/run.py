"""``psicbatch run``: the batch inspection job."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from psicbatch.assets import demo_model_path
from psicbatch.commands import SUMMARIES
from psicbatch.commands.options import (
    AT_LEAST_ONE,
    POSITIVE,
    AutoOr,
    Location,
    OutputPath,
    chosen_decisions,
    decision_options,
    device_option,
    engine_options,
    need_group_by,
    split_option,
)
from psicbatch.contention import contention_line
from psicbatch.cpus import fewer_cpus_line
from psicbatch.data.combined import WHOLE
from psicbatch.data.layouts import AUTO, LAYOUTS
from psicbatch.data.splits import compiled_pattern
from psicbatch.output_lock import RELEASE_SECONDS
from psicbatch.paths import readable_path
from psicbatch.progress import progress_bar, say
from psicbatch.run.files import DEFAULT_DECODE_SECONDS, DEFAULT_MAX_MIB, MIB, FileLimits
from psicbatch.run.inputs import collect_inputs
from psicbatch.run.job import PART_OPTIONS_FILE, resolved_sources
from psicbatch.run.limited import TimeLimitExceeded, call_limited
from psicbatch.run.options import (
    DECODERS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TIMEOUT,
    MASK_MODES,
    RunOptions,
)
from psicbatch.run.output import parts_directory
from psicbatch.run.part_table import PartGrouping
from psicbatch.run.shutdown import Stopped, exit_at_once
from psicbatch.run.watch_parts import DEFAULT_TIMEOUT as DEFAULT_PART_TIMEOUT
from psicbatch.run.watch_parts import WatchParts

if TYPE_CHECKING:
    from psicbatch.engines.spec import EngineSpec
    from psicbatch.run.runner import RunSummary
    from psicbatch.run.watch import WatchOptions, WatchStatus

EXIT_IMAGES_FAILED = 3
WATCH_OUT = "results"  # --watch's default --out: a folder of parts


@click.command("run", short_help=SUMMARIES["run"])
@click.argument("sources", nargs=-1)
@engine_options
@click.option(
    "--list",
    "list_file",
    type=Location(path_type=Path, dir_okay=False),
    help="A text file with one image path per line.",
)
@click.option(
    "--layout",
    type=click.Choice([AUTO, *LAYOUTS]),
    help="SOURCES are dataset folders in this layout (as for train and eval; auto: the one "
    "each folder matches): only their images are inspected, not their masks.",
)
@split_option
@click.option(
    "--out",
    "-o",
    type=OutputPath(),
    default="results.parquet",
    show_default=True,
    help="The results file (with --watch: a folder of parts, default results/).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an earlier psicbatch results file at --out."
)
@click.option(
    "--batch-size",
    type=AutoOr(AT_LEAST_ONE),
    default="auto",
    show_default=True,
    help=f"Images per batch. auto: {DEFAULT_BATCH_SIZE} on a GPU; on a CPU as many as make "
    "512x512's pixels (1 at 512x512 and above), at most 8.",
)
@click.option(
    "--workers",
    type=AT_LEAST_ONE,
    default=1,
    show_default=True,
    help="Worker processes: on the CPU (its threads are divided between them), or per GPU.",
)
@device_option(several=True)
@click.option(
    "--decoder",
    type=click.Choice(DECODERS),
    default="auto",
    show_default=True,
    help="auto: DALI on a GPU when installed, else PIL.",
)
@decision_options
@click.option(
    "--roi",
    type=Location(path_type=Path, dir_okay=False, exists=True),
    help="Region of interest: a grayscale image, white where to inspect; defects outside it "
    "are removed from masks, areas and the area rule (default: the region the decisions "
    "were calibrated inside, if any; another is refused).",
)
@click.option(
    "--masks",
    type=click.Choice(MASK_MODES),
    default="gated",
    show_default=True,
    help="gated: a mask only for images judged defective (others get an empty one); "
    "all: every image's thresholded mask.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run into the same --out.")
@click.option(
    "--batch-timeout",
    type=POSITIVE,
    default=DEFAULT_BATCH_TIMEOUT,
    show_default=True,
    help="Seconds a worker may go without progress (a batch decoded, an engine call, a "
    "batch's masks or rows) before it is declared hung.",
)
@click.option(
    "--max-file-size",
    default=DEFAULT_MAX_MIB,
    show_default=True,
    type=POSITIVE,
    help="MiB; larger files get an error row instead of being read.",
)
@click.option(
    "--decode-timeout",
    type=POSITIVE,
    default=DEFAULT_DECODE_SECONDS,
    show_default=True,
    help="Seconds one file may take to read and decode before it gets an error row.",
)
@click.option(
    "--flush-every",
    type=AT_LEAST_ONE,
    default=1024,
    show_default=True,
    help="Rows per row group; results are saved at least this often (and every 10 s).",
)
@click.option(
    "--allow-errors",
    is_flag=True,
    help=f"Exit 0 even when some images failed (otherwise {EXIT_IMAGES_FAILED}).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: Ray Data stages on a local or remote Ray cluster.",
)
@click.option("--address", help="Ray cluster address (default: start a local Ray).")
@click.option(
    "--watch",
    type=Location(path_type=Path, file_okay=False),
    help="Inspect files as they are written into this folder, until stopped (SIGINT/"
    "SIGTERM); --out is then a folder of Parquet parts by date and hour.",
)
@click.option(
    "--settle",
    type=POSITIVE,
    default=2.0,
    show_default=True,
    help="With --watch: a file is complete when unchanged for this many seconds.",
)
@click.option(
    "--marker",
    help="With --watch: a file is complete when a file of its name plus this suffix "
    "exists (e.g. .done), instead of --settle.",
)
@click.option(
    "--group-by",
    metavar="REGEX",
    help="With --watch: decide parts as their images come, a part's images being those "
    "whose paths share this pattern's match (its first group, if it has one); each "
    "decision is a line of OUT/_parts.csv.",
)
@click.option(
    "--part-images",
    type=AT_LEAST_ONE,
    metavar="N",
    help="With --group-by: a part has N images; it is decided once N are inspected (or one "
    "is judged defective), and incomplete if its images stop coming before.",
)
@click.option(
    "--part-timeout",
    type=POSITIVE,
    default=DEFAULT_PART_TIMEOUT,
    show_default=True,
    help="With --group-by: seconds after a part's last image before it is decided on the "
    "images it has.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def run_command(
    sources: tuple[str, ...],
    list_file: Path | None,
    layout: str | None,
    split: str,
    out: Path,
    overwrite: bool,
    engine: Path | None,
    model: Path | None,
    precision: str,
    batch_size: int | None,
    workers: int,
    devices: tuple[str, ...],
    decoder: str,
    threshold: float | None,
    decisions_file: Path | None,
    roi: Path | None,
    masks: str,
    resume: bool,
    batch_timeout: float,
    max_file_size: float,
    decode_timeout: float,
    flush_every: int,
    allow_errors: bool,
    executor: str,
    address: str | None,
    watch: Path | None,
    settle: float,
    marker: str | None,
    group_by: str | None,
    part_images: int | None,
    part_timeout: float,
    quiet: bool,
) -> None:
    """Inspect images: defect probability and RLE mask per image, written to Parquet.

    SOURCES are folders (searched recursively), image files or glob patterns.
    """
    if engine and model:
        raise click.BadParameter("give --engine or --model, not both")
    parts = _watch_parts(watch, group_by, part_images, part_timeout)
    decisions = chosen_decisions(decisions_file, engine, threshold, roi)
    if watch is not None:
        if sources or list_file or layout or resume or executor != "local" or workers > 1:
            raise click.BadParameter(
                "--watch takes no SOURCES, --list, --layout, --resume, --executor or --workers"
            )
        if click.get_current_context().get_parameter_source("out") == ParameterSource.DEFAULT:
            out = Path(WATCH_OUT)
    if split != WHOLE and layout is None:
        raise click.BadParameter(
            "picks a part of dataset folders: give --layout", param_hint="--split"
        )
    inputs = collect_inputs(list(sources), list_file, layout, split) if watch is None else None
    from psicbatch.engines.spec import EngineSpec  # torch: after what the command line says
    from psicbatch.run.batch_choice import chosen_batch_size
    from psicbatch.run.runner import worker_devices
    from psicbatch.run.watch import WatchOptions

    spec = EngineSpec(
        engine_dir=engine,
        checkpoint=None if engine else model or demo_model_path(),
        precision=precision,
    )
    options = RunOptions(
        out=out,
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        workers=workers,
        devices=devices,
        decoder=decoder,
        threshold=decisions.threshold,
        rule=decisions.rule,
        decisions=decisions.record,
        roi=decisions.roi,
        masks=masks,
        resume=resume,
        overwrite=overwrite,
        sources=tuple(
            resolved_sources([str(watch)] if watch else sources, list_file, layout, split)
        ),
        list_file=list_file,
        part_rows=flush_every,
        batch_timeout=batch_timeout,
        limits=FileLimits(int(max_file_size * MIB), decode_timeout),
    )
    batch_said = str(options.batch_size)
    if batch_size is None:
        batch_size, why = chosen_batch_size(spec, worker_devices(options)[0])
        options = replace(options, batch_size=batch_size)
        batch_said = f"{batch_size} (auto: {why})"
    console = Console(stderr=True)
    if watch is not None:
        _watch(spec, options, WatchOptions(watch, settle, marker, parts=parts), console, quiet)
        return
    assert inputs is not None
    paths = inputs.paths
    for note in (inputs.unreadable_note(), inputs.skipped_note(), inputs.mask_note()):
        if note and not quiet:
            say(console, f"note: {note}")
    summary = _inspect(paths, spec, options, _executor(executor, address), console, quiet)
    if not quiet:
        _print_summary(console, summary, out, batch_said)
    if summary.errors and not allow_errors:
        sys.exit(EXIT_IMAGES_FAILED)


def _watch_parts(
    watch: Path | None, group_by: str | None, part_images: int | None, part_timeout: float
) -> WatchParts | None:
    """How a watch decides parts, where ``--group-by`` asks it to; refused without a watch
    (a finished run's parts: ``report --parts-csv``)."""
    if group_by is None:
        given = click.get_current_context().get_parameter_source("part_timeout")
        need_group_by(part_images, group_by, given != ParameterSource.DEFAULT)
        return None
    if watch is None:
        raise click.BadParameter(
            "--group-by decides parts as a --watch inspects them; a run's parts are counted "
            "by report RESULTS --parts-csv PARTS.csv --group-by REGEX"
        )
    compiled_pattern(group_by)  # a pattern that is none is refused before the engine opens
    return WatchParts(PartGrouping(group_by, part_images), part_timeout)


def _inspect(
    paths: list[Path],
    spec: EngineSpec,
    options: RunOptions,
    executor: Callable | None,
    console: Console,
    quiet: bool,
) -> RunSummary:
    """The run under a progress bar, shown from the first report on: once the output and
    the engine are checked, so an error in either is the only line printed."""
    from psicbatch.run.runner import run

    progress = progress_bar(quiet, console)
    task = progress.add_task("inspecting", total=len(paths), status="")
    started = time.monotonic()
    shown = 0.0

    def update(summary: RunSummary, final: bool = False) -> None:
        nonlocal shown
        if threading.current_thread() is threading.main_thread():
            # No-op once started. A worker's thread telling of tiles (one local worker)
            # must not start the bar again once the run has stopped it.
            progress.start()
        rate = summary.images / max(time.monotonic() - started, 1e-9)
        status = run_status(summary, rate, final)
        # Tiled batches move the bar as their tiles are inferred, so that its estimate of
        # the time left holds; it never moves back while a batch's rows are being made.
        shown = max(shown, images_done(summary))
        progress.update(task, completed=shown, status=status)

    try:  # the command line turns SIGINT and SIGTERM into Stopped (``signals_stop``)
        summary = run(paths, spec, options, update, executor)
        update(summary, final=True)
    except (Stopped, KeyboardInterrupt) as stop:
        progress.stop()
        _stopped(console, stop, options.out)
    finally:
        progress.stop()
    return summary


def images_done(summary: RunSummary) -> float:
    """Images done, with the share of the tiled batches under way that was inferred."""
    return summary.skipped + summary.images + (summary.tiles.images if summary.tiles else 0)


def run_status(summary: RunSummary, rate: float, final: bool = False) -> str:
    """The progress line's words: the rate and counts, or what the run waits for before
    its first rows, and how far the tiled batches under way are (such a batch of large
    images can take minutes on a CPU)."""
    shown_rate = f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"  # tiled: 0.083, not 0.1
    status = f"{shown_rate} img/s  defects {summary.defects}  errors {summary.errors}"
    if final:
        return status
    if not summary.images:
        status = "first batch" if summary.engines_open else "opening the engine"
        status = status if summary.output_open else "opening the results"
        status = status if summary.model_silent is None else "reading the model"
    if summary.tiles is not None:
        status += f"  tiles inferred {summary.tiles.inferred}/{summary.tiles.total}"
    if summary.assembled is not None:
        status += "  writing the results file: parts in {}/{}".format(*summary.assembled)
    if summary.out_silent is not None:
        status += f"  the results folder has not answered for {summary.out_silent:.0f} s"
    if summary.model_silent is not None:
        status += f"  its folder has not answered for {summary.model_silent:.0f} s"
    return status


def _watch(
    spec: EngineSpec, options: RunOptions, watching: WatchOptions, console: Console, quiet: bool
) -> None:
    """Inspect until stopped, with a status line; a signal ends it normally (exit 0)."""
    from psicbatch.run.watch import WatchStatus, watch

    if watching.parts is None and (options.out / PART_OPTIONS_FILE).exists() and not quiet:
        say(  # its parts would wait, undecided, for a watch that decides them
            console,
            f"note: {readable_path(options.out)} holds part decisions ({PART_OPTIONS_FILE}); "
            "this watch, without --group-by, decides none",
        )
    with console.status("starting", spinner="dots") as line:
        noted: set[str] = set()
        said = 0  # of the watch's notes
        showing = threading.Lock()  # the worker's thread shows a tiled batch's progress

        def show(status: WatchStatus) -> None:
            nonlocal said
            if quiet:
                return
            with showing:
                for folder in sorted(status.folder_notes.keys() - noted):
                    noted.add(folder)
                    say(console, f"note: {readable_path(folder)} {status.folder_notes[folder]}")
                for note in status.notes[said:]:
                    say(console, f"note: {note}")
                said = len(status.notes)
                line.update(escape(f"watching {readable_path(watching.folder)}: {status.line()}"))

        status = WatchStatus()
        try:
            watch(spec, options, watching, show, status)
        except (Stopped, KeyboardInterrupt) as stop:
            reason = stop if isinstance(stop, Stopped) else Stopped(signal.SIGINT)
            if not quiet:
                saved_in = readable_path(options.out)
                console.print(f"stopped by {reason}; results in {saved_in}", markup=False)
    if not quiet:
        console.print(status.line(), markup=False, highlight=False)
    exit_at_once(0)  # every part is written whole: stop within the second asked of it


def _stopped(console: Console, stop: BaseException, out: Path) -> None:
    """One line and the signal's exit code (130 for Ctrl-C, 143 for SIGTERM)."""
    stop = stop if isinstance(stop, Stopped) else Stopped(signal.SIGINT)
    parts = parts_directory(out)
    try:
        kept = call_limited(parts.is_dir, RELEASE_SECONDS)
    except TimeLimitExceeded:
        kept = None
    if kept is None:  # the results folder stopped answering: the writes there wait
        saved = (
            f"{readable_path(parts)} does not answer (a network share that stopped "
            "answering?); the results saved there before stay for --resume, which computes "
            "the others again"
        )
    elif kept:
        saved = f"the results computed so far are in {readable_path(parts)}; continue with --resume"
    else:
        saved = "no results had been computed yet"
    say(console, f"stopped by {stop}: {saved}")
    sys.exit(stop.exit_code)


def _executor(name: str, address: str | None) -> Callable | None:
    if name == "local":
        return None
    from psicbatch.run.ray_executor import ray_results

    return partial(ray_results, address=address)


def _stages(summary: RunSummary) -> str:
    if not summary.images or not summary.stage_seconds:
        return "-"
    parts = [
        f"{stage} {1000 * seconds / summary.images:.1f} ms"
        for stage, seconds in summary.stage_seconds.items()
    ]
    return ", ".join(parts) + " (decoding, inference and post-processing overlap)"


def _latencies(summary: RunSummary) -> str:
    if not summary.latencies:
        return "-"
    p50, p95, p99 = np.percentile(summary.latencies, [50, 95, 99]) * 1000
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"


def _steady(summary: RunSummary) -> str:
    """The line's own rate, once the engine is open and the pipeline full: what a long
    run reaches (start-up is paid once per run)."""
    from psicbatch.run.runner import STEADY_BATCHES

    if not summary.steady_measured:
        return f"no rate after start-up: fewer than {STEADY_BATCHES} batches after the first"
    return f"{summary.steady_throughput:.2f} images/s after the first batch"


def _cpus_row() -> list[tuple[str, str]]:
    """The CPUs the run kept busy, where fewer than the machine's (a CPU set, a container's
    quota): what a slower rate than on the bare machine may come from."""
    line = fewer_cpus_line()
    return [("cpus", line)] if line is not None else []


def _print_summary(
    console: Console, summary: RunSummary, out: Path, batch: str | None = None
) -> None:
    table = Table(title="psicbatch run", show_header=False)
    rate = summary.images / summary.seconds if summary.seconds else 0.0
    for key, value in (
        ("images processed", summary.images),
        ("skipped (already done)", summary.skipped),
        ("recomputed (file changed since the interrupted run)", summary.recomputed),
        ("defective", summary.defects),
        ("errors", summary.errors),
        (
            "time",
            f"{summary.seconds:.1f} s including start-up, {rate:.2f} images/s; "
            f"{_steady(summary)} ({summary.decoder} decoder)",
        ),
        ("engine", summary.engine),
        *([("batch", batch)] if batch else []),
        *_cpus_row(),
        *_contention_row(summary),
        ("stage time per image", _stages(summary)),
        ("latency per image (decoding to row)", _latencies(summary)),
        ("files no longer among the inputs (rows dropped)", summary.dropped),
        ("results", readable_path(out)),
    ):
        table.add_row(key, escape(str(value)))  # paths may hold [brackets]
    console.print(table)
    for path, message in summary.error_examples[:10]:
        say(console, f"error {path}: {message}")


def _contention_row(summary: RunSummary) -> list[tuple[str, str]]:
    """A row where other processes or the hypervisor took a notable share of the CPUs:
    the run's rate then says less about the engine than about the machine's load."""
    if not summary.contention or not summary.contention["notable"]:
        return []
    return [("CPU contention", contention_line(summary.contention, "the run", "its rate is"))]
