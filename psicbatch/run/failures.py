"""A worker's unexpected error (a CUDA out-of-memory error, an engine's own) as one line
naming the worker, as every command's errors are, instead of a traceback; running out of
memory says what needs less of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from psicbatch.errors import PsicbatchError, error_line

# How torch (CUDA, the CPU allocator) and ONNX Runtime say that memory ran out.
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "failed to allocate memory")


def worker_failure(worker: str, error: BaseException) -> str:
    """``WORKER failed: Type: message``, and what needs less memory where it ran out."""
    line = f"{worker} failed: {error_line(error)}"
    text = str(error).lower()
    if isinstance(error, MemoryError) or any(sign in text for sign in OUT_OF_MEMORY):
        line += "; a smaller --batch-size or fewer --workers need less memory"
    return line


@contextlib.contextmanager
def said_in_one_line(worker: str) -> Iterator[None]:
    """Within the block, an unexpected error becomes a ``PsicbatchError`` of one line
    (``worker_failure``); psicbatch's own errors pass as they are."""
    try:
        yield
    except PsicbatchError:
        raise
    except Exception as error:
        raise PsicbatchError(worker_failure(worker, error)) from error
