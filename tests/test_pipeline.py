"""The run pipeline's machinery: overlapped stages, hung workers, device planning,
the DALI GPU graph and the metadata of the engine that runs."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from psicbatch.assets import demo_model_path
from psicbatch.engines.ort_engine import providers_for
from psicbatch.engines.spec import EngineSpec, describe_engine
from psicbatch.errors import PsicbatchError
from psicbatch.precision import cpu_auto
from psicbatch.preprocess import Preprocessing
from psicbatch.run.executors import PROGRESS, receive, worker_environment
from psicbatch.run.heartbeat import Heartbeat, TileProgress, Tiles
from psicbatch.run.runner import RunOptions, describe_run, worker_devices
from psicbatch.run.stages import StageTimeout, staged


def test_stages_overlap_and_keep_order() -> None:
    """Three stages of 0.1 s each on 6 items: overlapped, well under the serial 1.8 s."""
    active, most = [0], [0]
    lock = threading.Lock()

    def slow(value: int) -> int:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        return value

    chain = staged(staged(staged(range(6), slow), slow), slow)
    assert list(chain) == list(range(6))
    assert most[0] >= 2  # different items were in different stages at once


def test_a_stage_with_workers_works_on_consecutive_items_at_once_in_order() -> None:
    """Items meet in pairs at a barrier (one worker would wait there for ever), and
    finish in shuffled order: the results still come in the items' order."""
    pairs = threading.Barrier(2, timeout=2)

    def paired(value: int) -> int:
        pairs.wait()
        time.sleep(0.01 * (value % 3))
        return value

    assert list(staged(range(8), paired, workers=2)) == list(range(8))
    pairs.reset()
    with pytest.raises(threading.BrokenBarrierError):
        list(staged(range(2), paired, workers=1))


@pytest.mark.parametrize("workers", [1, 3])
def test_a_stage_error_reaches_the_consumer(workers: int) -> None:
    def fail(value: int) -> int:
        if value == 2:
            raise ValueError("bad item")
        return value

    with pytest.raises(ValueError, match="bad item"):
        list(staged(range(5), fail, workers=workers))


def test_an_error_of_the_items_reaches_the_consumer() -> None:
    def items():
        yield 1
        raise RuntimeError("upstream failed")

    with pytest.raises(RuntimeError, match="upstream failed"):
        list(staged(items(), lambda value: value, workers=2))


def stage_threads(name: str) -> list[str]:
    """The threads still alive of the stages whose names begin with ``name``."""
    return [t.name for t in threading.enumerate() if t.name.startswith(f"psicbatch-{name}")]


