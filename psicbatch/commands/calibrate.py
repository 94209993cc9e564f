"""``psicbatch calibrate``: thresholds for a target escape rate, from stored predictions."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import click
from rich.progress import Progress

from psicbatch.calibrate import (
    Calibration,
    StoredPredictions,
    Validation,
    calibrate,
    check_type_limits,
    read_validation,
    scored_rows,
)
from psicbatch.calibration_report import (
    calibration_html,
    calibration_markdown,
    is_calibration_markdown,
    is_calibration_page,
)
from psicbatch.commands import SUMMARIES, command_line
from psicbatch.commands.options import (
    NON_NEGATIVE_INT,
    POSITIVE,
    PROBABILITY,
    RUN_CHECKPOINT,
    TYPE_LIMIT,
    CheckpointFile,
    EngineFolder,
    Location,
    OutputPath,
    device_option,
    precision_option,
    split_option,
)
from psicbatch.commands.training_options import layout_option
from psicbatch.decisions import (
    PARTS_TARGET,
    RULES,
    Decisions,
    Rule,
    named_engine,
    scoring_engine,
    who_and_when,
)
from psicbatch.engines.manifest import read_manifest
from psicbatch.engines.revisions import set_decisions
from psicbatch.errors import PsicbatchError
from psicbatch.fingerprints import (
    ImageSet,
    Overlap,
    calibration_notes,
    file_digests,
    overlap_of,
)
from psicbatch.output_lock import OutputLock
from psicbatch.part_scores import grouping_of
from psicbatch.progress import progress_bar
from psicbatch.region_record import applied_region, read_region, recorded_file, short
from psicbatch.run.output_guard import OutputKind, check_output, check_writable
from psicbatch.run.results import watch_identity
from psicbatch.run.watch_parts import parts_pattern

# The decision file and its two reports, each replacing only its own kind.
OUTPUTS = (
    OutputKind("decision file", "--out", Decisions.is_decision_file, "JSON", (".json",)),
    OutputKind("calibration report", "--out", is_calibration_markdown, "Markdown", (".md",)),
    OutputKind("calibration page", "--out", is_calibration_page, "HTML", (".html",)),
)


@click.command("calibrate", short_help=SUMMARIES["calibrate"])
@click.argument("predictions", nargs=-1, required=True, type=Location(path_type=Path, exists=True))
@click.option(
    "--model",
    type=CheckpointFile(),
    help="With a dataset folder as PREDICTIONS: score it with this checkpoint first.",
)
@precision_option("checkpoint", what="With --model: the precision the weights run in; ")
@device_option()
@click.option(
    "--labels",
    type=Location(path_type=Path, file_okay=False, exists=True),
    help="With run results (a results file or a --watch folder): the labelled dataset of "
    "those images, or of some of them (copies count), matched as eval RESULTS --labels does.",
)
@layout_option("the --labels dataset")
@split_option
@click.option(
    "--max-escape-rate",
    type=PROBABILITY,
    default=0.0,
    show_default=True,
    help="Most defective images (with --per-part: parts) judged good, as a share (0: none).",
)
@click.option(
    "--max-escape-rate-of",
    "type_limits",
    type=TYPE_LIMIT,
    multiple=True,
    metavar="TYPE=RATE",
    help="Also: most defective images of this defect type judged good, as a share of that "
    "type's images (a review's subfolder of defective/; repeatable): crack=0.",
)
@click.option(
    "--max-false-reject-rate",
    type=PROBABILITY,
    help="Instead: most good images (with --per-part: parts) judged defective, as a share; "
    "the fewest escapes within it.",
)
@click.option(
    "--per-part",
    is_flag=True,
    help="Count escapes and false rejects in parts, not images: a part (KolektorSDD's kosNN/ "
    "folders, or --group-by's) is rejected when any of its images is judged defective.",
)
@click.option(
    "--group-by",
    metavar="REGEX",
    help="With --per-part: the images of one part are those whose ids share this pattern's "
    "match (its first group, if it has one), as eval --group-by.",
)
@click.option(
    "--min-area",
    type=NON_NEGATIVE_INT,
    default=0,
    show_default=True,
    help="Defect pixels (at the image's resolution) that count, for --rule both/either.",
)
@click.option(
    "--min-area-mm2",
    type=POSITIVE,
    help="The minimum area in square millimetres instead (needs --pixel-size).",
)
@click.option(
    "--pixel-size",
    type=POSITIVE,
    help="Millimetres per pixel at the images' original resolution, for --min-area-mm2.",
)
@click.option(
    "--rule",
    type=click.Choice(RULES),
    default="classifier",
    show_default=True,
    help="classifier: probability only; both: and a mask of at least --min-area pixels; "
    "either: one of the two.",
)
@click.option(
    "--engine",
    type=EngineFolder(RUN_CHECKPOINT, exists=True),
    help="The engine the decisions are for: it scores PREDICTIONS when that is a dataset "
    "folder, and receives the decisions as a new manifest revision (earlier revisions are "
    "kept); run applies them with that engine.",
)
@click.option(
    "--out",
    "-o",
    type=OutputPath(dir_okay=False),
    default="decisions.json",
    show_default=True,
    help="The decision file for psicbatch run --decisions (reports .md and .html beside it).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an earlier decision file and its reports at --out."
)
@click.option(
    "--roi",
    type=Location(path_type=Path, dir_okay=False, exists=True),
    help="With a dataset folder: count masks inside this region of interest only (white = "
    "inspect), as run --roi; with predictions scored inside a region: where that region "
    "is now. Runs of the decisions apply the same region.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar while a dataset is scored.")
def calibrate_command(
    predictions: tuple[Path, ...],
    model: Path | None,
    precision: str,
    device: str,
    labels: Path | None,
    layout: str,
    split: str,
    max_escape_rate: float,
    type_limits: tuple[tuple[str, float], ...],
    max_false_reject_rate: float | None,
    per_part: bool,
    group_by: str | None,
    min_area: int,
    min_area_mm2: float | None,
    pixel_size: float | None,
    rule: str,
    engine: Path | None,
    out: Path,
    overwrite: bool,
    roi: Path | None,
    quiet: bool,
) -> None:
    """Choose the image threshold for a target escape rate from eval/cv predictions, from
    run results (a file or a --watch folder) with --labels, or by scoring a labelled
    dataset (PREDICTIONS a folder, or several scored as one dataset) with --model or
    --engine; write a decision file and its reports."""
    chosen_rule = Rule(rule, _min_area(min_area, min_area_mm2, pixel_size))
    group_by = parts_pattern(predictions[0], group_by) if labels and per_part else group_by
    target, limits = _target(
        max_escape_rate, max_false_reject_rate, type_limits, per_part, group_by
    )
    written = (out, out.with_suffix(".md"), out.with_suffix(".html"))
    inputs: dict[str, Path | None] = {
        **{f"the predictions {path}": path for path in predictions},
        "the labels": labels,
        "the model": model,
        "the engine folder": engine,
        "the region of interest": roi,
    }
    _check_outputs(written, inputs, engine, overwrite)
    with _output_locks(out, engine):
        stored = None
        if _are_datasets(predictions, labels):
            with progress_bar(quiet) as progress:
                scored = _scored(
                    predictions,
                    engine,
                    model,
                    precision,
                    layout,
                    split,
                    device,
                    roi,
                    limits,
                    group_by,
                    progress,
                )
        else:
            (stored_at,) = predictions
            if model is not None:
                raise click.BadParameter(
                    "--model scores a dataset folder; stored predictions are scored already"
                )
            stored = StoredPredictions.read(stored_at)
            scored = _stored(stored, labels, engine, roi, layout, chosen_rule, split, group_by)
        if per_part:
            target[PARTS_TARGET] = _parts_grouping(group_by, stored, labels)
        data = scored.validation
        result = calibrate(
            data, chosen_rule, max_escape_rate, max_false_reject_rate, limits, by_part=per_part
        )
        decisions = _decisions(scored, result, chosen_rule, target, pixel_size)
        decisions.write(out)
        seen = scored.seen
        if seen is not None and not quiet:
            for note in calibration_notes(seen.training, seen.chosen, seen.images):
                click.echo(f"note: {note}", err=True)
        written[1].write_text(calibration_markdown(decisions, data, result))
        written[2].write_text(calibration_html(decisions, data, result), encoding="utf-8")
        click.echo(_chosen_said(result))
        click.echo(f"decisions written to {out} (reports {written[1]}, {written[2]})")
        if engine is not None:
            manifest = set_decisions(engine, decisions, out)
            click.echo(f"stored in {engine} as manifest revision {manifest.revision}")
        applied = f"--engine {engine}" if engine else f"--decisions {out}"
        click.echo(
            f"next: psicbatch eval{'' if engine else ' MODEL'} HELD_OUT_DATA {applied} (their "
            f"escapes on images they were not chosen on), then psicbatch run IMAGES {applied}"
        )


class Scored(NamedTuple):
    """Images scored for a calibration and what the decisions record of them."""

    validation: Validation
    digests: list[bytes | None]  # of the image files: eval counts them
    scorer: dict[str, Any]  # the engine that scored them
    region: dict[str, Any] | None  # the region of interest's record
    seen: Overlap | None  # how many of the images the model was trained on


def _min_area(min_area: int, min_area_mm2: float | None, pixel_size: float | None) -> int:
    """The area rule's minimum in pixels, given in pixels or in mm² with the pixel size."""
    if (min_area_mm2 is None) != (pixel_size is None):
        raise click.BadParameter("--min-area-mm2 and --pixel-size go together")
    if min_area_mm2 is None or pixel_size is None:
        return min_area
    if min_area:
        raise click.BadParameter("give --min-area (pixels) or --min-area-mm2, not both")
    return math.ceil(min_area_mm2 / pixel_size**2 - 1e-9)


