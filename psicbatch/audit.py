"""What a run decided, scored against labels without inference: ``eval RESULTS --labels``.

A line's results hold each image's probability, decision and mask as the run made them:
its engine, threshold, rule, region of interest and mask mode. When some of those images
are labelled later (a review of a day's parts), scoring the stored decisions and masks
gives the paper's metrics and the escapes and false rejects of what the line actually
did, whatever it ran with, at the cost of reading masks instead of running a network.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from rich.progress import Progress

from psicbatch.data.layouts import SampleRef, read_dataset
from psicbatch.data.memory import defect_mask
from psicbatch.errors import PsicbatchError
from psicbatch.evaluate import Evaluation, image_row, metrics_summary
from psicbatch.fingerprints import overlap_of
from psicbatch.gallery import Gallery
from psicbatch.paths import path_bytes, path_from_bytes, readable_path
from psicbatch.region_record import recorded_file, short
from psicbatch.roi import RegionOfInterest
from psicbatch.run import rle
from psicbatch.run.results import judged_by, read_results_table
from psicbatch.scores import EngineDescription

USED_COLUMNS = ("path", "path_bytes", "probability", "is_defect", "mask", "error")


def audit_results(
    results: Path, labels: Path, layout: str, progress: Progress | None = None
) -> Evaluation:
    """Score the rows of ``results`` (a results file or a --watch folder) whose images are
    in the labelled dataset ``labels``, in the dataset's order; the summary says how
    many labelled images had a result."""
    table, run = read_results_table(results)
    samples = read_dataset(labels, layout)
    found = _result_rows(table, samples)
    scored = [(sample, row) for sample, row in found.pairs if row.get("error") is None]
    if not scored:
        example = f" (they name e.g. {table['path'][0]})" if table.num_rows else ""
        raise PsicbatchError(
            f"{readable_path(results)}: none of its results without an error is of an image "
            f"of {readable_path(labels)}{example}; give the dataset the run inspected, from "
            "the folder the run started in where it was given relative paths"
        )
    region = _region(run, results)
    task = progress.add_task("scoring", total=len(scored), status="") if progress else None
    rows: list[dict[str, Any]] = []
    gallery = Gallery()
    for sample, result in scored:
        predicted = _mask(result, results)
        truth = defect_mask(sample, predicted.shape)
        if region is not None:  # the run's masks are inside it already
            truth = truth & region.at(predicted.shape, torch.device("cpu")).numpy()
        row = image_row(
            sample, float(result["probability"]), truth, predicted, bool(result["is_defect"])
        )
        rows.append(row)
        gallery.offer(row, truth, predicted)
        if progress is not None and task is not None:
            progress.advance(task)
    summary = metrics_summary(rows)
    summary.thresholds = {
        key: value
        for key, value in (run.get("thresholds") or {}).items()
        if key in ("classification", "segmentation")
    }
    summary.decisions = judged_by(run)
    engine = run.get("engine") or {}
    files = [sample.image_path for sample, _ in scored]
    summary.overlap = overlap_of(files, engine.get("training_images"), run.get("decisions"))
    summary.engine = _engine(run)
    summary.roi = run.get("roi")
    summary.gated_masks = run.get("masks") == "gated"  # results before the option: all
    summary.source = _source(results, run, len(samples), found, len(scored), table.num_rows)
    return Evaluation(rows, summary, gallery)


def _source(
    results: Path, run: dict[str, Any], labelled: int, found: Found, scored: int, rows: int
) -> str:
    """The sentence a report opens with: what was scored, and what was left out."""
    masks = run.get("masks", "all")
    how = (
        "gated: an image judged good has none, so every reading is of gated masks"
        if masks == "gated"
        else masks
    )
    with_result = len(found.pairs)
    counts = [f"{with_result} of the {labelled} labelled images have a result"]
    if found.copies:
        counts.append(f"{found.copies} of them as copies of the files the run inspected")
    if with_result > scored:
        counts.append(f"{with_result - scored} of them an error (not scored)")
    if found.rows_of_labelled > with_result:
        again = found.rows_of_labelled - with_result
        counts.append(
            f"{again} earlier results of the same images (inspected again; the last scored)"
        )
    if rows > found.rows_of_labelled:
        counts.append(
            f"{rows - found.rows_of_labelled} results are of images not labelled (not scored)"
        )
    return (
        f"Scored without inference from the results {readable_path(results)}, as the run "
        f"decided and wrote them (masks {how}): {'; '.join(counts)}."
    )


@dataclass
class Found:
    """The labelled samples' result rows, and how many rows were of labelled images."""

    pairs: list[tuple[SampleRef, dict[str, Any]]]  # in the dataset's order
    rows_of_labelled: int  # earlier inspections of the same images included
    copies: int  # labelled images that are copies of the files the run inspected


