"""Option types and option groups shared by several commands."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from psicbatch.checkpoint_file import check_checkpoint_file
from psicbatch.data.combined import SPLITS, WHOLE
from psicbatch.devices import DEVICE_HELP, DEVICES_HELP, resolve_device, run_devices
from psicbatch.engines.registry import PRECISION_CHOICES, TORCH_PRECISION_CHOICES
from psicbatch.errors import PsicbatchError
from psicbatch.network_size import MIN_NETWORK_SIZE, STRIDE
from psicbatch.paths import answering, named_path
from psicbatch.run.run_decisions import RunDecisions, run_decisions


class Bounded(click.ParamType):
    """A finite number within limits. click's own ranges let NaN through (every comparison
    with NaN is false), and infinities make no sense for any psicbatch option."""

    def __init__(
        self,
        kind: type = float,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
    ) -> None:
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.name = "integer" if kind is int else "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> float | int:
        try:
            number = self.kind(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(
                f"{value!r} is not a{'n' if self.kind is int else ''} {self.name}", param, ctx
            )
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        too_low = self.low is not None and (
            number <= self.low if self.low_open else number < self.low
        )
        if too_low or (self.high is not None and number > self.high):
            self.fail(f"{value!r} is not {self.describe()}", param, ctx)
        return number

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"<= {self.high:g}"


class Location(click.Path):
    """click's path type, looked at first within the read limit (``paths.answering``):
    click's own check of a path (its status) waited for ever on a share that stopped
    answering, before the command said a word."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        answering(os.fsdecode(value))
        return super().convert(value, param, ctx)


class EngineFolder(Location):
    """An engine folder. A file given for one is most often a checkpoint: the error says
    how this command takes a checkpoint (``checkpoint_usage``, with ``{path}``) instead of
    click's "Directory is a file"."""

    def __init__(self, checkpoint_usage: str, exists: bool = False) -> None:
        super().__init__(path_type=Path, exists=exists)
        self.name = "directory"  # the help's metavar: what is asked for, files answered
        self.checkpoint_usage = checkpoint_usage

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        path = Path(str(super().convert(value, param, ctx)))
        if path.is_file():
            self.fail(
                f"{path} is a file, not an engine folder from build-engine; "
                f"{self.checkpoint_usage.format(path=path)}",
                param,
                ctx,
            )
        return path


class CheckpointFile(Location):
    """A checkpoint to read, checked as far as it can be without torch while the
    arguments are parsed (``check_checkpoint_file``): a wrong path is said at once, as
    every command's errors are (one line, exit code 1)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, dir_okay=False)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        path = Path(str(super().convert(value, param, ctx)))
        check_checkpoint_file(path)
        return path


class OutputPath(Location):
    """A file or folder a command writes; ``.`` or ``..`` is taken as the folder it names
    (``named_path``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return named_path(Path(str(super().convert(value, param, ctx))))


RUN_CHECKPOINT = "a checkpoint runs with --model {path}"


POSITIVE = Bounded(float, 0, low_open=True)
AT_LEAST_ONE = Bounded(int, 1)


class Devices(click.ParamType):
    """``--device`` in the one syntax of ``psicbatch.devices``, resolved and checked when
    the command line is read: one device (``cpu`` or ``cuda:N``), or with ``several`` a
    tuple of them (empty for ``auto``, which a run and a watch resolve differently)."""

    name = "device"

    def __init__(self, several: bool = False) -> None:
        self.several = several

    def convert(self, value: Any, param: Any, ctx: Any) -> str | tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return run_devices(value) if self.several else resolve_device(value)
        except PsicbatchError as error:
            self.fail(str(error), param, ctx)


def device_option(several: bool = False) -> Callable:
    """``--device`` for every command; ``run`` (several workers) also takes GPU lists, and
    the spelling ``--devices``."""
    names = ("--device", "--devices") if several else ("--device",)
    return click.option(
        *names,
        "devices" if several else "device",
        type=Devices(several),
        default="auto",
        show_default=True,
        help=(
            f"{DEVICES_HELP} (auto: every visible GPU of the first one's kind, a worker "
            "each, else the CPU; a watch takes the first GPU)."
            if several
            else f"{DEVICE_HELP} (auto: the first GPU when one is visible, else the CPU)."
        ),
    )


NON_NEGATIVE_INT = Bounded(int, 0)
PROBABILITY = Bounded(float, 0, 1)


class TypeLimit(click.ParamType):
    """``TYPE=RATE``: a defect type's name and a share between 0 and 1."""

    name = "type=rate"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, float]:
        if isinstance(value, tuple):
            return value
        kind, equals, rate = str(value).rpartition("=")
        if not equals or not kind:
            self.fail(f"{value!r} is not TYPE=RATE (crack=0)", param, ctx)
        return kind, PROBABILITY.convert(rate, param, ctx)


TYPE_LIMIT = TypeLimit()