def _stored(
    stored: StoredPredictions,
    labels: Path | None,
    engine: Path | None,
    roi: Path | None,
    layout: str,
    rule: Rule,
    split: str,
    group_by: str | None,
) -> Scored:
    """Predictions scored already (eval/cv predictions, run results with ``labels``)."""
    scorer, recorded_region = _recorded(stored)
    region = _located_region(stored.path, recorded_region, roi, engine)
    if engine is not None:
        _check_scored_by(stored.path, scorer, engine)
    data = read_validation(stored, labels, layout, rule, split, group_by)
    digests = file_digests(data.files)  # recorded, and counted among training images
    seen = _seen_before(stored.record, data.files, digests)
    return Scored(data, digests, scorer, region, seen)


def _decisions(
    scored: Scored,
    result: Calibration,
    rule: Rule,
    target: dict[str, Any],
    pixel_size: float | None,
) -> Decisions:
    """The decision file's content: the chosen threshold, and how and on what it was chosen."""
    set_by, set_at = who_and_when()
    return Decisions(
        classification_threshold=result.chosen.threshold,
        rule=rule,
        target=target,
        pixel_size_mm=pixel_size,
        validation={
            "source": scored.validation.source,
            **result.chosen.to_dict(),
            "image_digests": ImageSet.of_digests(scored.digests).encode(),  # eval counts them
            **_seen_counts(scored.seen),
        },
        set_by=set_by,
        set_at=set_at,
        command=command_line(),
        scored_by=scored.scorer,
        roi=scored.region,
    )


