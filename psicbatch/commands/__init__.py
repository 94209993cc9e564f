"""Click commands, one module per area; ``psicbatch.cli`` loads them as they are run.

Kept light (click only): the command line imports this package before it knows which
command runs. A command module declares its options from modules that import no torch,
and imports its work (torch, engines, training) in the command's body: ``--help`` and
option errors answer at once instead of after the second torch takes to import.
"""

from __future__ import annotations

import shlex

import click

ARGV_KEY = "psicbatch.argv"
# A command that keeps work when a signal stops it says where (a callable in ctx.meta,
# asked at the stop: the line ``psicbatch.cli`` prints then).
STOP_NOTE_KEY = "psicbatch.stop_note"

# Each command's short help, what ``psicbatch --help`` lists: kept here, where listing them
# imports no command module (they import torch), so the listing answers at once.
SUMMARIES = {
    "bench": "Measure latency and throughput per image size and batch, with the machine's ceiling.",
    "build-engine": "Compile a checkpoint into an engine folder (engine file + manifest.json).",
    "calibrate": "Choose the image threshold for a target escape rate; write a decision file.",
    "cv": "k-fold cross-validation with grouped, stratified folds; reports in the paper's layout.",
    "engines": "List the engines built under ROOT (default: engines/).",
    "eval": "Score a checkpoint, an engine or a run's results on labelled images: paper's metrics.",
    "info": "Show a checkpoint, an engine folder, a run's results, an evaluation, decisions"
    " or a dataset.",
    "init": "Write an untrained (randomly initialised) checkpoint.",
    "report": "A self-contained HTML page of a run's results (or a CSV table, mask PNGs).",
    "run": "Inspect images: defect probability and RLE mask per image, written to Parquet.",
    "synth": "Generate a DAGM-like synthetic dataset (folder layout) with exact defect masks.",
    "train": "Train PSIC-Net on a labelled dataset (two-step mode by default).",
}


def command_line() -> str:
    """The command as typed, recorded in reports so results can be reproduced."""
    return "psicbatch " + shlex.join(click.get_current_context().meta.get(ARGV_KEY, []))
