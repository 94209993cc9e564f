"""The bundled demo model must really detect defects on synthetic data it has never seen."""

from __future__ import annotations

from pathlib import Path

import torch

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint
from psicbatch.data.layouts import read_dataset
from psicbatch.data.memory import load_into_memory
from psicbatch.data.synth import generate
from psicbatch.memory_inference import predict_batches
from psicbatch.metrics import average_precision


def test_demo_model_is_small_and_complete() -> None:
    path = demo_model_path()
    assert path.stat().st_size < 5 * 2**20
    checkpoint = load_checkpoint(path)
    assert checkpoint.training["complete"]
    assert checkpoint.preprocessing.input_size == (128, 128)


def test_demo_model_ap_on_fresh_synthetic_data(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(demo_model_path())
    generate(tmp_path, 120, (128, 128), defect_rate=0.35, seed=987654)  # unseen seed
    data = load_into_memory(read_dataset(tmp_path, "folder"), (128, 128), 1)
    model = checkpoint.build_model()
    probabilities = torch.cat(
        [
            p
            for _, p, _ in predict_batches(
                model, data.images, checkpoint.preprocessing, 32, torch.device("cpu"), "fp32"
            )
        ]
    )
    assert average_precision(data.labels.numpy(), probabilities.numpy()) >= 0.95