class SizeType(click.ParamType):
    """An image size written as HEIGHTxWIDTH, e.g. 1408x512; ``multiple`` and ``minimum``
    for sizes the network itself takes."""

    name = "HxW"

    def __init__(self, multiple: int = 1, minimum: int = 1) -> None:
        self.multiple, self.minimum = multiple, minimum

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            height, width = (int(part) for part in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r} is not a size like 1408x512 (height x width)", param, ctx)
        if height < 1 or width < 1:
            self.fail(f"{value!r}: height and width must be positive", param, ctx)
        if min(height, width) < self.minimum or height % self.multiple or width % self.multiple:
            self.fail(
                f"{value!r}: the network takes sizes that are multiples of {self.multiple}, "
                f"at least {self.minimum}x{self.minimum} (e.g. 512x512)",
                param,
                ctx,
            )
        return height, width


class AutoOr(click.ParamType):
    """``auto`` (given as None: the command chooses) or a value of ``kind``."""

    def __init__(self, kind: click.ParamType) -> None:
        self.kind = kind
        self.name = f"{kind.name}|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or value == "auto":
            return None
        return self.kind.convert(value, param, ctx)


SIZE = SizeType()
# Sizes the network is trained, built or measured at: three 2x2 poolings need multiples
# of STRIDE; below MIN_NETWORK_SIZE the classifier sees less than one pixel.
NETWORK_SIZE = SizeType(STRIDE, MIN_NETWORK_SIZE)


class TrainingSizeType(SizeType):
    """A training's input size, or ``auto``: the images' own (``network_size.fitted_size``),
    known once the dataset is read."""

    name = "HxW|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return value if value == "auto" else super().convert(value, param, ctx)


TRAINING_SIZE = TrainingSizeType(STRIDE, MIN_NETWORK_SIZE)


# What ``auto`` means, per use of a model (precision.choose_precision decides).
AUTO_PRECISION = {
    "checkpoint": "fp16 on a GPU; on a CPU bf16 where it is native and faster (timed "
    "where there is no AMX), else fp32",
    "training": "on a CPU bf16 where it is native and faster (timed where there is no AMX), "
    "else fp32; on a GPU bf16 (fp16 where it lacks bf16)",
    "engine": "on a CPU the fastest engine measured here (--tune), int8 candidates with "
    "--calib; TensorRT fp16 on a GPU",
    "scored": "torch as for a checkpoint, TensorRT fp16, ONNX Runtime and OpenVINO fp32 "
    "(int8 needs calibration images: build fold engines with build-engine --calib)",
}


def precision_option(use: str, flag: str = "--precision", what: str = "") -> Callable:
    """The one definition of a precision option; ``use`` is a key of AUTO_PRECISION."""
    choices = PRECISION_CHOICES if use in ("engine", "scored") else TORCH_PRECISION_CHOICES
    return click.option(
        flag,
        type=click.Choice(choices),
        default="auto",
        show_default=True,
        help=f"{what}auto: {AUTO_PRECISION[use]}.",
    )


def engine_options(command: Callable) -> Callable:
    """Which engine runs: a built engine folder, or a checkpoint run with the torch backend."""
    options = [
        click.option(
            "--engine",
            type=EngineFolder(RUN_CHECKPOINT),
            help="An engine folder from build-engine.",
        ),
        click.option(
            "--model",
            type=CheckpointFile(),
            help="A checkpoint, run with the torch backend (default: the bundled demo model).",
        ),
        precision_option("checkpoint", what="With --model: the precision the weights run in; "),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def decision_options(command: Callable) -> Callable:
    """How images are judged defective: the one definition of ``--threshold`` and
    ``--decisions`` (resolved by ``run.run_decisions``)."""
    options = [
        click.option(
            "--threshold",
            type=PROBABILITY,
            help="Image-level decision threshold in [0, 1] (default: the decisions stored with "
            "--engine, else the model's threshold).",
        ),
        click.option(
            "--decisions",
            "decisions_file",
            type=Location(path_type=Path, dir_okay=False, exists=True),
            help="A decision file from psicbatch calibrate: its threshold, minimum area and rule.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def chosen_decisions(
    decisions_file: Path | None, engine: Path | None, threshold: float | None, roi: Path | None
) -> RunDecisions:
    """The decisions and region the options of ``decision_options`` (and ``--engine``,
    ``--roi``) ask for."""
    if decisions_file and threshold is not None:
        raise click.BadParameter("give --threshold or --decisions, not both")
    return run_decisions(decisions_file, engine, threshold, roi)


def split_option(command: Callable) -> Callable:
    """The one definition of ``--split``: which part of a published train/test division."""
    return click.option(
        "--split",
        type=click.Choice(SPLITS),
        default=WHOLE,
        show_default=True,
        help="Of a dataset published with a train/test division (kolektorsdd2 and dagm: "
        "train/ and test/), read only this part; other folders are read whole.",
    )(command)


def need_group_by(part_images: int | None, group_by: str | None, timeout: bool = False) -> None:
    """Part options mean nothing without the pattern that makes parts."""
    for option, given in (("--part-images", part_images is not None), ("--part-timeout", timeout)):
        if given and group_by is None:
            raise click.BadParameter(f"{option} needs --group-by, which names a part's images")
