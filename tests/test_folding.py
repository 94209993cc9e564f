"""BatchNorm folding keeps the network's outputs."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint
from psicbatch.engines.folding import fold_batchnorm
from psicbatch.engines.image_sets import synthetic_parity_images
from psicbatch.engines.parity import measure_parity, parity_problem
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.engines.torch_engine import WEIGHT_TYPES, TorchEngine
from psicbatch.model import ModelConfig, PSICNet


def with_random_statistics(model: PSICNet) -> PSICNet:
    """BatchNorm layers far from the identity, so a folding mistake cannot hide."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) * 3 + 0.1)
            module.weight.data.copy_(torch.randn(channels, generator=generator))
            module.bias.data.copy_(torch.randn(channels, generator=generator))
    return model.eval()


@pytest.mark.parametrize(
    "model",
    [
        lambda: load_checkpoint(demo_model_path()).build_model().eval(),
        lambda: with_random_statistics(PSICNet(ModelConfig(width=0.125))),
    ],
    ids=["demo", "random-statistics"],
)
def test_folded_network_computes_the_same_outputs(model) -> None:
    reference = model()
    folded = fold_batchnorm(copy.deepcopy(reference))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    images = torch.randn(2, 1, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = reference(images), folded(images)
    for a, b in zip(expected, got, strict=True):
        scale = a.abs().max().item()
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, scale)


def test_folding_refuses_a_model_in_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(PSICNet(ModelConfig(width=0.125)).train())


def test_the_same_graph_is_exported_once_per_process(tmp_path, monkeypatch) -> None:
    """A tuned build turns one exported graph into several candidates, and engines of
    the same checkpoint and size share it whatever their largest batch."""
    from psicbatch.engines import export

    calls = []

    def fake_export(checkpoint, path, size, dynamic, dtype):
        calls.append(size)
        path.write_bytes(f"graph {len(calls)}".encode())

    monkeypatch.setattr(export, "_export", fake_export)
    monkeypatch.setattr(export, "_last_export", {})

    def exported(name: str, size: tuple[int, int], sha: str | None) -> bytes:
        """The graph's bytes; ``sha`` None: no digest, so nothing is remembered."""
        path = tmp_path / name
        export.export_onnx(object(), path, size, True, checkpoint_sha256=sha)
        return path.read_bytes()

    assert exported("1.onnx", (64, 64), "sha-a") == exported("2.onnx", (64, 64), "sha-a")
    assert len(calls) == 1
    exported("3.onnx", (64, 96), "sha-a")
    exported("4.onnx", (64, 96), "sha-b")
    exported("5.onnx", (64, 96), None)  # without a checkpoint digest: always exported
    assert len(calls) == 4


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_half_precision_torch_engine_keeps_parity_on_the_demo_model(precision) -> None:
    """The GPU's torch engine (BatchNorm folded, fp16 or bf16 weights, channels_last)
    checked as every build checks an engine; the CPU runs the same engine code."""
    checkpoint = load_checkpoint(demo_model_path())
    fp32 = open_engine(EngineSpec(checkpoint=demo_model_path(), precision="fp32"), "cpu", 4)
    manifest = replace(fp32.manifest, precision=precision)
    engine = TorchEngine(demo_model_path().parent, manifest, torch.device("cpu"), demo_model_path())
    assert next(engine.model.parameters()).dtype == WEIGHT_TYPES[precision]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in engine.model.modules())
    images = synthetic_parity_images(checkpoint, manifest.input_size)[:8]
    parity = measure_parity(engine, checkpoint, images)
    assert parity_problem(parity) is None, parity
    assert parity["images_judged_defective"] >= 2  # masks were compared, not only decisions
