"""The ``psicbatch`` command line. Commands stay thin: they parse options and call the library."""

from __future__ import annotations

import errno
import importlib
import os
from pathlib import Path
from typing import Any

import click

from psicbatch import __version__
from psicbatch.commands import ARGV_KEY, STOP_NOTE_KEY, SUMMARIES
from psicbatch.cpus import limit_threads_to_quota
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path
from psicbatch.pixel_limit import max_pixels
from psicbatch.read_limit import read_seconds
from psicbatch.run.shutdown import Stopped, exit_process, raise_if_stopped, signals_stop

# Each command's module is imported when the command runs: a command (and every worker
# process a run spawns, which imports this module again) pays only for what it uses.
COMMANDS = {
    "bench": ("psicbatch.commands.bench", "bench_command"),
    "build-engine": ("psicbatch.commands.engines", "build_engine_command"),
    "calibrate": ("psicbatch.commands.calibrate", "calibrate_command"),
    "cv": ("psicbatch.commands.training", "cross_validate_command"),
    "engines": ("psicbatch.commands.engines", "engines_command"),
    "eval": ("psicbatch.commands.training", "evaluate_command"),
    "info": ("psicbatch.commands.model", "info"),
    "init": ("psicbatch.commands.model", "init"),
    "report": ("psicbatch.commands.report", "report_command"),
    "run": ("psicbatch.commands.run", "run_command"),
    "synth": ("psicbatch.commands.training", "synth"),
    "train": ("psicbatch.commands.training", "train"),
}


class _Group(click.Group):
    """Loads commands on demand (``COMMANDS``; ``--help`` lists them without loading any),
    turns PsicbatchError (and an OSError naming a file) into click's one-line 'Error: ...'
    with exit code 1, a stopping signal into one line and 128 + its number (after every
    ``finally`` on the way out ran), and keeps the arguments so reports can record the
    exact command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``SUMMARIES``: listing the commands imports none of them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUMMARIES[name]) for name in self.list_commands(ctx)])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            max_pixels()  # a bad limit is refused before any command (or worker) reads it
            read_seconds()
            limit_threads_to_quota()  # before any command loads torch
            with signals_stop():  # SIGTERM too unwinds: temporary folders and locks go
                try:
                    return super().invoke(ctx)
                except (PsicbatchError, OSError):
                    raise_if_stopped()  # a library's error that a stop caused is the stop
                    raise
        except Stopped as stop:
            note = ctx.meta.get(STOP_NOTE_KEY)
            click.echo(f"stopped by {stop}" + (f": {note()}" if note else ""), err=True)
            ctx.exit(stop.exit_code)
        except PsicbatchError as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            line = _refusal_line(error, ctx.invoked_subcommand)
            if line is None:
                raise
            raise click.ClickException(line) from None


# The system's refusals of a write: a full disk or quota, a file too large, a read-only mount.
WRITE_REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _refusal_line(error: OSError, command: str | None) -> str | None:
    """One line for a file the system refused where no check foresaw it (a disk that
    filled, a folder removed meanwhile): the file and the reason. A copy names the file it
    wrote (the second), and a refused write that names no file (an image library writing
    to an open file) says which command was writing. None: not the system's refusal, a
    bug, which keeps its traceback."""
    refused_write = error.errno in WRITE_REFUSALS
    name = (error.filename2 if refused_write else None) or error.filename
    if name is not None:
        return f"{readable_path(Path(os.fsdecode(name)))}: {error.strerror or error}"
    if refused_write:
        return f"{error.strerror} while psicbatch {command} wrote its output"
    return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psicbatch")
def main() -> None:
    """Train, compile and run PSIC-Net for batch surface-defect inspection."""


def entry() -> None:
    """The console script: ``main``, then an exit that never waits on stuck threads."""
    try:
        main.main()
        code = 0
    except SystemExit as exit_request:
        code = exit_request.code if isinstance(exit_request.code, int) else 1
        code = 0 if exit_request.code is None else code
    exit_process(code)
