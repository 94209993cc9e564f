"""``psicbatch bench``: latency and throughput against the industrial per-image target."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from psicbatch.assets import demo_model_path
from psicbatch.bench.plots import plot_benchmark
from psicbatch.bench.report import BenchReport, compare_reports
from psicbatch.commands import SUMMARIES, command_line
from psicbatch.commands.options import (
    NETWORK_SIZE,
    POSITIVE,
    Bounded,
    Location,
    OutputPath,
    device_option,
    engine_options,
)
from psicbatch.contention import contention_line
from psicbatch.devices import resolve_device
from psicbatch.output_lock import OutputLock
from psicbatch.reports import write_json
from psicbatch.run.output_guard import check_output_folder
from psicbatch.run.shutdown import raise_if_stopped

# The image sizes of the datasets the paper measures on (KolektorSDD, KolektorSDD2, DAGM).
SIZE_PRESETS = {"ksdd": (1408, 512), "ksdd2": (640, 232), "dagm": (512, 512)}


class BenchSizes(click.ParamType):
    """``--sizes``: comma-separated presets or HxW sizes, checked when the command line is
    read, each kept with the name it was given by."""

    name = "sizes"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[tuple[str, tuple[int, int]], ...]:
        if isinstance(value, tuple):
            return value
        sizes = []
        for part in (part.strip().lower() for part in str(value).split(",")):
            if part in SIZE_PRESETS:
                sizes.append((part, SIZE_PRESETS[part]))
            elif re.fullmatch(r"\d+x\d+", part):
                sizes.append((part, NETWORK_SIZE.convert(part, param, ctx)))
            else:
                presets = ", ".join(SIZE_PRESETS)
                self.fail(
                    f"{part!r} is neither a preset ({presets}) nor a size like 1408x512", param, ctx
                )
        return tuple(sizes)


DEFAULT_BATCHES = {"cpu": "1,4", "cuda": "1,8,32"}  # a GPU needs larger batches to fill


def _batches(value: str, device: str) -> tuple[int, ...]:
    if value == "sweep":
        from psicbatch.bench.benchmark import sweep_batches

        return sweep_batches(resolve_device(device))
    if value == "auto":
        value = DEFAULT_BATCHES["cuda" if device.startswith("cuda") else "cpu"]
    try:
        batches = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected batch sizes like 1,4,16") from None
    if any(b < 1 for b in batches):
        raise click.BadParameter("batch sizes must be at least 1")
    return batches


@click.command("bench", short_help=SUMMARIES["bench"])
@engine_options
@click.option(
    "--width",
    type=Bounded(float, 0, 4, low_open=True),
    help="Benchmark an untrained PSIC-Net of this width "
    "(1 = the paper's network); cost is what matters.",
)
@click.option(
    "--sizes",
    type=BenchSizes(),
    default="dagm",
    show_default=True,
    help="Comma-separated presets ("
    + ", ".join(f"{name}={height}x{width}" for name, (height, width) in SIZE_PRESETS.items())
    + ") or HxW.",
)
@click.option(
    "--batch",
    "batches",
    default="auto",
    show_default=True,
    help="Comma-separated batch sizes (auto: 1,4 on a CPU, 1,8,32 on a GPU), or sweep: "
    "1, 2, 4, ... until memory runs out or images/s levels off (at most 1024 on a GPU, 32 "
    "on a CPU).",
)
@click.option(
    "--images",
    type=Location(path_type=Path, file_okay=False),
    help="Real images for the baseline (default: synthetic).",
)
@click.option(
    "--duration",
    type=POSITIVE,
    default=20.0,
    show_default=True,
    help="Longest measurement per configuration, in seconds.",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also time the research-code way (PIL, fp32 eager, batch 1).",
)
@click.option(
    "--end-to-end/--no-end-to-end",
    default=True,
    show_default=True,
    help="Also time the whole run path (decode, masks, Parquet) at each size.",
)
@click.option(
    "--host-ceiling/--no-host-ceiling",
    default=True,
    show_default=True,
    help="Also run the whole run path with a null engine and decoding excluded: what the "
    "host side can feed, for clean, defective and noisy outputs.",
)
@device_option()
@click.option(
    "--compare",
    nargs=2,
    type=Location(path_type=Path, dir_okay=False, exists=True),
    help="Show two bench.json reports side by side instead of measuring.",
)
@click.option(
    "--out",
    "-o",
    type=OutputPath(file_okay=False),
    default="bench",
    show_default=True,
)
def bench_command(
    engine: Path | None,
    model: Path | None,
    width: float | None,
    precision: str,
    sizes: tuple[tuple[str, tuple[int, int]], ...],
    batches: str,
    images: Path | None,
    duration: float,
    baseline: bool,
    end_to_end: bool,
    host_ceiling: bool,
    device: str,
    compare: tuple[Path, Path] | None,
    out: Path,
) -> None:
    """Measure latency and throughput per image size and batch, with the machine's ceiling."""
    from psicbatch.bench.benchmark import BenchPlan, random_checkpoint, run_benchmark
    from psicbatch.bench.markdown import SIZE_COLUMNS, markdown

    if compare:
        _print_comparison(*compare)
        return
    if sum(x is not None for x in (engine, model, width)) > 1:
        raise click.BadParameter("give at most one of --engine, --model, --width")
    check_output_folder(out, "bench.json", "benchmark")
    plan = BenchPlan(
        sizes,
        _batches(batches, device),
        duration,
        baseline and not engine,
        images,
        end_to_end,
        host_ceiling,
        threshold=1.0 if width else None,
        sweep=batches == "sweep",
    )
    console = Console(stderr=True)

    def say(step: str) -> None:
        raise_if_stopped()  # a stop that the code it interrupted swallowed
        console.print(f"  {step}", markup=False)

    with OutputLock(out, "bench"), tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if engine is None:
            checkpoint = (
                random_checkpoint(width, Path(folder)) if width else model or demo_model_path()
            )
        report = run_benchmark(
            plan,
            checkpoint,
            engine,
            precision,
            device,
            progress=say,
        )
        out.mkdir(parents=True, exist_ok=True)
        report.command = command_line()
        write_json(out / "bench.json", report.to_dict())
        (out / "bench.md").write_text(markdown(report))
        plot_benchmark(report, out)
    table = Table(title=f"psicbatch bench ({report.ceiling['gflops']:.0f} GFLOP/s ceiling)")
    for column in SIZE_COLUMNS:
        table.add_column(column.header)
    for row in report.summary:
        table.add_row(*(str(column.cell(row)) for column in SIZE_COLUMNS))
    Console().print(table)
    if report.contention and report.contention["notable"]:
        click.echo(f"note: {contention_line(report.contention)}", err=True)
    click.echo(f"reports written to {out}/ (bench.json, bench.md, bench_*.png)")


def _print_comparison(first: Path, second: Path) -> None:
    reports = [BenchReport.read(path) for path in (first, second)]
    table = Table(title=f"{first} vs {second}")
    for column in (
        "size",
        f"images/s {first.parent.name or first.name}",
        f"images/s {second.parent.name or second.name}",
        "ratio",
        "s/image (first)",
        "s/image (second)",
    ):
        table.add_column(column)
    for row in compare_reports(*reports):
        table.add_row(
            row.size,
            f"{row.images_per_s[0]:.3f}",
            f"{row.images_per_s[1]:.3f}",
            f"{row.ratio:.2f}x",
            f"{row.latency_s[0]:.3f}",
            f"{row.latency_s[1]:.3f}",
        )
    for index, report in enumerate(reports, start=1):
        m = report.machine
        table.caption = (table.caption or "") + f"{index}: {m['cpu']}, GPU {m['gpu']}  "
    Console().print(table)
