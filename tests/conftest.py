"""Shared fixtures and marker handling: GPU and TensorRT tests skip where those are absent.

Under pytest-xdist (``make test`` runs one worker per core) each worker is pinned to its
own share of the CPUs before torch loads: psicbatch sizes its threads from the affinity
mask, so parallel workers (and the runs they start) never oversubscribe the cores.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _pin_this_worker() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = cpus[int(worker[2:]) % count :: count]
    if share and len(cpus) >= count:
        os.sched_setaffinity(0, share)


def _cache_bytecode() -> None:
    """Write compiled modules even where the environment says not to: the suite starts
    about 80 Python processes that import psicbatch, and each would otherwise
    compile every module of it again (about 0.3 s a process on 2 cores)."""
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


_pin_this_worker()
_cache_bytecode()

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.stalls import StallReads  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    no_tensorrt = pytest.mark.skip(reason="needs TensorRT (not installable on this machine)")
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        # Markers, not keywords: a parameter named "tensorrt" is no TensorRT test.
        if item.get_closest_marker("gpu") and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if item.get_closest_marker("tensorrt") and not has_tensorrt:
            item.add_marker(no_tensorrt)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def hung_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every worker's engine call waits until the test ends: a hung engine (a GPU that
    stopped answering) with nothing else wrong, for the tests of what notices it."""
    from psicbatch.run.worker import Worker

    release = threading.Event()
    infer = Worker._infer

    def hung_infer(worker: Worker, batch: Any) -> Any:
        release.wait()
        return infer(worker, batch)

    monkeypatch.setattr(Worker, "_infer", hung_infer)
    yield
    release.set()


@pytest.fixture
def stall_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[StallReads]:
    """``stall_reads(module, name, path)``: a call of ``module.name`` whose first argument
    is ``path`` waits until the test ends, as a read from a network share that stopped
    answering does; its other calls run as they are."""
    release = threading.Event()

    def stall(module: object, name: str, stalled: Path) -> None:
        read = getattr(module, name)

        def stalling(path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, str | os.PathLike) and Path(path) == stalled:
                release.wait(60)
            return read(path, *args, **kwargs)

        monkeypatch.setattr(module, name, stalling)

    yield stall
    release.set()


@pytest.fixture
def engine_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every worker's engine call runs out of GPU memory; the error's message."""
    from psicbatch.run.worker import Worker

    message = "CUDA out of memory. Tried to allocate 20.00 GiB"

    def out_of_memory(worker: Worker, batch: Any) -> Any:
        raise torch.cuda.OutOfMemoryError(message)

    monkeypatch.setattr(Worker, "_infer", out_of_memory)
    return message
