"""Shared fixtures and marker handling: GPU and TensorRT tests skip where those are absent."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    no_tensorrt = pytest.mark.skip(reason="needs TensorRT (not installable on this machine)")
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "tensorrt" in item.keywords and not has_tensorrt:
            item.add_marker(no_tensorrt)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
