"""A watch's parts decided as their images are inspected (``run --watch --group-by``).

A line passes or rejects a part, often several images (its sides, its cameras), and acts
on the decision while the part is still on the line, not after the day's report. A part
is rejected as soon as one of its images is judged defective; decided once ``images`` of
them are inspected (passed, or unknown where one could not be inspected: ``verdict``);
and, where its images stop coming for ``timeout`` seconds before that, incomplete (or,
without a part size, decided on the images it has). Each decision is one line of
``OUT/_parts.csv`` (``job.PART_DECISIONS_FILE``), appended whole and flushed at once.

An image of a part already passed (or unknown, or incomplete) that comes after the
decision could have changed it: a camera slower than the timeout, a part imaged again. It
is inspected and written as any other, decides nothing more, and is one line of
``OUT/_late.csv`` (``job.LATE_IMAGES_FILE``) at once, with the decision the part would
now get on every image of it so far (``now``), so that the line can pull a passed part a
late image shows defective, or release an incomplete part whose last image came. An
image of a part already rejected changes nothing and is not noted.

A part is decided once, across restarts: on start the parts are rebuilt from the watch's
rows, the parts the file already holds are not decided again, and a part that became
decidable after its rows were written but before its line was (a kill between the two)
is decided then. Decided parts are held as the watch's ledger holds file versions (16
bytes each, again for those not rejected), so a week of a line's parts costs a few MiB.
A late image's line is made at the next start where a kill (or a full disk) came between
its row and its line: each batch's rows file names its late images in its metadata, with
how many lines the file of late images held before them (``LATE_ROWS``); only the last
batch written can lack its lines, since the watch stops at the first failure, and the
lines the file holds beyond that count are the ones made (unless a watch without
``--group-by`` ran in between: its batches, or its merging of the hour, hide that one).
"""

from __future__ import annotations

import datetime
import json
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from psicbatch.atomic import write_atomically
from psicbatch.data.splits import compiled_pattern
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path
from psicbatch.run.folder_scan import Ledger
from psicbatch.run.job import LATE_IMAGES_FILE, PART_DECISIONS_FILE, PART_OPTIONS_FILE
from psicbatch.run.output import watch_part_files, watch_tables
from psicbatch.run.part_files import DECISION_COLUMNS, LATE_COLUMNS, append, begin
from psicbatch.run.part_table import PATH_SEPARATOR, PartGrouping, part_of, verdict
from psicbatch.run.results import watch_identity
from psicbatch.run.spreadsheet import formula_safe

ROW_COLUMNS = ["path", "path_bytes", "is_defect", "error", "probability", "completed_at"]
DEFAULT_TIMEOUT = 60.0  # seconds without a new image before a part is decided as it is
# Decisions a late image could have changed, the commonest first (looked up in turn).
OPEN_DECISIONS = ("pass", "incomplete", "unknown")
# Incomplete parts whose images are kept, the latest decided, for a late image to complete
# (a misjudged --part-images makes every part incomplete: memory stays bounded).
INCOMPLETE_KEPT = 10_000
# A rows file's metadata: which of its rows are late images, and how many lines the file
# of late images held before theirs.
LATE_ROWS = b"psicbatch.late_rows"


@dataclass(frozen=True)
class WatchParts:
    """How a watch makes parts of its images, and how long a part may wait for them."""

    grouping: PartGrouping
    timeout: float = DEFAULT_TIMEOUT

    def options_text(self) -> str:
        images = "" if self.grouping.images is None else f" --part-images {self.grouping.images}"
        pattern = shlex.quote(self.grouping.pattern)  # as typed in a shell
        return f"--group-by {pattern}{images} --part-timeout {self.timeout:g}"


class _Image(NamedTuple):
    """What a part's decision needs of one of its images' results."""

    path: str
    judged: bool  # judged defective
    error: str | None  # why it was not inspected
    probability: float | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Image:
        error = row["error"]
        judged = bool(row["is_defect"]) and error is None
        return cls(row["path"], judged, error, None if error is not None else row["probability"])

    @property
    def errored(self) -> bool:
        return self.error is not None


@dataclass
class LateImages:
    """Images that came after their part was decided (not rejected), noted by this
    process: what the watch's status line counts."""

    images: int = 0
    judged_defective: int = 0
    changed: set[str] = field(default_factory=set)  # parts they would now decide otherwise


