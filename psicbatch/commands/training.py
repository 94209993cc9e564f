"""Commands that make data, train models and measure them: synth, train, eval, cv."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import Progress

from psicbatch.commands import STOP_NOTE_KEY, SUMMARIES, command_line
from psicbatch.commands.options import (
    AT_LEAST_ONE,
    NETWORK_SIZE,
    NON_NEGATIVE_INT,
    PROBABILITY,
    SIZE,
    Bounded,
    EngineFolder,
    Location,
    OutputPath,
    chosen_decisions,
    decision_options,
    device_option,
    precision_option,
    split_option,
)
from psicbatch.commands.training_options import (
    TrainingSetup,
    dataset_options,
    layout_option,
    training_options,
    training_setup,
    validation_set,
)
from psicbatch.data.combined import datasets_text, part_text
from psicbatch.data.layouts import LAYOUTS, SampleRef
from psicbatch.data.synth import generate
from psicbatch.engines.registry import NAMES
from psicbatch.errors import PsicbatchError
from psicbatch.fine_tuning import started_from
from psicbatch.fingerprints import ImageSet, copies_note
from psicbatch.output_lock import OutputLock
from psicbatch.progress import progress_bar, say
from psicbatch.reports import evaluation_markdown
from psicbatch.run.output_guard import CHECKPOINT, check_output, check_output_folder
from psicbatch.train_options import KEEPS, THRESHOLD_IMAGES, TrainOptions
from psicbatch.wording import counted

if TYPE_CHECKING:  # torch: imported by the commands that need it, when they run
    from psicbatch.data.memory import TensorDataset
    from psicbatch.evaluate import Evaluation

console = Console(stderr=True)


@click.command(short_help=SUMMARIES["synth"])
@click.argument("out", type=OutputPath(file_okay=False))
@click.option(
    "--count", type=AT_LEAST_ONE, default=200, show_default=True, help="Number of images."
)
@click.option("--size", type=SIZE, default="128x128", show_default=True)
@click.option(
    "--defect-rate",
    type=PROBABILITY,
    default=0.3,
    show_default=True,
    help="Share of defective images.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def synth(
    out: Path, count: int, size: tuple[int, int], defect_rate: float, seed: int, quiet: bool
) -> None:
    """Generate a DAGM-like synthetic dataset (folder layout) with exact defect masks."""
    check_output_folder(out, "synth.json", "synthetic dataset", "OUT")
    for earlier in [*out.glob("images/synth_*.png"), *out.glob("masks/synth_*.png")]:
        earlier.unlink()  # an earlier, larger set would leave images behind
    with progress_bar(quiet, console) as progress:
        generate(out, count, size, defect_rate, seed, progress)
    click.echo(
        f"wrote {counted(count, 'image')} to {out}; next: psicbatch train {out} --out model.pt"
    )


TILE_OVERLAP = 32  # pixels: the default where tiles are large enough


def tile_overlap(tile: tuple[int, int], asked: int | None) -> int:
    """The overlap asked for, or by default ``TILE_OVERLAP`` cut to below half the tile
    (a small tile would refuse the default); a one-line error for one not below half."""
    most = (min(tile) - 1) // 2
    if asked is None:
        return min(TILE_OVERLAP, most)
    if asked > most:
        raise click.BadParameter(
            f"{asked} is not below half the tile ({tile[0]}x{tile[1]}: at most {most})",
            param_hint="--overlap",
        )
    return asked


@click.command(short_help=SUMMARIES["train"])
@dataset_options
@training_options
@click.option(
    "--out",
    "-o",
    type=OutputPath(dir_okay=False),
    required=True,
    help="Checkpoint to write (progress is kept in OUT.partial).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted training from OUT.partial.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier psicbatch checkpoint at --out.")
@click.option(
    "--tile",
    type=NETWORK_SIZE,
    help="Train on tiles of this size (HxW) cut at native resolution instead of resizing "
    "whole images (it replaces --input-size); runs then tile every image the same way.",
)
@click.option(
    "--overlap",
    type=NON_NEGATIVE_INT,
    help=f"With --tile: pixels neighbouring tiles share at least, below half a tile "
    f"[default: {TILE_OVERLAP}, or less for tiles under {2 * TILE_OVERLAP + 2} pixels a side].",
)
@click.option(
    "--validation",
    type=Location(path_type=Path, exists=True, file_okay=False),
    help="Labelled images held out of training (read as DATA is): every epoch is scored "
    "on them, to see where more epochs stop helping (info OUT shows the scores by epoch).",
)
@click.option(
    "--keep",
    type=click.Choice(KEEPS),
    default=TrainOptions.keep,
    show_default=True,
    help="Which epoch's weights each phase ends with: the last (the paper's), or the one "
    "scoring best on the --validation images (step 1: lowest loss; step 2 and end to end: "
    "highest AP). Those images then chose the model: judge it on others.",
)
@click.option(
    "--thresholds-on",
    type=click.Choice(THRESHOLD_IMAGES),
    default=TrainOptions.thresholds_on,
    show_default=True,
    help="Choose the image and pixel thresholds on the training images, of which the "
    "network is surer than of new ones, or on the --validation images.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(
    data: tuple[Path, ...],
    layout: str,
    split: str,
    channels: str,
    out: Path,
    resume: bool,
    overwrite: bool,
    tile: tuple[int, int] | None,
    overlap: int | None,
    validation: Path | None,
    quiet: bool,
    **kwargs: Any,
) -> None:
    """Train PSIC-Net on a labelled dataset (two-step mode by default); several DATA
    folders train as one (a line's first images and those reviewed since)."""
    from psicbatch.train import Trainer
    from psicbatch.validation import best_epochs, kept_epochs_text

    if tile is not None:
        kwargs.update(input_size=tile, tile_overlap=tile_overlap(tile, overlap))
    check_output(out, CHECKPOINT, overwrite=overwrite)  # before hours of training, not after
    click.get_current_context().meta[STOP_NOTE_KEY] = lambda: _training_kept(out)
    setup = training_setup(data, layout, split, channels, kwargs)
    options, dataset = setup.options, setup.dataset
    options.check_validation(validated=validation is not None)
    held_out = validation_set(validation, layout, setup) if validation is not None else None
    _notes(setup, quiet)
    if held_out is not None and (note := held_out.note()) and not quiet:
        say(console, f"note: {note}")
    with OutputLock(out, "train"), progress_bar(quiet, console) as progress:
        tensors = _in_memory(setup, setup.samples, progress)
        images = ImageSet.of_digests(setup.digests)  # evaluations count them
        metadata = {"dataset": dataset, "image_digests": images.encode()}
        held_tensors = None
        if held_out is not None:
            held_tensors = _in_memory(setup, held_out.samples, progress)
            metadata["validation"] = held_out.record
        trainer = Trainer(tensors, options, out, progress, metadata, setup.start, held_tensors)
        checkpoint = trainer.run(resume)
    lines = best_epochs(checkpoint.training.get("validation_history", {}))
    if kept := kept_epochs_text(checkpoint.training):
        lines.append(kept)
    for line in lines:
        if not quiet:
            say(console, f"validation: {line}")
    layout = f" --layout {dataset['layout']}" if dataset["layout"] in LAYOUTS else ""
    test_data = f"{shlex.join(map(str, data))} --split test" if split == "train" else "TEST_DATA"
    chosen_on = ", on the validation images" if options.thresholds_on == "validation" else ""
    click.echo(
        f"wrote {out} (thresholds: image {checkpoint.thresholds.classification:.3f}, "
        f"pixel {checkpoint.thresholds.segmentation:.3f}{chosen_on}); "
        f"next: psicbatch eval {out} {test_data}{layout}"
    )


def _training_kept(out: Path) -> str:
    """What a training stopped by a signal keeps: its epochs so far, for --resume."""
    from psicbatch.train import partial_path

    partial = partial_path(out)
    if partial.is_file():
        return f"the epochs done are in {partial}; the same command with --resume continues"
    return "no epoch had finished, so nothing was kept"


def _in_memory(
    setup: TrainingSetup, samples: list[SampleRef], progress: Progress | None
) -> TensorDataset:
    """Images as training holds them: resized to the input size, or cut into its tiles."""
    from psicbatch.data.memory import load_into_memory, load_tiles

    options, bit_depth = setup.options, setup.dataset["bit_depth"]
    if options.tile_overlap is None:
        return load_into_memory(samples, options.input_size, setup.channels, progress, bit_depth)
    return load_tiles(
        samples, options.input_size, options.tile_overlap, setup.channels, progress, bit_depth
    )


@click.command("eval", short_help=SUMMARIES["eval"])
@click.argument("paths", nargs=-1, type=Location(path_type=Path))
@click.option(
    "--engine",
    type=EngineFolder("a checkpoint is scored as psicbatch eval {path} DATA"),
    help="Score a built engine folder instead of a checkpoint.",
)
@click.option(
    "--compare-to",
    type=Location(path_type=Path, dir_okay=False),
    help="Also score this checkpoint in fp32 and show the metric deltas.",
)
@layout_option()
@split_option
@click.option(
    "--out",
    "-o",
    type=OutputPath(file_okay=False),
    default="evaluation",
    show_default=True,
    help="Report folder.",
)
@click.option("--batch-size", type=AT_LEAST_ONE, default=8, show_default=True)
@precision_option("checkpoint", what="For a checkpoint: ")
@device_option()
@decision_options
@click.option(
    "--roi",
    type=Location(path_type=Path, dir_okay=False, exists=True),
    help="Score masks inside this region of interest only (white = inspect), as run --roi "
    "(default: the region the decisions were calibrated inside, if any; another is refused).",
)
@click.option(
    "--labels",
    type=Location(path_type=Path, file_okay=False, exists=True),
    help="Score a run's results (RESULTS: a results file or --watch folder) against this "
    "labelled dataset: the decisions and masks the run made, without inference.",
)
@click.option(
    "--group-by",
    metavar="REGEX",
    help="The images of one part (its sides, its cameras) are those whose ids share this "
    "pattern's match (its first group, if it has one), as cv --group-by; escapes and false "
    "rejects are then counted in parts too. Default: the layout's groups (KolektorSDD's "
    "kosNN/ folders; other layouts: each image its own part).",
)
@click.option("--quiet", "-q", is_flag=True)
def evaluate_command(
    paths: tuple[Path, ...],
    engine: Path | None,
    compare_to: Path | None,
    layout: str,
    split: str,
    out: Path,
    batch_size: int,
    precision: str,
    device: str,
    threshold: float | None,
    decisions_file: Path | None,
    roi: Path | None,
    labels: Path | None,
    group_by: str | None,
    quiet: bool,
) -> None:
    """Score a checkpoint (CHECKPOINT DATA...), an engine (--engine DIR DATA...) or a run's
    results (RESULTS --labels DATA) on labelled images: mask/boundary IoU, AUC, AP,
    accuracy, and the escapes and false rejects of the image decisions a run applies.
    Several DATA folders are scored as one dataset, as train reads them."""
    score: Callable[[Progress], Evaluation]
    if labels is not None:
        scoring = (engine, compare_to, decisions_file, threshold, roi)
        if len(paths) != 1 or any(option is not None for option in scoring):
            raise click.UsageError(
                "with --labels give RESULTS alone: the run's own decisions and masks are "
                "scored (no --engine, --compare-to, --decisions, --threshold or --roi)"
            )
        from psicbatch.audit import audit_results
        from psicbatch.run.watch_parts import parts_pattern

        name, data = paths[0], f"{labels}{part_text(split)}"
        group_by = parts_pattern(name, group_by)
        score = partial(audit_results, name, labels, layout, split, group_by)
    else:
        checkpoint = None if engine or not paths else paths[0]
        folders = paths[1:] if checkpoint else paths
        if not folders:
            raise click.UsageError(
                "give CHECKPOINT DATA, --engine DIR DATA, or RESULTS --labels DATA "
                "(several DATA folders are scored as one dataset)"
            )
        from psicbatch.engines.spec import EngineSpec  # torch: after the usage checks
        from psicbatch.evaluate import evaluate_dataset
        from psicbatch.roi import RegionOfInterest

        decisions = chosen_decisions(decisions_file, engine, threshold, roi)
        spec = EngineSpec(engine_dir=engine, checkpoint=checkpoint, precision=precision)
        name = engine or paths[0]
        data = f"{datasets_text(folders)}{part_text(split)}"
        region = RegionOfInterest(decisions.roi) if decisions.roi is not None else None
        score = partial(
            evaluate_dataset,
            spec,
            folders,
            layout,
            device,
            batch_size,
            compare_to,
            roi=region,
            decisions=decisions,
            split=split,
            group_by=group_by,
        )
    check_output_folder(out, "metrics.json", "evaluation")
    with OutputLock(out, "eval"):
        with progress_bar(quiet, console) as progress:
            result = score(progress)
        result.summary.evaluated = str(name)
        result.summary.command = command_line()
        written = result.write(out, f"Evaluation of {name}")
    click.echo(evaluation_markdown(result.summary, f"Evaluation of {name} on {data}"))
    click.echo(f"report written to {out}/ ({', '.join(written)})")


@click.command("cv", short_help=SUMMARIES["cv"])
@dataset_options
@training_options
@click.option(
    "--folds", type=Bounded(int, 2), default=3, show_default=True, help="Number of folds."
)
@click.option("--fold", "only_fold", type=int, help="Run only this fold (1-based).")
@click.option(
    "--group-by",
    metavar="REGEX",
    help="Keep images in one fold whose ids (paths in DATA without the extension, after "
    "DATA/ where several are given) share "
    "this pattern's match (its first group, if it has one): '^(.*)_cam[0-9]+$' keeps a "
    "part's camera images together. Default: the layout's groups (KolektorSDD's kosNN/).",
)
@click.option(
    "--engine-backend",
    type=click.Choice(NAMES),
    default="torch",
    show_default=True,
    help="Score each fold's model as this engine (built next to it).",
)
@precision_option("scored", "--engine-precision", "The scored engine's precision; ")
@click.option(
    "--out",
    "-o",
    type=OutputPath(file_okay=False),
    required=True,
    help="Folder for fold models and the report; rerun to resume.",
)
@click.option(
    "--score-epochs",
    is_flag=True,
    help="Score every epoch of each fold's training on the fold's test images (as train "
    "--validation does): the report gives each fold's best epochs.",
)
@click.option("--quiet", "-q", is_flag=True)
def cross_validate_command(
    data: tuple[Path, ...],
    layout: str,
    split: str,
    channels: str,
    folds: int,
    only_fold: int | None,
    group_by: str | None,
    engine_backend: str,
    engine_precision: str,
    out: Path,
    score_epochs: bool,
    quiet: bool,
    **kwargs: Any,
) -> None:
    """k-fold cross-validation with grouped, stratified folds; reports in the paper's layout."""
    from psicbatch.crossval import FoldEngine, cross_validate
    from psicbatch.data.splits import grouped_by

    check_output_folder(out, "splits.json", "cross-validation")
    click.get_current_context().meta[STOP_NOTE_KEY] = lambda: (
        f"the folds done, and the epochs of the one under way, are kept in {out}; the same "
        "command continues from them"
    )
    setup = training_setup(data, layout, split, channels, kwargs)
    samples, dataset = setup.samples, setup.dataset
    if setup.start is not None and setup.options.tile_overlap is not None:
        raise PsicbatchError(
            f"{setup.start.path}: was trained on tiles, and "
            "cross-validation trains on whole images; give --input-size HxW to fine-tune "
            "on whole images"
        )
    if group_by is not None:
        samples = grouped_by(samples, group_by)
        dataset = {**dataset, "group_by": group_by}
    _notes(setup, quiet, folds=True)
    with OutputLock(out, "cv"), progress_bar(quiet, console) as progress:
        report = cross_validate(
            samples,
            setup.options,
            folds,
            out,
            dataset,
            progress,
            FoldEngine(engine_backend, engine_precision),
            only_fold,
            setup.digests,
            setup.start,
            score_epochs,
        )
    click.echo((out / "report.md").read_text())
    click.echo(f"{len(report['folds'])} folds written to {out}/")


def _notes(setup: TrainingSetup, quiet: bool, folds: bool = False) -> None:
    """Say the checkpoint training starts from, the part of a published train/test
    division read (or that both were), the input size ``auto`` chose, which
    training images are byte-identical copies of others (each weighs twice in training,
    and a copy labelled differently contradicts its original), and how many defective
    images teach the decision only. ``folds``: for a cross-validation."""
    size = setup.dataset.get("input_size")
    copies = copies_note([sample.id for sample in setup.samples], setup.digests)
    unmasked = setup.dataset.get("defective_without_masks", 0)
    defective = sum(sample.is_defective for sample in setup.samples)
    without_masks = (
        f"{unmasked} of the {defective} defective images have no mask: the masks are "
        f"learned from the other {defective - unmasked}, the image decision from all"
        if unmasked
        else None
    )
    notes = (
        *_starting_notes(setup, folds),
        setup.division,
        f"input size {size}" if size else None,
        copies,
        without_masks,
    )
    for note in notes:
        if note and not quiet:
            say(console, f"note: {note}")


def _starting_notes(setup: TrainingSetup, folds: bool) -> list[str]:
    """The checkpoint ``--init`` starts from, and how many of the images it had learnt
    from already, or had its epochs chosen on: in a cross-validation, such test images
    are not new to its folds."""
    start = setup.start
    if start is None:
        return []
    notes = [
        f"starting from the weights of {started_from(start.record())}; its width "
        f"{setup.options.width}, normalisation and pixel reading are kept"
    ]
    not_new = "; test images among them are not new to their folds' models" if folds else ""
    whose = (
        "those the starting checkpoint was trained on",
        "the held-out images that chose the starting checkpoint's epochs",
    )
    for known, what in zip(start.known_among(setup.digests), whose, strict=True):
        if known:
            notes.append(f"{known} of these {len(setup.digests)} images are among {what}{not_new}")
    return notes
