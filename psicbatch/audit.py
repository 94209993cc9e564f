"""What a run decided, scored against labels without inference: ``eval RESULTS --labels``.

A line's results hold each image's probability, decision and mask as the run made them:
its engine, threshold, rule, region of interest and mask mode. When some of those images
are labelled later (a review of a day's parts), scoring the stored decisions and masks
gives the paper's metrics and the escapes and false rejects of what the line actually
did, whatever it ran with, at the cost of reading masks instead of running a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from psicbatch.data.combined import division_note
from psicbatch.data.memory import known_defect_mask
from psicbatch.errors import PsicbatchError
from psicbatch.evaluate import Evaluation, image_row, metrics_summary
from psicbatch.fingerprints import overlap_of
from psicbatch.gallery import Gallery
from psicbatch.part_scores import grouping_of
from psicbatch.paths import readable_path
from psicbatch.region_record import recorded_file, short
from psicbatch.roi import RegionOfInterest
from psicbatch.run import rle
from psicbatch.run.labelled_results import Found, labelled_results, regrouped
from psicbatch.run.results import judged_by, read_results_table
from psicbatch.scores import EngineDescription

USED_COLUMNS = ("path", "path_bytes", "probability", "is_defect", "mask", "error")


def audit_results(
    results: Path,
    labels: Path,
    layout: str,
    split: str,
    group_by: str | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Score the rows of ``results`` (a results file or a --watch folder) whose images are
    in the labelled dataset ``labels`` (in its ``split`` part), in the dataset's order; the
    summary says how many labelled images had a result. ``group_by``: as ``eval``'s, the
    pattern whose match makes the parts judged together."""
    table, run = read_results_table(results)
    found = labelled_results(results, table, labels, layout, USED_COLUMNS, split)
    scored = regrouped(found.usable, group_by)
    region = _region(run, results)
    task = progress.add_task("scoring", total=len(scored), status="") if progress else None
    rows: list[dict[str, Any]] = []
    gallery = Gallery()
    for sample, result in scored:
        predicted = _mask(result, results)
        truth = known_defect_mask(sample, predicted.shape)
        if region is not None and truth is not None:  # the run's masks are inside it already
            truth = truth & region.at(predicted.shape, torch.device("cpu")).numpy()
        row = image_row(
            sample, float(result["probability"]), truth, predicted, bool(result["is_defect"])
        )
        rows.append(row)
        gallery.offer(row, truth, predicted)
        if progress is not None and task is not None:
            progress.advance(task)
    summary = metrics_summary(rows, grouping_of(group_by))
    summary.thresholds = {
        key: value
        for key, value in (run.get("thresholds") or {}).items()
        if key in ("classification", "segmentation")
    }
    summary.decisions = judged_by(run)
    engine = run.get("engine") or {}
    files = [sample.image_path for sample, _ in scored]
    summary.overlap = overlap_of(
        files, engine.get("training_images"), run.get("decisions"), chosen=engine.get("chosen_on")
    )
    summary.engine = _engine(run)
    summary.roi = run.get("roi")
    summary.gated_masks = run.get("masks") == "gated"  # results before the option: all
    summary.source = _source(results, run, found)
    summary.division = division_note([labels], [sample for sample, _ in scored], split)
    return Evaluation(rows, summary, gallery)


def _source(results: Path, run: dict[str, Any], found: Found) -> str:
    """The sentence a report opens with: what was scored, and what was left out."""
    masks = run.get("masks", "all")
    how = (
        "gated: an image judged good has none, so every reading is of gated masks"
        if masks == "gated"
        else masks
    )
    return (
        f"Scored without inference from the results {readable_path(results)}, as the run "
        f"decided and wrote them (masks {how}): {found.counts('scored')}."
    )


def _mask(result: dict[str, Any], results: Path) -> np.ndarray:
    try:
        return rle.decode(result["mask"])
    except ValueError as error:
        raise PsicbatchError(
            f"{readable_path(results)}: the mask of {result['path']} is damaged ({error})"
        ) from None


def _region(run: dict[str, Any], results: Path) -> RegionOfInterest | None:
    """The region the run inspected inside, for the labels: its masks hold nothing
    outside it, so labelled defects there must not count either."""
    record = run.get("roi")
    if not record:
        return None
    found = recorded_file(record)
    if found is None:
        raise PsicbatchError(
            f"{readable_path(results)}: inspected inside the region of interest "
            f"{short(record)}, which is no longer there unchanged to count the labels inside it"
        )
    return RegionOfInterest(found)


def _engine(run: dict[str, Any]) -> EngineDescription | None:
    engine, devices = run.get("engine") or {}, run.get("devices") or ["?"]
    try:
        return EngineDescription.of_manifest(engine, str(devices[0]))
    except (KeyError, IndexError, TypeError):
        return None  # a description from before engines were recorded
