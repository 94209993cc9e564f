"""Batches padded to a power of two where each new batch size costs a search or a
capture (engines on GPUs): the sizes an engine sees stay few, and the rows do not
change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psicbatch.assets import demo_model_path
from psicbatch.engines.base import Engine, padded_batch
from psicbatch.engines.build import BuildOptions, build_engine
from psicbatch.engines.loading import load_engine
from psicbatch.engines.null_engine import null_manifest
from psicbatch.engines.torch_engine import TorchEngine


class Recording(Engine):
    """Per-image outputs that depend on the image only; records the batch sizes run."""

    def __init__(self, largest: int, pads: bool) -> None:
        super().__init__(Path("recording"), null_manifest((16, 16), largest), torch.device("cpu"))
        self.pads, self.sizes = pads, []

    @property
    def pads_batches(self) -> bool:
        return self.pads

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.sizes.append(len(images))
        return images.mean(dim=(1, 2, 3)), torch.sigmoid(images)


def test_padded_sizes_are_powers_of_two_up_to_the_largest_batch() -> None:
    assert [padded_batch(n, 6) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]
    assert [padded_batch(n, 8) for n in (3, 5, 7, 8)] == [4, 8, 8, 8]


def test_padding_keeps_each_image_s_outputs_and_bounds_the_sizes_run() -> None:
    padded, plain = Recording(6, pads=True), Recording(6, pads=False)
    for count in range(1, 7):
        images = torch.randn(count, 1, 16, 16)
        probabilities, segmentation = padded.infer(images)
        expected = plain.infer(images)
        assert probabilities.shape == (count,) and segmentation.shape == (count, 16, 16)
        assert torch.equal(probabilities, expected[0]) and torch.equal(segmentation, expected[1])
    assert sorted(set(padded.sizes)) == [1, 2, 4, 6] and plain.sizes == [1, 2, 3, 4, 5, 6]


def test_the_network_s_outputs_for_an_image_do_not_depend_on_its_padding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo network (BatchNorm folded: no image sees another) padded as on a GPU."""
    options = BuildOptions(backend="torch", precision="fp32", max_batch=4, out=tmp_path / "e")
    engine = load_engine(build_engine(demo_model_path(), options)[0], "cpu")
    assert isinstance(engine, TorchEngine) and not engine.pads_batches  # CPUs: no padding
    images = torch.rand(3, 1, 128, 128)
    unpadded = engine.infer(images)
    monkeypatch.setattr(TorchEngine, "pads_batches", property(lambda self: True))
    padded = engine.infer(images)
    assert padded[1].shape == (3, 128, 128)
    for ours, theirs in zip(padded, unpadded, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
