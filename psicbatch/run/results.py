"""A run's results as rows and a description of the run, for reading them back.

``psicbatch run`` writes one results file (the description in its Parquet metadata);
``run --watch`` writes a folder of parts by date and hour with the job's identity in
``_watch.json`` at its top, and beside it in ``_watch_run.json`` what a results file's
metadata holds, from the watch's latest start. Both read the same way here, and so does
one day or hour of a watch folder (``OUT/date=2026-12-04``): the identity is then the
nearest one above.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from psicbatch.engines.manifest import large_kernel_note
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path
from psicbatch.run.files import check_regular
from psicbatch.run.job import (
    LATE_IMAGES_FILE,
    PART_DECISIONS_FILE,
    WATCH_JOB_FILE,
    WATCH_RUN_FILE,
)
from psicbatch.run.output import read_metadata
from psicbatch.run.part_files import DECISION_COLUMNS, LATE_COLUMNS, late_said, whole_lines
from psicbatch.scores import AppliedDecisions
from psicbatch.wording import decisions_said

PARTITION_LEVELS = 2  # date=..., hour=...


def read_results_table(
    results: Path, columns: list[str] | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    """The rows and the run's description of a results file or a watch folder: every
    column, or those of ``columns`` the files hold (a month of a watch's masks would
    take gigabytes that counting its images does not need)."""
    if results.is_dir():
        return _watch_results(results, columns)
    check_regular(results)
    metadata = read_metadata(results)
    return _read_columns(results, columns), metadata


def _read_columns(path: Path, columns: list[str] | None) -> pa.Table:
    if columns is None:
        return pq.read_table(path)
    source = pq.ParquetFile(path)
    return source.read([name for name in columns if name in source.schema_arrow.names])


KEY, ROW = "_file", "_row"  # a row's file (its path's bytes) and its number in its table


def latest_rows(table: pa.Table, columns: list[str]) -> pa.Table:
    """The last row of each file (by its path's bytes, exactly: a watch inspects a
    replaced file again), its ``columns`` with the file (``KEY``) and the row's number in
    ``table`` (``ROW``)."""
    path = pc.cast(table["path"], pa.binary())
    if "path_bytes" in table.column_names:  # older results have only the path
        path = pc.coalesce(table["path_bytes"], path)
    rows = table.select(columns).append_column(KEY, path)
    rows = rows.append_column(ROW, pa.array(np.arange(table.num_rows)))
    return rows.take(rows.group_by(KEY).aggregate([(ROW, "max")])[f"{ROW}_max"])


def watch_identity(folder: Path) -> Path | None:
    """The identity file of the --watch output ``folder`` is (or is a day or hour of)."""
    above = [folder, *folder.resolve().parents][: PARTITION_LEVELS + 1]
    return next((f / WATCH_JOB_FILE for f in above if (f / WATCH_JOB_FILE).is_file()), None)


def judged_by(run: dict[str, Any]) -> AppliedDecisions | None:
    """How a run judged its images (threshold, rule, where they came from), from its
    description; None when it records no threshold."""
    thresholds = run.get("thresholds") or {}
    threshold = thresholds.get("classification")
    if threshold is None:
        return None
    record = run.get("decisions")
    model = ((run.get("engine") or {}).get("thresholds") or {}).get("classification")
    if not record and threshold == model:
        return AppliedDecisions(threshold)
    rule, min_area = thresholds.get("rule", "classifier"), thresholds.get("min_area", 0)
    return AppliedDecisions.from_record(threshold, record, rule, min_area)


COUNTED_COLUMNS = ["is_defect", "error", "completed_at"]  # what results_counts and spans read


def results_counts(table: pa.Table) -> tuple[int, int, int]:
    """Images, those judged defective, those with an error (no decision)."""
    defective = pc.sum(table["is_defect"]).as_py() or 0
    return table.num_rows, defective, table.num_rows - table["error"].null_count


def results_summary(results: Path) -> dict[str, Any]:
    """What a results file or watch folder holds and what made it, from its own record:
    the counts, the engine, thresholds and decisions, the run's settings and times."""
    table, run = read_results_table(results, COUNTED_COLUMNS)
    return described(results, table, run)


