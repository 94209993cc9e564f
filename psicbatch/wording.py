"""Counts in words for the lines and pages people read: ``1 error``, ``3 errors``."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, in the plural unless one (the nouns counted take an s)."""
    return f"{count} {noun if count == 1 else noun + 's'}"


# A part decision as a count of them reads: "3 rejected, 117 passed".
DECISIONS_SAID = {
    "reject": "rejected",
    "pass": "passed",
    "unknown": "unknown",
    "incomplete": "incomplete",
}


def decisions_said(counts: dict[str, int]) -> str:
    """Part decisions counted, in ``DECISIONS_SAID``'s order: ``2 rejected, 5 passed``."""
    return ", ".join(
        f"{counts[kind]} {said}" for kind, said in DECISIONS_SAID.items() if counts.get(kind)
    )