def threads_left_after(name: str, seconds: float = 5) -> list[str]:
    """``stage_threads(name)`` once they have ended, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while stage_threads(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    return stage_threads(name)


def test_a_consumer_that_stops_early_stops_the_stage_threads() -> None:
    results = staged(range(100), lambda value: value, name="early", workers=3)
    assert next(results) == 0
    assert len(stage_threads("early")) == 4  # the producer and three workers
    results.close()
    assert threads_left_after("early") == []


def test_a_chain_of_stages_stopped_by_an_error_ends_its_threads_while_the_error_is_held() -> None:
    """A consumer that stops on an error and keeps it (a caller holding the exception, or
    a test's ``pytest.raises``) keeps its frames, and with them the generators of the
    stages below the last: each stage closes its items when it stops, so the threads of
    every stage end, not only those of the last."""

    def consume() -> None:
        decoded = staged(range(100), lambda value: value, name="chain-decoding", workers=2)
        inferred = staged(decoded, lambda value: value, name="chain-inference")
        for value in staged(inferred, lambda value: value, name="chain-rows"):
            if value == 3:
                raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped") as held:
        consume()
    assert threads_left_after("chain") == [] and held.traceback  # the frames are still held


def test_a_hung_stage_times_out_with_a_clear_error() -> None:
    hang = threading.Event()
    with pytest.raises(
        StageTimeout, match=r"no inference result within 1 s; the worker may be hung"
    ):
        list(staged(range(3), lambda v: hang.wait(), timeout=1.0, name="inference"))
    hang.set()


def test_a_stage_that_beats_its_heartbeat_may_take_longer_than_the_timeout() -> None:
    """A result that takes 2.5 s, beating every 0.2 s, within a 1 s timeout: slow work
    that moves on. Once the beats stop, the silence times out."""
    heartbeat = Heartbeat()
    stop_beating = threading.Event()

    def slow(value: int) -> int:
        for _ in range(1 if value else 12):
            time.sleep(0.2)
            heartbeat.beat()
        if value:
            stop_beating.wait()
        return value

    results = staged(range(2), slow, timeout=1.0, name="batch", heartbeat=heartbeat)
    assert next(results) == 0
    began = time.monotonic()
    with pytest.raises(StageTimeout, match=r"no batch result and no progress within 1 s"):
        next(results)
    assert 1.0 <= time.monotonic() - began < 3.0
    stop_beating.set()


def test_the_first_result_may_take_its_own_longer_timeout() -> None:
    """Workers that open their engine as they start: the first batch waits longer."""

    hang = threading.Event()

    def slow_first(value: int) -> int:
        if value == 0:
            time.sleep(1.5)
        if value == 2:
            hang.wait()
        return value

    results = staged(range(3), slow_first, timeout=1.0, name="batch", first_timeout=3.0)
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(StageTimeout, match=r"no batch result within 1 s"):
        next(results)
    hang.set()


def test_a_hung_worker_process_times_out_with_a_clear_error() -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=time.sleep, args=(30,), daemon=True)
    worker.start()
    try:
        began = time.monotonic()
        with pytest.raises(
            PsicbatchError, match=r"no result or progress from any worker for 2 s.*batch 7"
        ):
            receive(results, [worker], 2.0, "batch 7")
        assert time.monotonic() - began < 10
    finally:
        worker.terminate()


def _progress_then_result(results: Any, beats: int) -> None:
    results.put("ready")
    for beat in range(beats):
        results.put((PROGRESS, 1, Tiles(beat + 1, beats + 1, 0.5)))
        time.sleep(0.3)
    results.put((PROGRESS, 1, None))
    results.put((0, [], {}))


def test_a_worker_process_telling_of_progress_is_waited_for() -> None:
    """Progress for 3 s, then a batch's result, within a 1 s timeout: the result comes,
    and the tiles the worker told of were passed on."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=_progress_then_result, args=(results, 10), daemon=True)
    worker.start()
    told: list[Tiles] = []
    try:
        assert receive(results, [worker], 60.0, "its start") == "ready"
        began = time.monotonic()
        tiles = TileProgress(told.append)
        assert receive(results, [worker], 1.0, "batch 0", tiles) == (0, [], {})
        assert time.monotonic() - began > 1.0
    finally:
        worker.terminate()
    assert told == [Tiles(beat, 11, 0.5) for beat in range(1, 11)] + [None]


def test_a_heartbeat_tells_a_tiled_batchs_start_and_end_at_once() -> None:
    """Between them, at most every ``every`` seconds; the end is told even right after
    another tell, so no finished batch's count lingers."""
    told: list[Tiles] = []
    heartbeat = Heartbeat(told.append, every=60.0)
    heartbeat.beat()  # the first beat is told
    for done in (4, 8, 12, 16):
        heartbeat.tiles_inferred(done, 16, images=2)
    heartbeat.beat()
    heartbeat.tiles_inferred(3, 3, images=3)  # a batch in one engine call: nothing under way
    assert told == [None, Tiles(4, 16, 0.5), None]
    assert heartbeat.tiles is None


def test_tile_progress_sums_the_workers_and_tells_changes_only() -> None:
    told: list[Tiles] = []
    tiles = TileProgress(told.append)
    tiles.tell(0, Tiles(4, 16, 0.5))
    tiles.tell(1, Tiles(8, 32, 2.0))
    tiles.tell(1, Tiles(8, 32, 2.0))
    tiles.tell(0, None)
    tiles.tell(0, None)
    tiles.tell(1, None)
    tiles.tell(2, Tiles(1, 16, 0.5))
    tiles.clear()
    tiles.clear()
    assert told[:4] == [Tiles(4, 16, 0.5), Tiles(12, 48, 2.5), Tiles(8, 32, 2.0), None]
    assert told[4:] == [Tiles(1, 16, 0.5), None]  # cleared once


def test_the_driver_hears_ray_actors_progress_from_their_board() -> None:
    """The driver's reading of the board (a stand-in for Ray here): a moved count beats
    the heartbeat and says the actors are at work, the actors' tiles are summed, and
    nothing is left under way on the way out."""
    from psicbatch.run.ray_progress import beats_from

    readings = iter(
        [
            (0, {}),  # the actors are opening their engines
            (1, {}),  # at work: a batch decoded
            (2, {"a": Tiles(4, 16, 1.0)}),
            (3, {"a": Tiles(8, 16, 2.0), "b": Tiles(2, 8, 0.5)}),
        ]
    )
    last = (3, {"a": Tiles(8, 16, 2.0), "b": Tiles(2, 8, 0.5)})
    board = SimpleNamespace(read=SimpleNamespace(remote=lambda: next(readings, last)))
    ray = SimpleNamespace(get=lambda reading, timeout: reading)
    heartbeat, told = Heartbeat(), []
    began = heartbeat.last
    with beats_from(ray, board, heartbeat, 0.01, TileProgress(told.append)):
        deadline = time.monotonic() + 10
        while Tiles(10, 24, 2.5) not in told and time.monotonic() < deadline:
            time.sleep(0.01)
    assert heartbeat.last > began
    assert told[:2] == [None, Tiles(4, 16, 1.0)]  # at work, then the first tiles
    assert Tiles(10, 24, 2.5) in told and told[-1] is None


def test_a_worker_killed_by_a_signal_is_named_by_it() -> None:
    """SIGKILL, unasked, is most often the kernel's out-of-memory killer: the error says
    so, and what needs less memory."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=time.sleep, args=(30,), daemon=True)
    worker.start()
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(10)
    with pytest.raises(PsicbatchError, match=r"stopped unexpectedly \(killed by SIGKILL, as"):
        receive(results, [worker], 5.0, "batch 1")


def test_each_spawned_gpu_worker_sees_only_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert worker_environment("cuda:1") == ({"CUDA_VISIBLE_DEVICES": "1"}, "cuda:0")
    assert worker_environment("cuda:0") == ({"CUDA_VISIBLE_DEVICES": "0"}, "cuda:0")
    assert worker_environment("cpu") == ({}, "cpu")


def test_gpu_numbers_count_within_a_schedulers_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM or Kubernetes gave this job GPUs 2 and 3 (or two by UUID): cuda:1 is the
    second of those, never the machine's GPU 1."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert worker_environment("cuda:0") == ({"CUDA_VISIBLE_DEVICES": "2"}, "cuda:0")
    assert worker_environment("cuda:1") == ({"CUDA_VISIBLE_DEVICES": "3"}, "cuda:0")
    uuids = "GPU-5c0e0a9e-1111-2222-3333-444455556666, GPU-77aa0b1c-aaaa-bbbb-cccc-ddddeeeeffff"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", uuids)
    assert worker_environment("cuda:1")[0] == {
        "CUDA_VISIBLE_DEVICES": "GPU-77aa0b1c-aaaa-bbbb-cccc-ddddeeeeffff"
    }
    with pytest.raises(PsicbatchError, match=r"cuda:2: this process sees 2 GPU\(s\)"):
        worker_environment("cuda:2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(PsicbatchError, match="sees 0 GPU"):
        worker_environment("cuda:0")


def test_worker_plan_allows_several_workers_per_gpu(tmp_path: Path) -> None:
    options = RunOptions(out=tmp_path / "r.parquet", devices=("cuda:0", "cuda:1"), workers=2)
    assert worker_devices(options) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    cpu = RunOptions(out=tmp_path / "r.parquet", devices=("cpu",), workers=3)
    assert worker_devices(cpu) == ["cpu"] * 3


def test_onnxruntime_gets_the_workers_device_id() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = providers_for(torch.device("cuda:1"), available)
    assert providers[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert providers_for(torch.device("cpu"), available) == ["CPUExecutionProvider"]


def test_a_gpu_onnxruntime_engine_without_the_cuda_provider_is_one_clear_error() -> None:
    with pytest.raises(PsicbatchError, match=r"needs ONNX Runtime's CUDA provider") as raised:
        providers_for(torch.device("cuda:0"), ["CPUExecutionProvider"])
    assert "psicbatch[onnx-gpu]" in str(raised.value) and "\n" not in str(raised.value)
    from psicbatch.engines.registry import SUPPORTED

    assert "int8" not in SUPPORTED["onnxruntime"]["cuda"]  # the CUDA provider runs it in float


def test_tensorrt_reads_the_current_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from psicbatch.engines import tensorrt_engine

    class Properties:
        def __init__(self, index: int) -> None:
            self.name, self.major, self.minor = f"GPU{index}", 9, index

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_properties", Properties)
    assert tensorrt_engine.current_gpu() == ("GPU3", "9.3")
    assert tensorrt_engine.current_gpu(torch.device("cuda:1")) == ("GPU1", "9.1")


def test_tensorrt_engine_refuses_the_cpu(tmp_path: Path) -> None:
    from psicbatch.engines.null_engine import null_manifest
    from psicbatch.engines.tensorrt_engine import TensorRTEngine

    with pytest.raises(PsicbatchError, match="CUDA GPU only"):
        TensorRTEngine(tmp_path, null_manifest((64, 64), 2), torch.device("cpu"), tmp_path)


def test_torch_engine_runs_on_the_runs_device_not_the_builds(tmp_path: Path) -> None:
    from psicbatch.engines.build import BuildOptions, build_engine
    from psicbatch.engines.loading import load_engine

    options = BuildOptions(backend="torch", precision="fp32", max_batch=2, out=tmp_path / "e")
    directory, manifest = build_engine(demo_model_path(), options)
    assert "device" not in manifest.backend_details
    assert load_engine(directory, "cpu").device == torch.device("cpu")
    assert load_engine(directory, "meta").device == torch.device("meta")


def test_metadata_for_model_on_gpu_describes_the_gpu_engine(tmp_path: Path) -> None:
    """``--model ... --device 0`` records fp16 on cuda:0, as the workers run it."""
    spec = EngineSpec(checkpoint=demo_model_path())
    options = RunOptions(out=tmp_path / "r.parquet", devices=("cuda:0",))
    info = describe_run(spec, options, worker_devices(options))
    assert info["devices"] == ["cuda:0"]
    assert info["manifest"]["precision"] == "fp16" and info["manifest"]["backend"] == "torch"
    cpu = RunOptions(out=tmp_path / "r.parquet", devices=("cpu",))
    native = cpu_auto().precision  # bf16 where the CPU has it natively, else fp32
    assert describe_run(spec, cpu, worker_devices(cpu))["manifest"]["precision"] == native
    assert describe_engine(spec, "cpu", 4).max_batch == 4


def test_dali_gpu_pipeline_graph_can_be_defined_without_a_gpu() -> None:
    pytest.importorskip("nvidia.dali")
    from psicbatch.run.decode import define_pipeline

    preprocessing = Preprocessing((64, 48), mean=(0.5,), std=(0.25,))
    pipeline = define_pipeline(preprocessing, batch_size=4, threads=2, device_id=0)
    assert pipeline is not None  # building it needs the GPU; defining it must not fail


def test_the_torch_engine_runs_channels_last_with_fused_relus_on_the_cpu() -> None:
    """channels_last in every precision (fp32 too, since conv10 no longer runs directly
    there), and each convolution's ReLU inside it where this torch computes that."""
    from psicbatch.engines.fused_relu import ConvReLU, fusion_works
    from psicbatch.engines.manifest import FREQUENCY_DOMAIN
    from psicbatch.engines.spec import open_engine
    from psicbatch.engines.torch_engine import WEIGHT_TYPES

    for precision in ("fp32", "bf16"):
        spec = EngineSpec(checkpoint=demo_model_path(), precision=precision)
        engine = open_engine(spec, "cpu", 2)
        weights = [p for p in engine.model.parameters() if p.dim() == 4]
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
        fused = [m for m in engine.model.modules() if isinstance(m, ConvReLU)]
        # 20 conv -> ReLU blocks, conv10's not fused where it runs in the frequency domain
        by_fft = engine.manifest.backend_details["large_kernels"] == FREQUENCY_DOMAIN
        # fp32 everywhere tested; bf16 needs AVX-512 or AVX-NE-CONVERT in oneDNN
        works = fusion_works(WEIGHT_TYPES[precision])
        assert works or precision == "bf16"
        assert len(fused) == (20 - by_fft if works else 0)
        probabilities, masks = engine.infer(torch.rand(1, 1, 64, 64))
        assert probabilities.shape == (1,) and masks.shape == (1, 64, 64)
