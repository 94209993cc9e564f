"""Commands that make data, train models and measure them: synth, train, eval, cv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from psicbatch.checkpoint import load_checkpoint
from psicbatch.commands.options import (
    SIZE,
    command_line,
    dataset_options,
    load_dataset,
    train_options_from,
    training_options,
)
from psicbatch.crossval import cross_validate
from psicbatch.data.memory import load_into_memory
from psicbatch.data.synth import generate
from psicbatch.evaluate import evaluate
from psicbatch.progress import progress_bar
from psicbatch.reports import evaluation_markdown, write_evaluation_report
from psicbatch.train import Trainer

console = Console(stderr=True)


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--count", default=200, show_default=True, help="Number of images.")
@click.option("--size", type=SIZE, default="128x128", show_default=True)
@click.option("--defect-rate", default=0.3, show_default=True, help="Share of defective images.")
@click.option("--seed", default=0, show_default=True)
def synth(out: Path, count: int, size: tuple[int, int], defect_rate: float, seed: int) -> None:
    """Generate a DAGM-like synthetic dataset (folder layout) with exact defect masks."""
    if count < 1 or not 0 <= defect_rate <= 1:
        raise click.BadParameter("need --count >= 1 and 0 <= --defect-rate <= 1")
    generate(out, count, size, defect_rate, seed)
    click.echo(f"wrote {count} images to {out}; next: psicbatch train {out} --out model.pt")


@click.command()
@dataset_options
@training_options
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Checkpoint to write (progress is kept in OUT.partial).")  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue an interrupted training from OUT.partial.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(
    data: Path, layout: str, channels: str, out: Path, resume: bool, quiet: bool, **kwargs: Any
) -> None:
    """Train PSIC-Net on a labelled dataset (two-step mode by default)."""
    options = train_options_from(kwargs)
    samples, channel_count = load_dataset(data, layout, channels)
    dataset = {"path": str(data), "layout": layout, "images": len(samples),
               "command": command_line()}  # fmt: skip
    with progress_bar(quiet, console) as progress:
        tensors = load_into_memory(samples, options.input_size, channel_count, progress)
        checkpoint = Trainer(tensors, options, out, progress, {"dataset": dataset}).run(resume)
    click.echo(
        f"wrote {out} (thresholds: image {checkpoint.thresholds.classification:.3f}, "
        f"pixel {checkpoint.thresholds.segmentation:.3f}); "
        f"next: psicbatch eval {out} TEST_DATA --layout {layout}"
    )


@click.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@dataset_options
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False),
              default="evaluation", show_default=True, help="Report folder.")  # fmt: skip
@click.option("--batch-size", default=8, show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto")
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def evaluate_command(
    checkpoint: Path,
    data: Path,
    layout: str,
    channels: str,
    out: Path,
    batch_size: int,
    precision: str,
    device: str,
    quiet: bool,
) -> None:
    """Score a checkpoint on labelled images: mask/boundary IoU, AUC, AP, accuracy."""
    loaded = load_checkpoint(checkpoint)
    samples, _ = load_dataset(data, layout, channels)
    channel_count = loaded.model_config.in_channels
    with progress_bar(quiet, console) as progress:
        tensors = load_into_memory(
            samples, loaded.preprocessing.input_size, channel_count, progress
        )
        result = evaluate(loaded, samples, tensors, batch_size, device, precision, progress)
    result.summary["checkpoint"] = str(checkpoint)
    result.summary["command"] = command_line()
    write_evaluation_report(out, result.rows, result.summary, f"Evaluation of {checkpoint}")
    click.echo(evaluation_markdown(result.summary, f"Evaluation of {checkpoint} on {data}"))
    click.echo(f"report written to {out}/ (report.md, metrics.json, predictions.parquet, curves)")


@click.command("cv")
@dataset_options
@training_options
@click.option("--folds", default=3, show_default=True, help="Number of folds.")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for fold models and the report; rerun to resume.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True)
def cross_validate_command(
    data: Path, layout: str, channels: str, folds: int, out: Path, quiet: bool, **kwargs: Any
) -> None:
    """k-fold cross-validation with grouped, stratified folds; reports in the paper's layout."""
    options = train_options_from(kwargs)
    samples, channel_count = load_dataset(data, layout, channels)
    dataset = {"path": str(data), "layout": layout, "channels": str(channel_count),
               "command": command_line()}  # fmt: skip
    with progress_bar(quiet, console) as progress:
        report = cross_validate(samples, options, folds, out, dataset, progress)
    click.echo((out / "report.md").read_text())
    click.echo(f"{len(report['folds'])} folds written to {out}/")
