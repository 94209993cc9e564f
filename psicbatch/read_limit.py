"""How long opening, reading and decoding one file from its path may take, for the
commands that read datasets (``train``, ``cv``, ``eval``, ``calibrate``, ``info``) and
the pages that show their images (a run has ``--decode-timeout`` instead); and, for
every command, how long the first look at a path the command line names, the listing
of a folder searched for files and the reading of a model, an engine's manifest or a
file's digest may take (``paths.answering``, ``folder_walk``, ``paths.read_in_time``).

A read from a network share that stopped answering waits in the kernel for ever, so each
file is read within this limit (``data.images``). 60 s is far above a camera image's
milliseconds, a 100-megapixel PNG's second or so and the 2 MB/s that reads the paper's
network's 128 MB checkpoint within it; a slower share (line-scan TIFFs over
a thin link) can be given more with ``PSICBATCH_READ_TIMEOUT``, an environment variable
as the pixel limit is.
"""

from __future__ import annotations

from psicbatch.environment import positive_number

VARIABLE = "PSICBATCH_READ_TIMEOUT"
DEFAULT_SECONDS = 60.0


def stalled(seconds: float) -> str:
    """What is wrong with a reading that ran past the limit of ``seconds``."""
    return _past(f"took longer than {seconds:g} s to read")


def unanswered(seconds: float) -> str:
    """What is wrong with a path that a look at (its status, its listing) did not come
    back from within ``seconds``."""
    return _past(f"did not answer within {seconds:g} s")


def _past(what: str) -> str:
    return f"{what} (a network share that stopped answering? set {VARIABLE} to wait longer)"


def read_seconds() -> float:
    """The limit in seconds, from the environment; a value that is not a positive number
    is a one-line error."""
    return positive_number(VARIABLE, DEFAULT_SECONDS, "seconds")