def _result_rows(table: Any, samples: list[SampleRef]) -> Found:
    """Each labelled sample with its result row (the last one, where a watch inspected a
    replaced file again), in the dataset's order; only those rows become Python. A
    labelled image is the file a row names, or a copy of it: a file of the same name and
    the same bytes (reviewed images are often copied out of the line's folder)."""
    by_file = {path_bytes(sample.image_path.resolve()): sample for sample in samples}
    # A file name no labelled image has rules a row out without resolving its path (a
    # system call per folder level: seconds over a week of a line's results); a path
    # seen before is not resolved again.
    labelled_names = {os.path.basename(key) for key in by_file} | {
        os.fsencode(sample.image_path.name) for sample in samples
    }
    names = table.select([c for c in ("path", "path_bytes") if c in table.column_names])
    position: dict[bytes, int] = {}
    resolved: dict[bytes, bytes] = {}
    rows_of_labelled = 0
    elsewhere: dict[bytes, list[tuple[int, bytes]]] = {}  # by name: rows of other files
    for index, row in enumerate(names.to_pylist()):
        raw = row.get("path_bytes") or path_bytes(row["path"])  # as ``paths.row_file``
        name = os.path.basename(raw)
        if name not in labelled_names:
            continue
        if raw not in resolved:
            resolved[raw] = path_bytes(path_from_bytes(raw).resolve())
        key = resolved[raw]
        if key in by_file:
            position[key] = index
            rows_of_labelled += 1
        else:
            elsewhere.setdefault(name, []).append((index, raw))
    copies = 0
    for key, sample in by_file.items():
        if key in position:
            continue
        same = [
            index
            for index, raw in elsewhere.get(os.path.basename(key), [])
            if _same_file_content(path_from_bytes(raw), sample.image_path)
        ]
        if same:
            position[key] = same[-1]
            rows_of_labelled += len(same)
            copies += 1
    wanted = [key for key in by_file if key in position]
    columns = [c for c in USED_COLUMNS if c in table.column_names]
    indices = pa.array([position[key] for key in wanted], type=pa.int64())
    rows = table.select(columns).take(indices).to_pylist()
    pairs = [(by_file[key], row) for key, row in zip(wanted, rows, strict=True)]
    return Found(pairs, rows_of_labelled, copies)


def _same_file_content(inspected: Path, labelled: Path) -> bool:
    """Whether two regular files hold the same bytes (sizes first); a path that is not a
    regular file (gone, a pipe) is not opened."""
    try:
        first, second = os.stat(inspected), os.stat(labelled)
        regular = stat.S_ISREG(first.st_mode) and stat.S_ISREG(second.st_mode)
        if not regular or first.st_size != second.st_size:
            return False
        with open(inspected, "rb") as one, open(labelled, "rb") as other:
            while True:
                chunk = one.read(1 << 20)
                if chunk != other.read(1 << 20):
                    return False
                if not chunk:
                    return True
    except OSError:
        return False


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
