"""How long the DALI decoder may read, then decode, a whole batch before each of its
files is tried alone.

DALI decodes a batch in one call (and the batch's files are read in one call: a thread
per file would cost more than most reads), so a file that stalls can only be noticed by
timing the batch. Giving a batch ``--decode-timeout`` once per file would let one
stalled file hold its worker for that many timeouts: 8 minutes at batch 8 and the
default 60 s, and from batch 9 on past the default ``--batch-timeout``, which stops the
run as hung (and its resume, at the same file). So a batch gets one file's limit for its
slowest file plus, for the rest, a generous multiple of the slowest pace seen so far
(before any batch was timed, the limit once more); never more than the limit once per
file. A stalled file then costs two or three timeouts (its batch's, then its own alone).
A healthy batch that overruns loses only time: its files are read or decoded again one
at a time, each within the limit (and the pace of those decoded raises later budgets).
"""

from __future__ import annotations

from dataclasses import dataclass

SLACK = 4.0  # times the slowest pace seen: room for a busier machine, larger files


@dataclass
class BatchBudget:
    """A decoder's budget for its batches, from the per-file limit and the pace seen."""

    file_seconds: float  # --decode-timeout
    slowest_pace: float | None = None  # seconds per file, over the batches timed so far

    def seconds(self, files: int) -> float:
        """The time ``files`` files may take together."""
        pace = self.slowest_pace
        rest = self.file_seconds if pace is None else SLACK * files * pace
        return min(self.file_seconds * files, self.file_seconds + rest)

    def record(self, seconds: float, files: int) -> None:
        """A batch of ``files`` decoded in ``seconds``, within its budget."""
        pace = seconds / files
        self.slowest_pace = pace if self.slowest_pace is None else max(pace, self.slowest_pace)
