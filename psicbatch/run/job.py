"""What makes a run the job it is, so that ``--resume`` continues that job or refuses.

An interrupted run records its identity in ``OUT.parts/_job.json``: the sources (resolved
to absolute paths, so ``imgs`` and ``/data/imgs`` are one source), the engine (backend,
precision and the sha256 of every file it runs), the thresholds, the mask mode, the
decoder and the preprocessing. Rows computed under one identity are never mixed with
rows computed under another.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psicbatch.atomic import write_atomically
from psicbatch.data.combined import WHOLE
from psicbatch.data.layouts import resolve_layout
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path

JOB_FILE = "_job.json"  # "_": Parquet readers of the folder pass over it
WATCH_JOB_FILE = "_watch.json"  # a --watch's identity, at the top of its output folder
# Beside it: its latest start's record, what a results file's metadata holds (``run_record``).
WATCH_RUN_FILE = "_watch_run.json"
WATCH_LOCK_FILE = "_watch.lock"  # held while a watch writes the folder (``output_lock``)
# With --group-by: the parts decided as their images came, one line each (``watch_parts``),
# the images that came after their part was decided, and how its parts are made. Their
# leading ``_`` keeps dataset readers of the folder off.
PART_DECISIONS_FILE = "_parts.csv"
LATE_IMAGES_FILE = "_late.csv"
PART_OPTIONS_FILE = "_parts.json"
# Field -> how a message names it, and the options that set it.
FIELDS = {
    "sources": ("the input sources", ""),
    "engine": ("the model or engine", ""),
    "thresholds": ("the thresholds and decision rule", "--threshold, --decisions"),
    "masks": ("the mask mode", "--masks"),  # one word each: named with their values
    "decoder": ("the decoder", "--decoder"),
    "preprocessing": ("the preprocessing", ""),
}


@dataclass(frozen=True)
class JobIdentity:
    sources: list[str]
    engine: dict[str, Any]
    thresholds: dict[str, Any]
    masks: str
    decoder: str
    preprocessing: dict[str, Any]

    def differences(self, other: JobIdentity) -> list[str]:
        """Descriptions of the fields in which ``other`` differs from this identity; a
        one-word field (the mask mode, the decoder) with both values, since ``auto`` may
        resolve to another decoder than it did (a newer psicbatch, DALI installed since)."""
        mine, theirs = _comparable(self), _comparable(other)
        return [
            _describe(name, mine[name], theirs[name])
            for name in FIELDS
            if mine[name] != theirs[name]
        ]

    def write(self, folder: Path, name: str = JOB_FILE) -> None:
        """Written whole or not at all: a run stopped as it wrote it leaves none."""
        # ensure_ascii keeps names that are not valid UTF-8 exact (as \\udcXX escapes).
        text = json.dumps(asdict(self), indent=1) + "\n"
        write_atomically(folder / name, lambda path: path.write_text(text))

    @classmethod
    def read(cls, folder: Path, name: str = JOB_FILE) -> JobIdentity | None:
        """The identity an interrupted run recorded; None when it recorded none."""
        path = folder / name
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as error:
            raise PsicbatchError(f"{path}: damaged job record ({error})") from None


def _describe(name: str, then: Any, now: Any) -> str:
    """``the decoder (--decoder; dali then, pil now)``: a field, its options and, for a
    one-word field, both values."""
    what, options = FIELDS[name]
    details = [options] if options else []
    if isinstance(then, str):
        details.append(f"{then} then, {now} now")
    return f"{what} ({'; '.join(details)})" if details else what


def _comparable(identity: JobIdentity) -> dict[str, Any]:
    """As JSON would give it back, so a fresh identity compares equal to a recorded one."""
    return json.loads(json.dumps(asdict(identity)))


def check_same_job(folder: Path, current: JobIdentity, name: str = JOB_FILE) -> None:
    """Refuse, in one line, to resume (or, for a watch, to write) into ``folder`` with
    another job's identity."""
    recorded = JobIdentity.read(folder, name)
    if recorded is None:
        raise PsicbatchError(
            f"{readable_path(folder)}: written by an older psicbatch without a job record, "
            "so it cannot be resumed safely; delete that folder to start over"
        )
    differing = ", ".join(recorded.differences(current))
    if differing and name == WATCH_JOB_FILE:
        raise PsicbatchError(
            f"{readable_path(folder)}: holds another watch's results: {differing} differ "
            "from this one's; give another --out, since a folder holds one job's results, "
            "read as one by its reports and audits"
        )
    if differing:
        raise PsicbatchError(
            f"{readable_path(folder)}: --resume must continue the same job, but "
            f"{differing} differ from the interrupted run's; use the same "
            "options, or another --out (or delete that folder to start over)"
        )


def resolved_sources(
    sources: Sequence[str], list_file: Path | None, layout: str | None = None, split: str = WHOLE
) -> list[str]:
    """Sources as absolute paths with links resolved; glob patterns made absolute; with a
    dataset ``layout``, each folder prefixed by it (its images only are the inputs), and
    by the ``split`` part where one was picked."""
    resolved = [
        os.path.realpath(source) if os.path.exists(source) else os.path.abspath(source)
        for source in sources
    ]
    if layout is not None:
        part = "" if split == WHOLE else f"{split} part:"
        resolved = [f"{resolve_layout(Path(source), layout)}:{part}{source}" for source in resolved]
    if list_file is not None:
        resolved.append("list:" + os.path.realpath(list_file))
    return resolved
