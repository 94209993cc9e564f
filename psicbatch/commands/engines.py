"""Commands that compile checkpoints into engines and list them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from psicbatch.commands import SUMMARIES
from psicbatch.commands.options import (
    AT_LEAST_ONE,
    NON_NEGATIVE_INT,
    POSITIVE,
    PROBABILITY,
    CheckpointFile,
    Location,
    OutputPath,
    SizeType,
    device_option,
    precision_option,
)
from psicbatch.engines.build_options import BACKENDS, SYNTHETIC, BuildOptions
from psicbatch.engines.manifest import list_engines
from psicbatch.network_size import MIN_NETWORK_SIZE
from psicbatch.paths import readable_path
from psicbatch.run.shutdown import raise_if_stopped


@click.command("build-engine", short_help=SUMMARIES["build-engine"])
@click.argument("checkpoint", type=CheckpointFile())
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=BuildOptions.backend,
    show_default=True,
    help="auto: TensorRT with a GPU; on a CPU the fastest engine measured here (see --tune).",
)
@precision_option("engine")
@click.option(
    "--input-size",
    type=SizeType(minimum=MIN_NETWORK_SIZE),
    default=BuildOptions.input_size,
    help="Preferred input size (default: the checkpoint's), rounded up to x8.",
)
@click.option(
    "--dynamic-size/--fixed-size",
    default=BuildOptions.dynamic_size,
    show_default=True,
    help="--fixed-size: accept only --input-size (dynamic: 8x8 up to twice it, in multiples of 8).",
)
@click.option(
    "--max-batch",
    type=AT_LEAST_ONE,
    default=BuildOptions.max_batch,
    show_default=True,
    help="Largest batch accepted.",
)
@click.option(
    "--calib",
    type=Location(path_type=Path, file_okay=False),
    default=BuildOptions.calib,
    help="Representative images for int8 calibration; every 4th is held out for the "
    "parity check unless --parity-images is given.",
)
@click.option(
    "--parity-images",
    type=Location(path_type=Path, file_okay=False),
    default=BuildOptions.parity_images,
    help="Images to compare the engine with fp32 on, none of them in --calib "
    "(default: held out of --calib, else synthetic images).",
)
@click.option(
    "--parity-count",
    type=AT_LEAST_ONE,
    default=BuildOptions.parity_count,
    show_default=True,
    help="At most this many parity images, spread over the folder.",
)
@click.option(
    "--threads",
    type=NON_NEGATIVE_INT,
    default=BuildOptions.threads,
    show_default=True,
    help="ONNX Runtime / OpenVINO threads (0: as many as torch runs where the engine "
    "runs: the CPUs psicbatch may use there, shared by a run's workers).",
)
@click.option("--compile", is_flag=True, help="torch backend: torch.compile the model when loaded.")
@click.option(
    "--workspace-gb",
    type=POSITIVE,
    default=BuildOptions.workspace_gb,
    show_default=True,
    help="TensorRT workspace.",
)
@click.option(
    "--cache-dir",
    type=Location(path_type=Path, file_okay=False),
    default=BuildOptions.cache_dir,
    help="TensorRT timing cache folder, reused across builds (default: next to the engine).",
)
@click.option(
    "--min-mask-iou",
    type=PROBABILITY,
    default=BuildOptions.min_mask_iou,
    show_default=True,
    help="Parity: least mean mask IoU against the fp32 model.",
)
@click.option(
    "--parity-check/--no-parity-check",
    "check_parity",
    default=BuildOptions.check_parity,
    show_default=True,
    help="--no-parity-check: keep the engine even when it disagrees with the fp32 model.",
)
@click.option(
    "--tune/--no-tune",
    default=BuildOptions.tune,
    show_default=True,
    help="With --backend auto --precision auto on a CPU: build and time every candidate "
    "installed here and keep the fastest that keeps parity (--no-tune: a rule of thumb).",
)
@click.option(
    "--tune-seconds",
    type=POSITIVE,
    default=BuildOptions.tune_seconds,
    show_default=True,
    help="Time budget for building and timing the candidates.",
)
@device_option()
@click.option(
    "-o",
    "--out",
    type=OutputPath(file_okay=False),
    default=BuildOptions.out,
    help="Engine folder (default: engines/<model>-<backend>-<precision>-<HxW>).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an earlier engine folder at --out (and the decisions set on it).",
)
def build_engine_command(checkpoint: Path, **values: Any) -> None:
    """Compile a checkpoint into an engine folder (engine file + manifest.json)."""
    from psicbatch.engines.build import build_engine

    options = BuildOptions(**values)
    steps = Console(stderr=True)
    started = time.monotonic()

    def say(step: str) -> None:
        raise_if_stopped()  # a stop that the code it interrupted swallowed
        status.update(escape(step))  # steps name files, whose names may hold [brackets]
        steps.print(f"[{time.monotonic() - started:6.1f} s] {step}", highlight=False, markup=False)

    with steps.status("building", spinner="dots") as status:
        directory, manifest = build_engine(checkpoint, options, say)
    engine_path = directory / manifest.engine_file
    parity = manifest.parity
    click.echo(
        f"built {manifest.backend} {manifest.precision} engine {engine_path} "
        f"({engine_path.stat().st_size / 2**20:.1f} MiB), input "
        f"{manifest.input_size[0]}x{manifest.input_size[1]} "
        f"(accepts {manifest.min_size[0]}x{manifest.min_size[1]}.."
        f"{manifest.max_size[0]}x{manifest.max_size[1]}), batch 1..{manifest.max_batch}"
    )
    for trial in manifest.tuning:
        seconds = trial["seconds_per_image"]
        timing = f"{1000 * seconds:9.1f} ms/image" if seconds else f"{'-':>17}"
        click.echo(f"  {trial['backend']:<12} {trial['precision']:<5} {timing}  {trial['outcome']}")
    click.echo(f"chose {manifest.backend} {manifest.precision}: {manifest.selection}")
    click.echo(parity_line(parity))
    if parity["source"] == SYNTHETIC and manifest.precision != "fp32":
        click.echo(  # reduced precision errs most on the images it was not checked on
            f"note: parity was measured on synthetic images; --parity-images DIR (held-out "
            f"images like the line's) measures the {manifest.precision} engine on what it "
            "will see",
            err=True,
        )
    click.echo(f"next: psicbatch run IMAGES --engine {directory} --out results.parquet")


def parity_line(parity: dict) -> str:
    defects = parity["mask_iou_mean_judged_defective"]
    defect_iou = "n/a" if defects is None else f"{defects:.3f}"
    return (
        f"parity vs fp32 on {parity['images']} images ({parity['source']}): max |dp| "
        f"{parity['max_abs_probability_diff']:.2g}, {parity['decision_flips']} decision flips, "
        f"mask IoU {parity['mask_iou_mean']:.3f} (min {parity['mask_iou_min']:.3f}), "
        f"{defect_iou} on the {parity['images_judged_defective']} judged defective"
    )


@click.command("engines", short_help=SUMMARIES["engines"])
@click.argument("root", type=Location(path_type=Path, file_okay=False), default="engines")
def engines_command(root: Path) -> None:
    """List the engines built under ROOT (default: engines/)."""
    found = list_engines(root) if root.is_dir() else []
    if not found:  # an empty table would say nothing of what to do
        click.echo(
            f"no engine folders under {readable_path(root)}; build one: psicbatch build-engine "
            "CHECKPOINT"
        )
        return
    table = Table(title=escape(f"engines under {root}"))  # names may hold [brackets]
    for column in ("folder", "backend", "precision", "input", "batch", "parity IoU", "built for"):
        table.add_column(column)
    for directory, manifest in found:
        if isinstance(manifest, str):
            table.add_row(escape(str(directory)), "[red]unreadable", escape(manifest), *[""] * 4)
            continue
        table.add_row(
            escape(str(directory)),
            manifest.backend,
            manifest.precision,
            f"{manifest.input_size[0]}x{manifest.input_size[1]}",
            f"{manifest.min_batch}..{manifest.max_batch}",
            f"{manifest.parity.get('mask_iou_mean', float('nan')):.3f}",
            manifest.built_for,
        )
    Console(width=160).print(table)
