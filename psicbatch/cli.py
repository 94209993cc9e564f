"""The ``psicbatch`` command line. Commands stay thin: they parse options and call the library."""

from __future__ import annotations

from typing import Any

import click

from psicbatch import __version__
from psicbatch.commands import bench, engines, model, run, training
from psicbatch.commands.options import ARGV_KEY
from psicbatch.errors import PsicbatchError
from psicbatch.run.shutdown import exit_process


class _Group(click.Group):
    """Turns PsicbatchError into click's one-line 'Error: ...' with exit code 1, and keeps
    the arguments so reports can record the exact command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PsicbatchError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psicbatch")
def main() -> None:
    """Train, compile and run PSIC-Net for batch surface-defect inspection."""


for command in (
    model.init,
    model.info,
    training.synth,
    training.train,
    training.evaluate_command,
    training.cross_validate_command,
    engines.build_engine_command,
    engines.engines_command,
    run.run_command,
    run.report_command,
    bench.bench_command,
):
    main.add_command(command)


def entry() -> None:
    """The console script: ``main``, then an exit that never waits on stuck threads."""
    try:
        main.main()
        code = 0
    except SystemExit as exit_request:
        code = exit_request.code if isinstance(exit_request.code, int) else 1
        code = 0 if exit_request.code is None else code
    exit_process(code)
