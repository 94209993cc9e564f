"""The backend table is complete, and everything that lists backends follows it."""

from __future__ import annotations

import click
import pytest

from psicbatch.cli import main
from psicbatch.engines.base import Engine
from psicbatch.engines.registry import BACKENDS, CPU_INT8_BACKENDS, PRECISIONS, SUPPORTED, backend
from psicbatch.errors import PsicbatchError


def choices(command: str, option: str) -> tuple[str, ...]:
    found = main.get_command(click.Context(main), command)
    assert found is not None
    parameter = next(p for p in found.params if p.name == option)
    assert isinstance(parameter.type, click.Choice)
    return tuple(parameter.type.choices)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_is_complete_and_offered_everywhere(name: str) -> None:
    entry = BACKENDS[name]
    assert issubclass(entry.load(entry.engine_class), Engine)
    assert callable(entry.load(entry.builder))
    assert entry.precisions and all(
        set(p) <= set(PRECISIONS) and p for p in entry.precisions.values()
    )
    assert set(entry.precisions) <= {"cpu", "cuda"}
    assert entry.packages and entry.modules
    assert SUPPORTED[name] == entry.precisions
    assert name in choices("build-engine", "backend")
    assert name in choices("cv", "engine_backend")
    assert not entry.cpu_int8 or "int8" in entry.precisions["cpu"]


def test_cpu_int8_runtimes_come_from_the_table_and_unknown_names_are_one_line() -> None:
    assert CPU_INT8_BACKENDS == ("openvino", "onnxruntime")  # fastest first
    with pytest.raises(PsicbatchError, match="unknown engine backend 'tflite'; known: "):
        backend("tflite", "engines/x")