@dataclass
class _Part:
    """A part not yet decided: its images' last results, by exact path."""

    last_complete: datetime.datetime
    images: dict[bytes, _Image] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        self.images[row["path_bytes"]] = _Image.of(row)
        self.last_complete = max(self.last_complete, row["completed_at"])

    def decision(self, expected: int | None, timed_out: bool) -> str | None:
        """``verdict`` once it can be given: on a defect, on ``expected`` images, or on
        the images it has once they stopped coming; None while it waits."""
        judged = sum(image.judged for image in self.images.values())
        errors = sum(image.errored for image in self.images.values())
        images = len(self.images)
        if judged or timed_out or (expected is not None and images >= expected):
            return verdict(judged, errors, images, expected)
        return None


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class PartDecisions:
    """The parts of one watch folder: rebuilt from its rows, then kept as rows come."""

    def __init__(
        self, out: Path, parts: WatchParts, now: Callable[[], datetime.datetime] = _utc_now
    ) -> None:
        self.parts, self.now = parts, now
        self.pattern = compiled_pattern(parts.grouping.pattern)
        self.path = out / PART_DECISIONS_FILE
        self.late_path = out / LATE_IMAGES_FILE
        self.counts: Counter[str] = Counter()  # decisions made by this process
        self.late = LateImages()
        self._pending: dict[str, _Part] = {}
        self._decided = Ledger()  # every part decided
        self._open = {decision: Ledger() for decision in OPEN_DECISIONS}  # and not rejected
        self._incomplete: dict[str, _Part] = {}  # their images, the latest INCOMPLETE_KEPT
        self._late_seen: dict[str, tuple[bool, bool]] = {}  # late images: judged, errored
        self._late_lines_held = 0  # whole lines in the file of late images
        _claim_options(out, parts)
        self._hold((line["part"], line["decision"]) for line in begin(self.path, DECISION_COLUMNS))
        for line in begin(self.late_path, LATE_COLUMNS):
            self._remember_late(line["part"], line["is_defect"] == "true", bool(line["error"]))
            self._late_lines_held += 1
        self._rebuild(out)
        self._note_late(_lines_lost(out, self._late_lines_held))  # a kill kept them unmade

    def parts_of(self, rows: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
        """Each row's part and the part's decision so far (None: not decided): what
        ``add`` goes by, and what names a batch's late images (``late_metadata``) before
        its rows are written."""
        names = [self._part_of(row["path"]) for row in rows]
        return [(name, self._decision_of(name)) for name in names]

    def add(
        self, rows: list[dict[str, Any]], parts: list[tuple[str, str | None]] | None = None
    ) -> None:
        """A batch's rows (as written; ``parts``: ``parts_of`` them, where it was asked
        already): each into its part, then the decisions they make and those whose time
        ran out, then the late images among them."""
        touched, late = set(), []
        for row, (name, decision) in zip(rows, parts or self.parts_of(rows), strict=True):
            if decision is None:
                self._pending.setdefault(name, _Part(row["completed_at"])).add(row)
                touched.add(name)
            elif _is_open(decision):  # it could have decided otherwise
                late.append((row, name, decision))
        noted = self._late_lines(late)  # before deciding, which may let a kept part go
        self._decide(touched)
        self._append_late(*noted)

    def _note_late(self, rows: list[dict[str, Any]]) -> None:
        """Late images' lines, made again (their parts decided before them)."""
        parts = zip(rows, self.parts_of(rows), strict=True)
        late = [(row, name, decision) for row, (name, decision) in parts if _is_open(decision)]
        self._append_late(*self._late_lines(late))

    def _late_lines(
        self, late: list[tuple[dict[str, Any], str, str]]
    ) -> tuple[list[list[Any]], int]:
        """The lines of late images (each a row, its part and the part's decision), each
        with the decision its part would now get, and how many were judged defective."""
        lines, judged = [], 0
        for row, name, decision in late:
            image = _Image.of(row)
            self._remember_late(name, image.judged, image.errored)
            if name in self._incomplete:
                self._incomplete[name].add(row)
            decided_now = self._decision_now(name, decision)  # with this image
            if decided_now != decision:
                self.late.changed.add(name)
            lines.append(self._late_line(name, decision, decided_now, image))
            judged += image.judged
        return lines, judged

    def _append_late(self, lines: list[list[Any]], judged: int) -> None:
        if lines:
            append(self.late_path, lines)
            self._late_lines_held += len(lines)
            self.late.images += len(lines)
            self.late.judged_defective += judged

    def late_metadata(self, parts: list[tuple[str, str | None]]) -> dict[bytes, bytes]:
        """What a batch's rows file records of its late images (from ``parts_of`` its
        rows) before it is written, so that a restart makes the lines a kill kept from
        being made: which rows, and how many lines the file of late images held before
        theirs; nothing for a batch without late images."""
        late = [index for index, (_, decision) in enumerate(parts) if _is_open(decision)]
        if not late:
            return {}
        return {LATE_ROWS: json.dumps({"rows": late, "after": self._late_lines_held}).encode()}

    def _remember_late(self, name: str, judged: bool, errored: bool) -> None:
        """What the late images of a decided part showed so far: one judged defective,
        one not inspected."""
        key = formula_safe(name)  # as the file names it, where a restart reads it again
        earlier = self._late_seen.get(key, (False, False))
        self._late_seen[key] = (earlier[0] or judged, earlier[1] or errored)

    def _decision_now(self, name: str, decision: str) -> str:
        """The decision a part decided ``decision`` would now get on every image of it so
        far: an incomplete part's images are kept (the latest INCOMPLETE_KEPT; an older
        one stays incomplete unless a late image rejects it or was not inspected)."""
        expected = self.parts.grouping.images
        if name in self._incomplete:
            return self._incomplete[name].decision(expected, timed_out=True) or decision
        judged, errored = self._late_seen.get(formula_safe(name), (False, False))
        if decision == "incomplete":
            return verdict(judged, errored, 0, expected)
        return verdict(judged, errored or decision == "unknown", expected or 1, expected)

    def expire(self) -> None:
        """Decide the parts whose images stopped coming ``timeout`` seconds ago."""
        self._decide(set())

    def _part_of(self, path: str) -> str:
        return part_of(self.pattern, path)

    def _decision_of(self, name: str) -> str | None:
        """The part's decision, if it is decided."""
        key = _key(name)
        if key not in self._decided:
            return None
        return next((kind for kind, held in self._open.items() if key in held), "reject")

    def _hold(self, decided: Iterable[tuple[str, str]]) -> None:
        """Parts as decided, by name and decision: each ledger updated once (a restart
        holds a week's parts, and the ledger sorts its new entries in at each update)."""
        by_decision: dict[str, list[tuple[bytes, int, int]]] = defaultdict(list)
        for name, decision in decided:
            by_decision[decision].append(_key(name))
        for decision, keys in by_decision.items():
            self._decided.update(keys)
            if decision in self._open:
                self._open[decision].update(keys)

    def _decide(self, touched: set[str]) -> None:
        cutoff = self.now() - datetime.timedelta(seconds=self.parts.timeout)
        expected = self.parts.grouping.images
        lines, made = [], []
        for name, part in list(self._pending.items()):
            timed_out = part.last_complete <= cutoff
            if name not in touched and not timed_out:
                continue
            decision = part.decision(expected, timed_out)
            if decision is None:
                continue
            lines.append(self._line(name, part, decision))
            del self._pending[name]
            made.append((name, decision))
            self.counts[decision] += 1
            if decision == "incomplete":
                self._keep_incomplete(name, part)
        self._hold(made)
        if lines:
            append(self.path, lines)

    def _keep_incomplete(self, name: str, part: _Part) -> None:
        self._incomplete[name] = part
        if len(self._incomplete) > INCOMPLETE_KEPT:
            del self._incomplete[next(iter(self._incomplete))]  # the earliest decided

    def _line(self, name: str, part: _Part, decision: str) -> list[Any]:
        images = part.images.values()
        probabilities = [image.probability for image in images if image.probability is not None]
        return [
            self.now().isoformat(timespec="milliseconds"),
            formula_safe(name),
            decision,
            len(images),
            sum(image.judged for image in images),
            sum(image.errored for image in images),
            str(np.float32(max(probabilities))) if probabilities else "",  # as stored
            formula_safe(PATH_SEPARATOR.join(image.path for image in images if image.judged)),
        ]

    def _late_line(self, name: str, decision: str, decided_now: str, image: _Image) -> list[Any]:
        """An image of a part decided ``decision`` before it came, with the decision the
        part would now get (``is_defect`` empty where it could not be inspected)."""
        return [
            self.now().isoformat(timespec="milliseconds"),
            formula_safe(name),
            decision,
            decided_now,
            formula_safe(image.path),
            "" if image.errored else str(image.judged).lower(),
            formula_safe(image.error or ""),
            "" if image.probability is None else str(np.float32(image.probability)),
        ]

    def _rebuild(self, out: Path) -> None:
        """The parts not yet decided, from every row written so far, in the order their
        files were complete; then the decisions they allow (a restart after a kill decides
        them now). Rows of decided parts, nearly all of a long watch's, stay in Arrow."""
        waiting: list[dict[str, Any]] = []
        incomplete: list[dict[str, Any]] = []
        any_incomplete = len(self._open["incomplete"]) > 0  # else one look-up a part less
        for table in watch_tables(out, ROW_COLUMNS):
            names = [self._part_of(path) for path in table["path"].to_pylist()]
            undecided, kept = set(), set()  # each part looked up once, not once per image
            unique = list(set(names))
            keys = [_key(name) for name in unique]  # looked up together
            decided = self._decided.holds_each(keys)
            if any_incomplete:
                incomplete_now = self._open["incomplete"].holds_each(keys)
            else:
                incomplete_now = [False] * len(keys)
            for name, known, still_open in zip(unique, decided, incomplete_now, strict=True):
                if not known:
                    undecided.add(name)
                elif still_open:
                    kept.add(name)
            for wanted, found in ((undecided, waiting), (kept, incomplete)):
                if wanted:
                    found += table.filter(pa.array([n in wanted for n in names])).to_pylist()
        restored: dict[str, _Part] = {}
        for row in sorted(incomplete, key=lambda row: row["completed_at"]):  # late ones too
            restored.setdefault(self._part_of(row["path"]), _Part(row["completed_at"])).add(row)
        for name, part in sorted(restored.items(), key=lambda item: item[1].last_complete):
            self._keep_incomplete(name, part)  # in the order they were decided
        self.add(sorted(waiting, key=lambda row: row["completed_at"]))


def _is_open(decision: str | None) -> TypeGuard[str]:
    """A part decided so that a later image could change it (not rejected): such an
    image is late."""
    return decision in OPEN_DECISIONS


def _lines_lost(out: Path, lines_held: int) -> list[dict[str, Any]]:
    """The late images of the last rows file a watch wrote whose lines the file of late
    images lacks (it holds ``lines_held``): those past the lines it held before them."""
    files = watch_part_files(out)
    try:
        metadata = (pq.read_schema(files[-1]).metadata or {}) if files else {}
        if LATE_ROWS not in metadata:
            return []
        record = json.loads(metadata[LATE_ROWS])
        made = max(0, lines_held - int(record["after"]))
        missing = pa.array(record["rows"][made:], pa.int64())
        if not len(missing):
            return []
        return pq.read_table(files[-1], columns=ROW_COLUMNS).take(missing).to_pylist()
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return []  # a damaged file: named when the rows are read


def _key(name: str) -> tuple[bytes, int, int]:
    """A part's name as the ledger holds a file version (its name as the file shows it)."""
    return (formula_safe(name).encode("utf-8", "surrogateescape"), 0, 0)


def recorded_parts(out: Path) -> WatchParts | None:
    """How the watch at ``out`` makes its parts, where it decides them (``report`` counts
    its parts the same way unless told otherwise)."""
    record = out / PART_OPTIONS_FILE
    if not record.is_file():
        return None
    try:
        earlier = json.loads(record.read_text())
        return WatchParts(PartGrouping(**earlier["grouping"]), earlier["timeout"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PsicbatchError(f"{readable_path(record)}: cannot be read ({error})") from None


def recorded_grouping(results: Path) -> PartGrouping | None:
    """How the watch whose folder (or day or hour of it) ``results`` is made its parts,
    where it decides them: what counts a line's parts in ``report``, ``eval RESULTS
    --labels`` and ``calibrate RESULTS --labels --per-part`` unless ``--group-by`` is
    given. None for a results file, or a watch that decides no parts."""
    identity = watch_identity(results) if results.is_dir() else None
    parts = None if identity is None else recorded_parts(identity.parent)
    return None if parts is None else parts.grouping


def parts_pattern(results: Path, group_by: str | None) -> str | None:
    """``--group-by`` where given, else the pattern of the watch ``results`` is: a line's
    parts are audited as its watch made them."""
    recorded = recorded_grouping(results)
    return group_by if group_by is not None or recorded is None else recorded.pattern


def _claim_options(out: Path, parts: WatchParts) -> None:
    """Record how parts are made, or refuse a restart that makes them otherwise: its
    decisions would not be those of the parts the file already holds."""
    made = recorded_parts(out)
    if made is None:
        text = json.dumps(asdict(parts), indent=1) + "\n"
        write_atomically(out / PART_OPTIONS_FILE, lambda path: path.write_text(text))
    elif made != parts:
        raise PsicbatchError(
            f"{readable_path(out)}: its parts were decided with {made.options_text()}; "
            f"give the same, or another --out (now: {parts.options_text()})"
        )
