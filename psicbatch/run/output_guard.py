"""Whether a command may write its output at a path, decided before any work starts.

An output is named as what it holds (a results file ``.parquet``, a report ``.html``, or
no suffix), and never replaces what psicbatch did not make: an input of the same command (an
image, the list file, the model or engine), a file of another kind, a device node or a
folder. An earlier psicbatch output of the same kind is replaced only with
``--overwrite`` (or by the ``--resume`` that continues it). The final rename checks the
kind again, so a file that appeared at the path during a long run is not replaced either.
An output where the file system takes no new file (a read-only mount, a folder without
write permission) is refused before the work too, not when its result is ready.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq

from psicbatch.atomic import write_atomically
from psicbatch.errors import PsicbatchError
from psicbatch.paths import file_head, input_key, looked_at, readable_path

REPORT_MARKER = b'<meta name="generator" content="psicbatch report">'


def is_results_file(path: Path) -> bool:
    """A Parquet file carrying psicbatch's results metadata."""
    from psicbatch.run.output import METADATA_KEY

    if not os.path.isfile(path):  # a named pipe would make the read wait for ever
        return False
    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # not Parquet, damaged, unreadable: not ours either way
        return False
    return METADATA_KEY in metadata


def is_report_file(path: Path) -> bool:
    """An HTML page written by ``psicbatch report`` (it carries REPORT_MARKER near the top)."""
    return REPORT_MARKER in file_head(path)


@dataclass(frozen=True)
class OutputKind:
    noun: str  # "results file", "report"
    option: str  # the option that names it, for messages
    recognise: Callable[[Path], bool]  # is an existing file of this kind
    file_format: str  # what it is written as
    suffixes: tuple[str, ...]  # the names it may have (besides none; empty: any), first shown


def _is_checkpoint(path: Path) -> bool:
    from psicbatch.checkpoint import is_checkpoint

    return is_checkpoint(path)


RESULTS = OutputKind("results file", "--out", is_results_file, "Parquet", (".parquet", ".pq"))
REPORT = OutputKind("report", "--html", is_report_file, "HTML", (".html", ".htm"))
CHECKPOINT = OutputKind("checkpoint", "--out", _is_checkpoint, "a torch.save archive", ())


def check_output(
    path: Path,
    kind: OutputKind,
    input_keys: Collection[bytes] = (),
    named_inputs: dict[str, Path | None] | None = None,
    overwrite: bool = False,
    earlier: str = "",
) -> None:
    """Refuse, in one line, an output path that must not be written.

    ``input_keys`` are the many inputs' ``paths.input_key`` (absolute paths, as the run
    already computed them to match rows); ``named_inputs`` are the few files
    and folders the command reads by name, e.g. {"the model": model.pt} (files compared
    as files, links and hard links included; a folder covers everything inside it).
    ``earlier`` says more of an earlier output found there (e.g. that its run finished).
    The checks look at the output and its folder within the read limit (``looked_at``):
    on a share that stopped answering after the command's first look they held it for
    ever, where no Ctrl-C is heard.
    """
    checks = partial(_check_output, path, kind, input_keys, named_inputs, overwrite, earlier)
    looked_at(path, checks)


def _check_output(
    path: Path,
    kind: OutputKind,
    input_keys: Collection[bytes],
    named_inputs: dict[str, Path | None] | None,
    overwrite: bool,
    earlier: str,
) -> None:
    shown = readable_path(path)
    status = _status(path, shown)
    for what, named in (named_inputs or {}).items():
        if named is not None and _is_or_inside(path, status, Path(named)):
            where = f"inside {what}" if os.path.isdir(named) else what
            raise PsicbatchError(
                f"{shown}: is {where}, which this command reads; choose another {kind.option}"
            )
    if input_key(path) in input_keys:
        raise PsicbatchError(f"{shown}: is one of the input images; choose another {kind.option}")
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise PsicbatchError(
            f"{shown}: exists and is not a regular file; {kind.option} must name a file "
            f"psicbatch may create or replace"
        )
    if status is not None and not kind.recognise(path):
        raise PsicbatchError(
            f"{shown}: exists and is not a psicbatch {kind.noun}; refusing to replace it "
            f"(choose another {kind.option})"
        )
    if kind.suffixes and path.suffix and path.suffix.lower() not in kind.suffixes:  # not a .csv
        raise PsicbatchError(
            f"{shown}: a psicbatch {kind.noun} is {kind.file_format}, not {path.suffix}; "
            f"name it *{kind.suffixes[0]}"
        )
    if status is not None and not overwrite:
        raise PsicbatchError(
            f"{shown}: holds an earlier psicbatch {kind.noun}{earlier}; pass --overwrite to "
            f"replace it, or choose another {kind.option}"
        )
    check_writable(path.parent, path, f"choose another {kind.option}")