def described(results: Path, table: pa.Table, run: dict[str, Any]) -> dict[str, Any]:
    """``results_summary`` of results already read: what ``info`` and the report's page
    show of them."""
    engine, decisions = run.get("engine") or {}, run.get("decisions") or {}
    images, defective, errors = results_counts(table)
    judged = judged_by(run)
    summary = {
        "results": readable_path(results),
        "images": images,
        "defective": defective,
        "errors": errors,
        "engine": " ".join(str(engine[key]) for key in ("backend", "precision") if key in engine)
        + large_kernel_note(engine.get("backend_details") or {}),
        "input_size": "x".join(str(side) for side in engine.get("input_size") or []),
        "engine_sha256": engine.get("engine_sha256"),
        "checkpoint_sha256": run.get("checkpoint_sha256"),
        "thresholds": run.get("thresholds"),
        "judged defective": judged.line() if judged else None,
        "decisions": {
            key: decisions[key]
            for key in ("file", "engine", "manifest_revision", "decision_file", "target")
            if key in decisions
        },
    }
    settings = ["sources", "masks", "decoder", "devices", "roi", "inputs", "resumed"]
    settings += ["parts", "completed", "part decisions", "late images"]  # a watch folder's
    times = ("started_at", "finished_at", "psicbatch_version", "schema_version")
    summary.update({key: run.get(key) for key in (*settings, *times)})
    return {key: value for key, value in summary.items() if value not in ({}, None, "")}


def field_text(value: Any, inner: bool = False) -> str:
    """A summary's value as a person reads it: ``key=value, ...`` for a record (in
    parentheses within another), a list of texts one per line, numbers to 6 significant
    digits (``--json`` keeps every digit)."""
    if isinstance(value, dict):
        fields = ", ".join(f"{key}={field_text(item, True)}" for key, item in value.items())
        return f"({fields})" if inner else fields or "-"
    if isinstance(value, list):
        if value and not inner and all(isinstance(item, str) for item in value):
            return "\n".join(value)
        return f"[{', '.join(field_text(item, True) for item in value)}]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _watch_results(folder: Path, columns: list[str] | None) -> tuple[pa.Table, dict[str, Any]]:
    """Every part below ``folder``, described by the watch's identity, its latest
    start's record and the time span its parts cover."""
    identity = watch_identity(folder)
    if identity is None:
        raise PsicbatchError(
            f"{readable_path(folder)}: not a results file, nor a folder of psicbatch run "
            f"--watch (no {WATCH_JOB_FILE} in it or in the two folders above)"
        )
    parts = sorted(folder.rglob("part-*.parquet"))
    if not parts:
        raise PsicbatchError(f"{readable_path(folder)}: no results yet (no part-*.parquet)")
    try:
        description = json.loads(identity.read_text())
        latest_start = identity.with_name(WATCH_RUN_FILE)  # absent before psicbatch wrote it
        if latest_start.is_file():
            description.update(json.loads(latest_start.read_text()))
        table = pa.concat_tables(
            [_read_columns(part, columns) for part in parts], promote_options="permissive"
        )
    except (OSError, ValueError) as error:  # pyarrow's errors are ValueErrors too
        raise PsicbatchError(f"{readable_path(folder)}: cannot be read ({error})") from None
    description["parts"] = len(parts)
    description["part decisions"] = _part_decisions(folder, identity.parent)
    description["late images"] = _late_said(late_images(folder))
    span = pc.min_max(table["completed_at"]) if "completed_at" in table.column_names else None
    if span is not None and span["min"].is_valid:
        first, last = span["min"].as_py(), span["max"].as_py()
        description["completed"] = f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC"
    return table, description


def _part_decisions(folder: Path, root: Path) -> str | None:
    """The parts the watch at ``root`` decided as their images came, counted by kind, of
    the day or hour ``folder`` is (by when they were decided); None where it decides no
    parts."""
    decisions = root / PART_DECISIONS_FILE
    if not decisions.is_file():
        return None
    lines = _made_during(folder, root, decisions, DECISION_COLUMNS, "decided_at")
    counts = Counter(line["decision"] for line in lines)
    return f"{decisions_said(counts) or 'none'} ({PART_DECISIONS_FILE})"


def late_images(results: Path) -> list[dict[str, str]]:
    """The images of a watch's parts that came after their part was decided, noted
    during the day or hour ``results`` is (``watch_parts``); none for a results file."""
    identity = watch_identity(results) if results.is_dir() else None
    if identity is None:
        return []
    root = identity.parent
    return _made_during(results, root, root / LATE_IMAGES_FILE, LATE_COLUMNS, "noted_at")


def _late_said(lines: list[dict[str, str]]) -> str | None:
    return f"{late_said(lines)} ({LATE_IMAGES_FILE})" if lines else None


def _made_during(
    folder: Path, root: Path, path: Path, columns: list[str], stamp: str
) -> list[dict[str, str]]:
    """The lines of the watch's file ``path`` made during the day or hour ``folder`` is
    (all of them for the watch's own folder)."""
    inside = folder.resolve().relative_to(root.resolve()).parts  # date=..., hour=...
    when = "T".join(part.partition("=")[2] for part in inside)  # 2026-12-04T07: a prefix
    return [line for line in whole_lines(path, columns) if line[stamp].startswith(when)]