def _chosen_said(result: Calibration) -> str:
    """The chosen threshold and its escapes and false rejects, in one line."""
    point, unit, in_images = result.chosen, result.chosen.unit, result.in_images
    said = (
        f"threshold {point.threshold:.4g}: {point.escapes} of {point.defective} defective "
        f"{unit} escape (95% upper bound {100 * point.escape_rate_upper:.1f}%), "
        f"{point.false_rejects} of {point.good} good {unit} rejected "
        f"({100 * point.false_reject_rate:.2f}%)"
    )
    if in_images:
        said += (
            f"; in images, {in_images.escapes} of {in_images.defective} defective escape "
            f"and {in_images.false_rejects} of {in_images.good} good are rejected"
        )
    return said


def _check_outputs(
    written: tuple[Path, ...], inputs: dict[str, Path | None], engine: Path | None, overwrite: bool
) -> None:
    """The decision file and its reports, and the engine folder that stores the decisions
    too, checked before any scoring: each may be written and replaces nothing it must not."""
    for kind, path in zip(OUTPUTS, written, strict=True):
        check_output(path, kind, named_inputs=inputs, overwrite=overwrite)
    if engine is not None:
        check_writable(engine, engine, "copy the engine folder where it can be, and give that")


@contextlib.contextmanager
def _output_locks(out: Path, engine: Path | None) -> Iterator[None]:
    """The decision file, and the engine folder that stores the decisions too, written by
    this process alone: a second calibrate, or a build-engine of that folder (which replaces
    it), is refused while this one runs."""
    with contextlib.ExitStack() as locks:
        locks.enter_context(OutputLock(out, "calibrate"))
        if engine is not None:
            locks.enter_context(OutputLock(engine, "calibrate"))
        yield


