"""Commands that create and inspect checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from psicbatch.commands import SUMMARIES
from psicbatch.commands.options import NETWORK_SIZE, Bounded, Location, OutputPath, split_option
from psicbatch.commands.training_options import layout_option
from psicbatch.run.output_guard import CHECKPOINT, check_output
from psicbatch.run.results import field_text
from psicbatch.summaries import summarize


@click.command(short_help=SUMMARIES["info"])
@click.argument(
    "paths",
    metavar="[CHECKPOINT|ENGINE|RESULTS|EVALUATION|DATA...]",
    type=Location(path_type=Path),
    nargs=-1,
)
@layout_option("a DATA folder")
@split_option
@click.option(
    "--group-by",
    metavar="REGEX",
    help="With a DATA folder: its cross-validation groups as cv --group-by makes them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead.")
def info(
    paths: tuple[Path, ...], layout: str, split: str, group_by: str | None, as_json: bool
) -> None:
    """Show a checkpoint (configuration, size, cost per image), an engine folder (backend,
    precision, shapes, parity, decisions), a run's results (counts, engine, settings), an
    eval or cv folder (headline metrics, engine, command), a decision file (threshold,
    rule, what it was chosen for and on, its region of interest) or a labelled dataset
    folder as training would read it (layout, counts, defective images without masks,
    defect types, cross-validation groups, identical images, the auto input size;
    several DATA folders as train reads them together).

    Without PATH, this machine: CPU instructions and what the torch engine does with them,
    GPUs, DALI and each engine backend (installed, loading, what it runs), and what
    build-engine and run choose here by default."""
    if not paths:
        from psicbatch.machine_summary import machine_summary

        title, summary = "psicbatch on this machine", machine_summary()
    else:
        kind, summary = summarize(paths, layout, group_by, split)
        title = f"psicbatch {kind} {' '.join(map(str, paths))}"
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=escape(title), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, escape(field_text(value)))  # names may hold [brackets]
    Console().print(table)


@click.command(short_help=SUMMARIES["init"])
@click.argument("output", type=OutputPath(dir_okay=False))
@click.option(
    "--width",
    type=Bounded(float, 0, 4, low_open=True),
    default=1.0,
    show_default=True,
    help="Channel width multiplier.",
)
@click.option("--in-channels", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option("--input-size", type=NETWORK_SIZE, default="512x512", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Random seed for the weights.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier psicbatch checkpoint.")
def init(
    output: Path,
    width: float,
    in_channels: str,
    input_size: tuple[int, int],
    seed: int,
    overwrite: bool,
) -> None:
    """Write an untrained (randomly initialised) checkpoint.

    Useful to measure speed and build engines before a model is trained; its predictions
    are meaningless.
    """
    from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint
    from psicbatch.model import ModelConfig, count_parameters

    check_output(output, replace(CHECKPOINT, option="OUTPUT"), overwrite=overwrite)
    try:
        config = ModelConfig(width=width, in_channels=int(in_channels))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    checkpoint = untrained_checkpoint(config, input_size, seed)
    save_checkpoint(checkpoint, output)
    parameters = count_parameters(checkpoint.build_model())
    click.echo(
        f"wrote {output} ({parameters:,} parameters, untrained); next: psicbatch info {output}"
    )
