"""Commands that compile checkpoints into engines and list them."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from psicbatch.commands.options import (
    AT_LEAST_ONE,
    NON_NEGATIVE_INT,
    POSITIVE,
    PROBABILITY,
    SizeType,
)
from psicbatch.engines import list_engines
from psicbatch.engines.build import BACKENDS, BuildOptions, build_engine
from psicbatch.engines.image_sets import PARITY_COUNT
from psicbatch.engines.parity import MIN_MASK_IOU
from psicbatch.engines.tuning import TUNE_SECONDS
from psicbatch.model import MIN_NETWORK_SIZE
from psicbatch.precision import CHOICES


@click.command("build-engine")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto: TensorRT with a GPU; on CPUs OpenVINO int8 when --calib is given and "
    "parity holds, else torch bf16.",
)
@click.option(
    "--precision",
    type=click.Choice(CHOICES),
    default="auto",
    show_default=True,
    help="auto: fp16 on GPUs; on CPUs int8 or bf16 (see --backend); fp32 for ONNX Runtime.",
)
@click.option(
    "--input-size",
    type=SizeType(minimum=MIN_NETWORK_SIZE),
    default=None,
    help="Preferred input size (default: the checkpoint's), rounded up to x8.",
)
@click.option(
    "--fixed-size",
    is_flag=True,
    help="Accept only --input-size (default: 8x8 up to twice it, in multiples of 8).",
)
@click.option(
    "--max-batch", type=AT_LEAST_ONE, default=16, show_default=True, help="Largest batch accepted."
)
@click.option(
    "--calib",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Representative images for int8 calibration; every 4th is held out for the "
    "parity check unless --parity-images is given.",
)
@click.option(
    "--parity-images",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Images to compare the engine with fp32 on, none of them in --calib "
    "(default: held out of --calib, else synthetic images).",
)
@click.option(
    "--parity-count",
    type=AT_LEAST_ONE,
    default=PARITY_COUNT,
    show_default=True,
    help="At most this many parity images, spread over the folder.",
)
@click.option(
    "--threads",
    type=NON_NEGATIVE_INT,
    default=0,
    show_default=True,
    help="ONNX Runtime / OpenVINO threads (0: one per core).",
)
@click.option(
    "--compile",
    "compile_model",
    is_flag=True,
    help="torch backend: torch.compile the model when loaded.",
)
@click.option(
    "--workspace-gb", type=POSITIVE, default=4.0, show_default=True, help="TensorRT workspace."
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="TensorRT timing cache folder, reused across builds (default: next to the engine).",
)
@click.option(
    "--min-mask-iou",
    type=PROBABILITY,
    default=MIN_MASK_IOU,
    show_default=True,
    help="Parity: least mean mask IoU against the fp32 model.",
)
@click.option(
    "--no-parity-check",
    is_flag=True,
    help="Keep the engine even when it disagrees with the fp32 model.",
)
@click.option(
    "--tune/--no-tune",
    default=True,
    show_default=True,
    help="With --backend auto --precision auto on a CPU: build and time every candidate "
    "installed here and keep the fastest that keeps parity (--no-tune: a rule of thumb).",
)
@click.option(
    "--tune-seconds",
    type=POSITIVE,
    default=TUNE_SECONDS,
    show_default=True,
    help="Time budget for building and timing the candidates.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Engine folder (default: engines/<model>-<backend>-<precision>-<HxW>).",
)
def build_engine_command(
    checkpoint: Path,
    backend: str,
    precision: str,
    input_size: tuple[int, int] | None,
    fixed_size: bool,
    max_batch: int,
    calib: Path | None,
    parity_images: Path | None,
    parity_count: int,
    threads: int,
    compile_model: bool,
    workspace_gb: float,
    cache_dir: Path | None,
    min_mask_iou: float,
    no_parity_check: bool,
    tune: bool,
    tune_seconds: float,
    out: Path | None,
) -> None:
    """Compile a checkpoint into an engine folder (engine file + manifest.json)."""
    options = BuildOptions(
        backend=backend,
        precision=precision,
        input_size=input_size,
        max_batch=max_batch,
        calib=calib,
        parity_images=parity_images,
        parity_count=parity_count,
        out=out,
        dynamic_size=not fixed_size,
        threads=threads,
        compile=compile_model,
        workspace_gb=workspace_gb,
        cache_dir=cache_dir,
        check_parity=not no_parity_check,
        min_mask_iou=min_mask_iou,
        tune=tune,
        tune_seconds=tune_seconds,
    )
    directory, manifest = build_engine(checkpoint, options)
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


@click.command("engines")
@click.argument("root", type=click.Path(path_type=Path, file_okay=False), default="engines")
def engines_command(root: Path) -> None:
    """List the engines built under ROOT (default: engines/)."""
    table = Table(title=f"engines under {root}")
    for column in ("folder", "backend", "precision", "input", "batch", "parity IoU", "built for"):
        table.add_column(column)
    for directory, manifest in list_engines(root) if root.is_dir() else []:
        if isinstance(manifest, str):
            table.add_row(str(directory), "[red]unreadable", manifest, "", "", "", "")
            continue
        details = manifest.backend_details
        target = details.get("gpu_name") or details.get("device", "cpu")
        table.add_row(
            str(directory),
            manifest.backend,
            manifest.precision,
            f"{manifest.input_size[0]}x{manifest.input_size[1]}",
            f"{manifest.min_batch}..{manifest.max_batch}",
            f"{manifest.parity.get('mask_iou_mean', float('nan')):.3f}",
            str(target),
        )
    Console(width=160).print(table)
