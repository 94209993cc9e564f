"""User-facing errors: anything the user can fix is raised as a PsicbatchError.

The CLI prints these as a single line (no traceback); every other exception is a bug.
"""


class PsicbatchError(Exception):
    """An error caused by input the user controls (a file, an option, the environment)."""


class CheckpointError(PsicbatchError):
    """A file that cannot be used as a psicbatch checkpoint."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


def error_line(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters of it), for a
    library's error quoted inside a one-line error."""
    text = str(error).strip()
    name = type(error).__name__
    return f"{name}: {text.splitlines()[0][:limit]}" if text else name
