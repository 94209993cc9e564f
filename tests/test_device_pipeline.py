"""The worker's device pipeline on the CPU: uint8 decoding, normalisation where the engine
runs, and the stream/event hand-offs between stages (no-ops here, the same code path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from psicbatch.assets import demo_model_path
from psicbatch.engines.spec import EngineSpec
from psicbatch.preprocess import Normalizer, Preprocessing, read_resized
from psicbatch.run import streams
from psicbatch.run.decode import PilDecoder
from psicbatch.run.options import RunOptions
from psicbatch.run.worker import Worker


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    paths = []
    for index, (height, width) in enumerate([(150, 110), (128, 128), (40, 300)]):
        paths.append(folder / f"{index}.png")
        Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).save(paths[-1])
    return paths


def float_input(paths: list[Path], preprocessing: Preprocessing) -> torch.Tensor:
    """The network input as the decoders made it before they handed over uint8: resized
    on the host, then scaled and normalised there in float32."""
    mean = torch.tensor(preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, -1, 1, 1)
    arrays = [read_resized(p, preprocessing.input_size, preprocessing.channels)[0] for p in paths]
    chw = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())
    return (chw.float() / 255.0 - mean) / std


def test_decoders_hand_over_uint8_and_normalising_after_upload_is_bit_exact(
    files: list[Path],
) -> None:
    preprocessing = Preprocessing((96, 64), mean=(0.4,), std=(0.22,))
    decoded = PilDecoder(preprocessing).decode(files)
    assert decoded.images is not None and decoded.images.dtype == torch.uint8
    normalised = Normalizer(preprocessing, "cpu")(decoded.images)
    assert torch.equal(normalised, float_input(files, preprocessing))


@pytest.fixture(scope="module")
def worker() -> Worker:
    spec = EngineSpec(checkpoint=demo_model_path(), precision="fp32")
    options = RunOptions(out=Path("unused.parquet"), decoder="pil", devices=("cpu",))
    return Worker(spec, options, "cpu", threads=1)


def test_the_worker_normalises_in_the_decoding_stage_and_keeps_pixels_until_rows(
    worker: Worker, files: list[Path]
) -> None:
    batch = worker._decode((0, list(enumerate(files))))
    preprocessing = worker.engine.manifest.engine_preprocessing()
    assert batch.images is not None and torch.equal(batch.images, float_input(files, preprocessing))
    assert batch.uploaded is None  # no streams on the CPU
    # The pixels are on the engine's device already (as DALI's GPU output is on a GPU):
    # the batch holds them until its rows are made, when its device work is done.
    assert batch.decoded is not None and batch.decoded.images is not None
    done = worker._make_rows(worker._postprocess(worker._infer(batch)))
    assert done.decoded is None and done.rows is not None


def test_every_stage_hands_its_batch_on_through_the_stream_helpers(
    worker: Worker, files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls a GPU run makes (marks and hand-overs) happen on the CPU too, per batch."""
    calls: list[str] = []
    mark, hand_over = streams.mark, streams.hand_over

    def recording_mark(stream: streams.Stream) -> streams.Event:
        calls.append("mark")
        return mark(stream)

    def recording_hand_over(event: streams.Event, stream: streams.Stream, *tensors) -> None:
        calls.append(f"hand over {len(tensors)}")
        hand_over(event, stream, *tensors)

    monkeypatch.setattr(streams, "mark", recording_mark)
    monkeypatch.setattr(streams, "hand_over", recording_hand_over)
    tasks = [(0, list(enumerate(files[:2]))), (1, [(2, files[2])])]
    results = list(worker.process(iter(tasks)))
    assert [number for number, _, _ in results] == [0, 1]
    assert all(len(rows) == len(task[1]) for (_, rows, _), task in zip(results, tasks, strict=True))
    # Per batch: the upload's mark; the inference stream takes the input and marks its
    # start and end; the post-processing stream takes both outputs.
    per_batch = ["mark", "hand over 1", "mark", "mark", "hand over 2"]
    assert sorted(calls) == sorted(per_batch * 2)
    assert calls.count("mark") == 6


def test_the_stream_helpers_do_nothing_without_a_gpu() -> None:
    tensor = torch.ones(3)
    assert streams.new_stream(torch.device("cpu")) is None and streams.mark(None) is None
    with streams.on(None):
        tensor.add_(1)
    streams.hand_over(None, None, tensor)
    streams.used_on(None, tensor)
    assert torch.equal(tensor, torch.full((3,), 2.0))