def check_writable(folder: Path, output: Path, advice: str) -> None:
    """Refuse, in one line, an output whose ``folder`` (or, where it is still to be made,
    the nearest folder above it) cannot take a new file: a read-only file system or a
    folder without write permission found only at the end would cost the work before it,
    such as hours of training. A file is created there and removed (unnamed where the
    file system allows), so the answer is the file system's own, for permissions and
    read-only mounts alike; it says nothing of free space, which an empty file needs none
    of."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PsicbatchError(
            f"{readable_path(output)}: cannot be written ({readable_path(existing)}: "
            f"{error.strerror or error}); {advice}"
        ) from None


def check_output_folder(folder: Path, marker: str, noun: str, option: str = "--out") -> None:
    """Refuse, in one line, a folder of other files as the folder of a command that
    writes several (eval, cv, bench, synth). It may be new, empty, or an earlier one of
    its kind, known by ``marker`` in it: its files are then replaced, nothing else in it
    is touched."""
    if folder_entries(folder, option) and not (folder / marker).is_file():
        raise PsicbatchError(
            f"{readable_path(folder)}: holds files and is not an earlier psicbatch {noun} "
            f"(no {marker}); choose another {option}, or an empty folder"
        )
    check_writable(folder, folder, f"choose another {option}")


def folder_entries(folder: Path, option: str) -> list[str]:
    """The names in an output folder (none where it does not exist yet), or a one-line
    error when the path is something else."""
    shown = readable_path(folder)
    try:
        return sorted(entry.name for entry in folder.iterdir())
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        _status(folder, shown)  # a file above it is "a part of this path is not a folder"
        raise PsicbatchError(
            f"{shown}: exists and is not a folder; choose another {option}"
        ) from None
    except OSError as error:
        raise PsicbatchError(f"{shown}: cannot be read ({error.strerror or error})") from None


def write_checked(
    path: Path, kind: OutputKind, write: Callable[[Path], object], kept: str = ""
) -> None:
    """``write`` the output under a temporary name beside ``path``, then rename it over
    nothing or a file of ``kind``; a failure is one line (ending in ``kept``, what is
    still there) and leaves no temporary file."""
    try:
        write_atomically(
            path, write, rename=lambda temporary, _: replace_checked(temporary, path, kind)
        )
    except OSError as error:
        raise PsicbatchError(
            f"{readable_path(path)}: cannot write the {kind.noun} ({error.strerror or error})"
            + kept
        ) from None


def replace_checked(temporary: Path, path: Path, kind: OutputKind) -> None:
    """Rename ``temporary`` to ``path``, only over nothing or a file of ``kind``."""
    status = _status(path, readable_path(path))
    if status is not None and not (stat.S_ISREG(status.st_mode) and kind.recognise(path)):
        raise PsicbatchError(
            f"{readable_path(path)}: a file that is not a psicbatch {kind.noun} appeared "
            "there while psicbatch worked; not replaced"
        )
    os.replace(temporary, path)


def _status(path: Path, shown: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise PsicbatchError(f"{shown}: a part of this path is not a folder") from None
    except OSError as error:
        raise PsicbatchError(f"{shown}: cannot be checked ({error.strerror or error})") from None


def _is_or_inside(path: Path, status: os.stat_result | None, other: Path) -> bool:
    if os.path.isdir(other):
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(other))
    if status is None:
        return os.path.abspath(path) == os.path.abspath(other)
    try:
        other_status = os.stat(other)
    except OSError:
        return False
    return (status.st_dev, status.st_ino) == (other_status.st_dev, other_status.st_ino)