def _are_datasets(predictions: tuple[Path, ...], labels: Path | None) -> bool:
    """Whether PREDICTIONS are labelled dataset folders to score (several are scored
    together), rather than one file or folder of stored predictions; mixes refused."""
    datasets = [path for path in predictions if path.is_dir() and watch_identity(path) is None]
    if not datasets:
        if len(predictions) > 1:
            raise click.BadParameter(
                "stored predictions (results or an eval's) are calibrated one file or folder "
                "at a time"
            )
        return False
    if labels is not None:
        raise click.BadParameter("--labels goes with run results, not a dataset folder")
    if len(datasets) < len(predictions):
        raise click.BadParameter(
            "give dataset folders (scored together) or one file or folder of stored "
            "predictions, not both"
        )
    return True


def _target(
    max_escape_rate: float,
    max_false_reject_rate: float | None,
    type_limits: tuple[tuple[str, float], ...],
    per_part: bool,
    group_by: str | None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """The target as the decision file records it (what made the parts it counts, if it
    counts parts, is added once the predictions are read), and the limits by defect type."""
    if group_by is not None and not per_part:
        raise click.BadParameter("--group-by names the parts --per-part counts; give both")
    limits = dict(type_limits)
    if len(limits) < len(type_limits):
        raise click.BadParameter("a defect type is given twice", param_hint="--max-escape-rate-of")
    target: dict[str, Any] = (
        {"max_false_reject_rate": max_false_reject_rate}
        if max_false_reject_rate is not None
        else {"max_escape_rate": max_escape_rate}
    )
    if limits:
        target["max_escape_rate_of"] = limits
    return target, limits


def _recorded(stored: StoredPredictions) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The engine that scored stored predictions and the region of interest their masks
    were counted inside, as run results and eval predictions record them (cv predictions
    pool several folds' models and record neither)."""
    try:
        engine, region = stored.record.get("engine") or {}, stored.record.get("roi")
        return scoring_engine(engine) if engine.get("engine_sha256") else {}, region
    except AttributeError:
        return {}, None  # a damaged record


def _parts_grouping(
    group_by: str | None, stored: StoredPredictions | None, labels: Path | None
) -> str:
    """What made the parts counted: the pattern, the dataset's groups, or for stored eval
    or cv predictions the parts they record, as their evaluation names them."""
    if group_by is not None or stored is None or labels is not None:
        return grouping_of(group_by)
    parts = stored.record.get("parts")
    if isinstance(parts, dict) and isinstance(parts.get("grouping"), str):
        return str(parts["grouping"])
    return "as the predictions record them"


def _seen_counts(seen: Overlap | None) -> dict[str, int]:
    """The validation record's counts of images seen in training and in choosing the
    model, where they are known."""
    if seen is None:
        return {}
    counts = {"seen_in_training": seen.training, "seen_in_choosing": seen.chosen}
    return {key: count for key, count in counts.items() if count is not None}


def _seen_before(
    stored: dict[str, Any], files: list[Path], digests: list[bytes | None]
) -> Overlap | None:
    """How many validation images the scoring model was trained on, or were held-out
    images that chose it: counted here for run results (their engine records its images),
    as eval counted them for its predictions; None where nothing records it."""
    try:
        if "training_images" in (engine := stored.get("engine") or {}):
            chosen = engine.get("chosen_on")
            return overlap_of(files, engine["training_images"], None, digests, chosen)
        return Overlap(**stored["overlap"]) if stored.get("overlap") else None
    except (TypeError, AttributeError):
        return None  # a damaged record: the note is an aside


def _located_region(
    predictions: Path, region: dict[str, Any] | None, given: Path | None, engine: Path | None
) -> dict[str, Any] | None:
    """The record of the region stored predictions were scored inside, naming where its
    file is now (``given``, or the recorded file, as an absolute path) when it can be
    found; refused in one line where it must be found (to be stored in an engine), and
    when ``given`` does not fit the predictions."""
    if region is None:
        if given is not None:
            raise PsicbatchError(
                f"{predictions}: its masks were counted on whole images, not inside a region "
                "of interest; score the dataset folder with --roi (or eval --roi) instead"
            )
        return None
    found = (
        applied_region(region, given, None, str(predictions)) if given else recorded_file(region)
    )
    if found is None and engine is not None:
        raise PsicbatchError(
            f"{predictions}: scored inside the region of interest {short(region)}, which is "
            "no longer there unchanged; give it with --roi to store it with the engine"
        )
    return {**region, "file": os.path.abspath(found.path)} if found else region


def _check_scored_by(predictions: Path, scorer: dict[str, Any], engine: Path) -> None:
    """Refuse, in one line, to store in ``engine`` decisions calibrated on another
    engine's probabilities."""
    ours = scoring_engine(vars(read_manifest(engine)))
    if scorer and scorer != ours:
        raise PsicbatchError(
            f"{predictions}: scored by another engine ({named_engine(scorer)}) than {engine} "
            f"({named_engine(ours)}); its decisions would not fit that engine's "
            "probabilities: calibrate on that engine's own results, or give the dataset "
            "folder with --engine"
        )


def _scored(
    folders: Sequence[Path],
    engine: Path | None,
    model: Path | None,
    precision: str,
    layout: str,
    split: str,
    device: str,
    roi: Path | None,
    limits: dict[str, float],
    group_by: str | None,
    progress: Progress,
) -> Scored:
    """A labelled dataset (``folders``, read together as training reads them; of a
    published train/test division, the ``split`` part) scored by a model or engine, as
    ``eval`` scores it (masks inside ``roi`` only, when given; parts by ``group_by``), its
    image files' digests, that engine, the region's record and how many of the images the
    model was trained on."""
    from psicbatch.data.combined import datasets_text, part_text, read_datasets
    from psicbatch.engines.spec import EngineSpec
    from psicbatch.evaluate import evaluate_dataset
    from psicbatch.roi import RegionOfInterest

    if (engine is None) == (model is None):
        raise click.BadParameter("with a dataset folder, give --model or --engine")
    # Checked before any work.
    region = RegionOfInterest(read_region(roi)) if roi is not None else None
    spec = EngineSpec(engine_dir=engine, checkpoint=model, precision=precision)
    # Made once: recorded with the decisions and counted among the training images.
    samples, _ = read_datasets(folders, layout, split)
    dataset = f"{datasets_text(folders)}{part_text(split)}"
    types = [sample.defect_type for sample in samples]
    check_type_limits(limits, types, [s.is_defective for s in samples], dataset)
    digests = file_digests([sample.image_path for sample in samples])
    result = evaluate_dataset(
        spec,
        folders,
        layout,
        device,
        progress=progress,
        roi=region,
        samples=samples,
        digests=digests,
        split=split,
        group_by=group_by,
    )
    validation = scored_rows(result.rows, f"{dataset} scored by {engine or model}")
    engine_used = result.summary.engine
    scorer = scoring_engine(vars(engine_used)) if engine_used else {}
    seen = result.summary.overlap
    where = {**region.record(), "file": os.path.abspath(region.path)} if region else None
    return Scored(validation, digests, scorer, where, seen)
