"""The CSV files a watch that decides parts appends to, beside its results: one line per
part decided (``job.PART_DECISIONS_FILE``) and one per image that came after its part was
decided (``job.LATE_IMAGES_FILE``). A line system tails them, so each line is appended
whole, in one write, and flushed at once; a line a kill cut short is removed when the
watch starts again. Readers (``info``, the page) take whole lines only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path
from psicbatch.wording import counted

# A part's line, in ``report --parts-csv``'s table and (after when it was decided) here.
PART_COLUMNS = [
    "part",
    "decision",
    "images",
    "judged_defective",
    "errors",
    "largest_probability",
    "defective_images",  # the paths of those judged defective: what a reviewer looks at
]
DECISION_COLUMNS = ["decided_at", *PART_COLUMNS]
# A late image: the decision its part was given, and the one it would now get on every
# image of it so far.
LATE_COLUMNS = ["noted_at", "part", "decision", "now", "path", "is_defect", "error", "probability"]


def begin(path: Path, columns: Sequence[str]) -> Iterator[dict[str, str]]:
    """The lines ``path`` holds, one at a time (a week of a line's parts), before a watch
    appends to it: a file begun here (or one a kill left empty) gets its header, and a
    last line a kill cut short is removed."""
    data = path.read_bytes() if path.exists() else b""
    if not data:
        append(path, [list(columns)])
        return iter(())
    _check_header(path, data, columns)
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) < len(data):
        with path.open("r+b") as file:
            file.truncate(len(whole))
    return _rows(whole)


def whole_lines(path: Path, columns: Sequence[str]) -> Iterator[dict[str, str]]:
    """The lines ``path`` holds, one at a time, read only: none where there is no such
    file yet, and not a line a watch is writing (or a kill cut short)."""
    data = path.read_bytes() if path.is_file() else b""
    if not data:
        return iter(())
    _check_header(path, data, columns)
    return _rows(data[: data.rfind(b"\n") + 1])


def append(path: Path, lines: list[list[Any]]) -> None:
    """Whole lines, in one write, flushed: a reader tailing the file sees each as soon as
    it is made."""
    with path.open("a", encoding="utf-8", errors="surrogateescape", newline="") as file:
        file.write(_csv_text(lines))


def _check_header(path: Path, data: bytes, columns: Sequence[str]) -> None:
    if not data.startswith(_csv_text([list(columns)]).encode()):
        raise PsicbatchError(
            f"{readable_path(path)}: not a file of a watch's parts psicbatch writes"
        )


def _rows(data: bytes) -> Iterator[dict[str, str]]:
    return csv.DictReader(io.StringIO(data.decode("utf-8", "surrogateescape")))


def _csv_text(lines: list[list[Any]]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)
    return text.getvalue()


def late_said(lines: list[dict[str, str]]) -> str:
    """Late images counted in words: how many, how many judged defective, and how many
    parts their last line says would now be decided otherwise."""
    judged = sum(line["is_defect"] == "true" for line in lines)
    last = {line["part"]: line for line in lines}  # each part's latest line
    changed = sum(line["now"] != line["decision"] for line in last.values())
    return late_counts_said(len(lines), judged, changed)


def late_counts_said(images: int, judged: int, changed: int) -> str:
    """``3 late images (1 judged defective), 1 part now decided otherwise``: as the watch's
    status line and, from the file's lines, ``info`` and the page say it."""
    return (
        f"{counted(images, 'late image')} ({judged} judged defective), "
        f"{counted(changed, 'part')} now decided otherwise"
    )
