"""Click commands, one module per area; ``psicbatch.cli`` loads them as they are run.

Kept light (click only): the command line imports this package before it knows which
command runs.
"""

from __future__ import annotations

import shlex

import click

ARGV_KEY = "psicbatch.argv"


def command_line() -> str:
    """The command as typed, recorded in reports so results can be reproduced."""
    return "psicbatch " + shlex.join(click.get_current_context().meta.get(ARGV_KEY, []))
