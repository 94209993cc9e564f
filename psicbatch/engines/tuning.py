"""Choosing a CPU engine by timing the candidates on this machine.

The fastest CPU engine differs by machine: torch bf16 wins on AVX-512 BF16 servers,
ONNX Runtime fp32 beat torch fp32 by 1.5x on an AVX2 PC until torch computed conv10 by
FFT, OpenVINO int8 beats ONNX Runtime int8 by 2x on VNNI machines, and without int8 dot
products no int8 engine beat torch fp32. Like TensorRT's tactic timing,
one level up: every candidate installed here is built, checked for parity with fp32 and
timed at the engine's input size and a run's batch, within a time budget; the fastest
that keeps parity wins. A candidate is started only while the budget lasts (the last one
started may end past it); candidates the budget does not reach are listed as skipped.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

import torch

from psicbatch import hardware
from psicbatch.engines.base import Engine
from psicbatch.engines.build_options import TUNE_SECONDS
from psicbatch.engines.registry import BACKENDS, installed_cpu_int8
from psicbatch.errors import PsicbatchError
from psicbatch.precision import cpu_auto
from psicbatch.run.shutdown import raise_if_stopped

TIMING_BATCH = 8  # the run's default batch size


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclass
class Trial:
    """One candidate's outcome: its time per image, or why it has none."""

    backend: str
    precision: str
    seconds_per_image: float | None = None
    outcome: str = "timed"  # or: failed parity, could not be built, skipped

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_candidates(calibrated: bool) -> list[Candidate]:
    """What can run here, likely winners first, since the budget may not reach the last
    (at the paper's size one candidate's build and timing can take a minute on a CPU).

    The float engines start with torch in the precision ``auto`` gives it here: it
    computes conv10 by FFT where that pays, which the ONNX graphs cannot, and was the
    fastest float engine at the CPU recipe's size on an AVX2 EPYC (ONNX Runtime and
    OpenVINO fp32 2.4-3x slower) and on an AVX-512 BF16 Xeon. int8, with calibration
    images, comes first where the CPU has int8 dot products (OpenVINO int8 2.3-3x torch
    bf16 on AVX-512 VNNI) and last where it has none (every int8 candidate 0.70-0.99x
    torch fp32 on that EPYC, benchmarks/results/cpu-int8-avx2-epyc/).
    """
    cpu = hardware.cpu_precisions()
    int8 = [Candidate(b, "int8") for b in installed_cpu_int8()] if calibrated else []
    floats = [Candidate("torch", "bf16")] if cpu.bf16 else []
    floats += [
        Candidate(name, "fp32")
        for name, entry in BACKENDS.items()
        if "fp32" in entry.precisions.get("cpu", ()) and entry.installed()
    ]
    preferred = Candidate("torch", cpu_auto().precision)
    floats.sort(key=lambda candidate: candidate != preferred)  # stable: the rest keep order
    return int8 + floats if cpu.int8_dot else floats + int8


Built = TypeVar("Built")


def tune(
    candidates: list[Candidate],
    build: Callable[[Candidate], Built],
    measure: Callable[[Built, float], float],
    budget: float = TUNE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[Trial], Built | None]:
    """Build and time each candidate while the budget lasts; the trials in order and
    the fastest build (None when no candidate was timed).

    ``build(candidate)`` returns a built engine or raises PsicbatchError (a failed parity
    check included); ``measure(built, seconds)`` times it within about ``seconds``.
    """
    started = clock()
    trials: list[Trial] = []
    best: tuple[float, Built] | None = None
    for number, candidate in enumerate(candidates):
        trial = Trial(candidate.backend, candidate.precision)
        trials.append(trial)
        left = budget - (clock() - started)
        if left <= 0:
            trial.outcome = "skipped: the time budget was spent (--tune-seconds)"
            continue
        try:
            built = build(candidate)
        except PsicbatchError as error:
            raise_if_stopped()  # Ctrl-C in an import read as "onnx is missing"
            trial.outcome = f"not used: {error}"
            continue
        share = max(budget - (clock() - started), 0.0) / (len(candidates) - number)
        trial.seconds_per_image = measure(built, share)
        if best is None or trial.seconds_per_image < best[0]:
            best = (trial.seconds_per_image, built)
    return trials, None if best is None else best[1]


def time_engine(engine: Engine, batch: int, size: tuple[int, int], seconds: float) -> float:
    """Median seconds per image over repeated batches (one warm-up first), at least one
    timed batch however short ``seconds`` is."""
    images = torch.rand(batch, engine.manifest.channels, *size)
    engine.infer(images)  # warm-up: first-call allocations and kernel choices
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while not times or (time.monotonic() < deadline and len(times) < 20):
        began = time.perf_counter()
        engine.infer(images)
        times.append((time.perf_counter() - began) / batch)
    return statistics.median(times)


def summary(trials: list[Trial], chosen: Trial) -> str:
    """The choice as one sentence, with how much faster it is than the runner-up."""
    timed = sorted(t.seconds_per_image for t in trials if t.seconds_per_image)
    text = (
        f"measured on this machine ({hardware.cpu_precisions().describe()}): the fastest of "
        f"{len(timed)} timed candidates, {1000 * (chosen.seconds_per_image or 0):.1f} ms/image"
    )
    if len(timed) > 1:
        text += f", {timed[1] / timed[0]:.2f}x the next"
    return text
