"""GPU paths: torch and TensorRT engines on CUDA, DALI GPU decoding, GPU runs, two GPUs.

Every test here skips where no CUDA GPU is visible (TensorRT ones also without TensorRT,
the two-GPU one with fewer than two GPUs). Their CPU-side halves are in
test_gpu_paths_on_cpu.py; benchmarks/gpu_check.sh runs these first on a GPU machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from psicbatch.api import Inspector
from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.devices import every_gpu
from psicbatch.engines.build import BuildOptions, build_engine
from psicbatch.engines.loading import load_engine
from psicbatch.metrics import mask_iou
from psicbatch.preprocess import Preprocessing
from psicbatch.run import rle
from psicbatch.run.decode import DaliDecoder, PilDecoder
from psicbatch.run.output import read_metadata
from tests.reference_rows import assert_same_results
from tests.test_engines import compiled_engine_parity
from tests.test_gpu_paths_on_cpu import write_mixed_sizes
from tests.test_run import dali_copy
from tests.test_tiles import line_scan_image, tiled_demo

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpu")
    generate(root, 16, (150, 190), defect_rate=0.5, seed=4)
    return root / "images"


def run_cli(*args: str) -> None:
    result = CliRunner().invoke(main, ["run", "-q", *args])
    assert result.exit_code == 0, result.output


def test_torch_fp16_engine_on_cuda_keeps_parity(tmp_path: Path) -> None:
    options = BuildOptions(backend="torch", precision="fp16", max_batch=4, out=tmp_path / "e")
    directory, manifest = build_engine(demo_model_path(), options)
    assert manifest.parity["device"].startswith("cuda")
    assert manifest.parity["decision_flips"] == 0
    assert manifest.parity["mask_iou_mean"] >= 0.9
    engine = load_engine(directory, "cuda:0")
    probabilities, segmentation = engine.infer(torch.zeros((2, 1, 128, 128), device="cuda"))
    assert probabilities.device.type == segmentation.device.type == "cuda"


def test_partial_batches_on_cuda_run_as_few_padded_shapes(tmp_path: Path) -> None:
    """Batches of 1 to 6 on an engine of largest batch 6: graphs of 1, 2, 4 and 6 images
    only, each image's outputs as in a batch of its own."""
    options = BuildOptions(backend="torch", precision="fp16", max_batch=6, out=tmp_path / "e")
    engine = load_engine(build_engine(demo_model_path(), options)[0], "cuda:0")
    images = torch.rand(6, 1, 128, 128, device="cuda")
    alone = [engine.infer(images[i : i + 1]) for i in range(6)]
    for _ in range(2):  # the second round replays graphs
        for count in range(1, 7):
            probabilities, segmentation = engine.infer(images[:count])
            assert probabilities.shape == (count,) and segmentation.shape == (count, 128, 128)
            for i in range(count):
                torch.testing.assert_close(probabilities[i : i + 1], alone[i][0], atol=2e-3, rtol=0)
    shapes = {shape[0] for shape in engine.forward.graphs}  # type: ignore[union-attr]
    assert shapes == {1, 2, 4, 6}


def test_compiled_fp16_engine_keeps_parity_on_cuda(tmp_path: Path) -> None:
    parity = compiled_engine_parity(tmp_path / "c", "fp16", "cuda:0")
    assert parity["decision_flips"] == 0 and parity["mask_iou_mean"] >= 0.9


def test_dali_gpu_tensors_equal_pils(images: Path) -> None:
    pytest.importorskip("nvidia.dali")
    files = sorted(images.glob("*.png"))[:6]
    preprocessing = Preprocessing((128, 96), mean=(0.5,), std=(0.25,))
    dali = DaliDecoder(preprocessing, batch_size=8, device_id=0).decode(files)
    pil = PilDecoder(preprocessing).decode(files)
    assert dali.images.device.type == "cuda"  # stays on the GPU
    assert dali.sizes == pil.sizes
    difference = (dali.images.cpu().int() - pil.images.int()).abs().numpy()  # grey levels
    assert difference.mean() < 0.5 and difference.max() < 12


@pytest.mark.parametrize("decoder", ["pil", "dali"])
def test_gpu_run_matches_the_cpu_run(images: Path, tmp_path: Path, decoder: str) -> None:
    if decoder == "dali":
        pytest.importorskip("nvidia.dali")
    cpu, gpu = tmp_path / "cpu.parquet", tmp_path / "gpu.parquet"
    run_cli(
        str(images), "-o", str(cpu), "--device", "cpu", "--decoder", "pil", "--precision", "fp32"
    )
    run_cli(str(images), "-o", str(gpu), "--device", "0", "--decoder", decoder)
    cpu_rows, gpu_rows = pq.read_table(cpu).to_pylist(), pq.read_table(gpu).to_pylist()
    assert [r["path"] for r in cpu_rows] == [r["path"] for r in gpu_rows]
    ious = []
    for a, b in zip(cpu_rows, gpu_rows, strict=True):
        assert abs(a["probability"] - b["probability"]) < 0.05
        assert a["is_defect"] == b["is_defect"]
        if a["mask_area"] or b["mask_area"]:
            ious.append(mask_iou(rle.decode(a["mask"]), rle.decode(b["mask"])))
    assert np.mean(ious) >= 0.9
    metadata = read_metadata(gpu)
    assert metadata["devices"] == ["cuda:0"]
    assert metadata["engine"]["precision"] == "fp16" and metadata["decoder"] == decoder


@pytest.mark.tensorrt
def test_tensorrt_build_parity_and_run(images: Path, tmp_path: Path) -> None:
    options = BuildOptions(backend="tensorrt", precision="fp16", max_batch=8, out=tmp_path / "t")
    directory, manifest = build_engine(demo_model_path(), options)
    assert manifest.parity["decision_flips"] == 0 and manifest.parity["mask_iou_mean"] >= 0.9
    out = tmp_path / "trt.parquet"
    run_cli(str(images), "-o", str(out), "--engine", str(directory), "--device", "0")
    assert read_metadata(out)["engine"]["backend"] == "tensorrt"
    assert all(row["error"] is None for row in pq.read_table(out).to_pylist())


def test_two_gpus_give_the_one_gpu_table(images: Path, tmp_path: Path) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    one, two, every = (tmp_path / f"{name}.parquet" for name in ("one", "two", "every"))
    run_cli(str(images), "-o", str(one), "--device", "0", "--batch-size", "4")
    run_cli(str(images), "-o", str(two), "--device", "0,1", "--batch-size", "4")
    run_cli(str(images), "-o", str(every), "--batch-size", "4")  # --device auto
    # cudnn.benchmark may choose other kernels in another process: not bit-identical
    for several in (two, every):
        assert_same_results(pq.read_table(one).to_pylist(), pq.read_table(several).to_pylist())
    assert read_metadata(two)["devices"] == ["cuda:0", "cuda:1"]
    assert read_metadata(every)["devices"] == list(every_gpu())


def test_a_bad_file_under_dali_on_the_gpu_gets_an_error_row(images: Path, tmp_path: Path) -> None:
    pytest.importorskip("nvidia.dali")
    folder = tmp_path / "with-bad"
    folder.mkdir()
    files = sorted(images.glob("*.png"))[:5]
    for path in files:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "truncated.png").write_bytes(files[0].read_bytes()[:300])
    out = tmp_path / "r.parquet"
    result = CliRunner().invoke(
        main, ["run", str(folder), "-o", str(out), "--device", "0", "--decoder", "dali", "-q"]
    )
    assert result.exit_code == 3, result.output  # some images failed, the run did not
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    assert rows["truncated.png"]["error"] and len(rows) == 6
    assert all(rows[p.name]["error"] is None for p in files)


def test_workers_under_a_preset_device_mask(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under SLURM: the job's GPU named by UUID; cuda:0 means that GPU in every worker."""
    uuid = f"GPU-{torch.cuda.get_device_properties(0).uuid}"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", uuid)
    out = tmp_path / "r.parquet"
    run_cli(str(images), "-o", str(out), "--device", "0", "--workers", "2", "--batch-size", "4")
    assert all(row["error"] is None for row in pq.read_table(out).to_pylist())


def test_mixed_sizes_and_a_partial_batch_on_the_gpu(tmp_path: Path) -> None:
    folder = write_mixed_sizes(tmp_path / "mixed")
    cpu, gpu = tmp_path / "cpu.parquet", tmp_path / "gpu.parquet"
    common = [str(folder), "--batch-size", "4", "--masks", "all", "--precision", "fp32"]
    run_cli(*common, "-o", str(cpu), "--device", "cpu", "--decoder", "pil")
    run_cli(*common, "-o", str(gpu), "--device", "0", "--decoder", "pil")
    assert_same_results(pq.read_table(cpu).to_pylist(), pq.read_table(gpu).to_pylist(), 1e-3, 0.95)


def test_a_tiled_run_on_the_gpu_matches_the_cpu_run(tmp_path: Path) -> None:
    """Tiles normalised call by call, stitched and decided on the device: the CPU's rows."""
    image, _ = line_scan_image(300, 1000)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(image).save(folder / "a.png")
    Image.fromarray(np.ascontiguousarray(image[::-1, ::-1])).save(folder / "b.png")
    Image.fromarray(image[:100, :90]).save(folder / "small.png")  # below one tile
    cpu, gpu = tmp_path / "cpu.parquet", tmp_path / "gpu.parquet"
    model = tiled_demo(tmp_path / "tiled.pt")
    common = [str(folder), "--model", str(model), "--masks", "all", "--precision", "fp32"]
    run_cli(*common, "--batch-size", "2", "-o", str(cpu), "--device", "cpu", "--decoder", "pil")
    run_cli(*common, "--batch-size", "2", "-o", str(gpu), "--device", "0", "--decoder", "pil")
    cpu_rows, gpu_rows = pq.read_table(cpu).to_pylist(), pq.read_table(gpu).to_pylist()
    assert_same_results(cpu_rows, gpu_rows, 1e-3, 0.95)
    assert [row["tile"] for row in cpu_rows] == [row["tile"] for row in gpu_rows]


def test_training_on_the_gpu(tmp_path: Path) -> None:
    """Both steps on CUDA at the automatic precision, every epoch scored on held-out
    images; the checkpoint then runs on a CPU."""
    data, held_out, model = tmp_path / "data", tmp_path / "held-out", tmp_path / "gpu.pt"
    generate(data, 8, (64, 64), defect_rate=0.5, seed=3)
    generate(held_out, 6, (64, 64), defect_rate=0.5, seed=4)
    tiny = ["--width", "0.125", "--input-size", "64x64", "--seg-epochs", "3", "--cls-epochs", "2"]
    args = ["train", str(data), "-o", str(model), *tiny, "--validation", str(held_out), "-q"]
    args += ["--keep", "best"]  # each phase's best epoch, restored into the CUDA model
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    training = load_checkpoint(model).training
    assert training["complete"] and training["precision"]["precision"] in ("bf16", "fp16")
    losses = [loss for phase in training["loss_history"].values() for loss in phase]
    assert len(losses) == 5 and all(np.isfinite(losses))
    scores = training["validation_history"]
    assert [len(scores["segmentation"]["loss"]), len(scores["classification"]["ap"])] == [3, 2]
    assert all(
        np.isfinite(v) for measures in scores.values() for vs in measures.values() for v in vs
    )
    kept = training["kept_epochs"]
    assert 1 <= kept["segmentation"] <= 3 and 1 <= kept["classification"] <= 2
    with Inspector(model, device="cpu", precision="fp32") as inspector:
        found = list(inspector.inspect(sorted((data / "images").glob("*.png"))))
    assert len(found) == 8 and all(0 <= item.probability <= 1 for item in found)


def test_eval_on_the_gpu_matches_the_cpu_eval(images: Path, tmp_path: Path) -> None:
    """Streamed evaluation on CUDA (uint8 uploads, normalised on the device) scores as on
    the CPU, both in fp32, and writes its page."""
    summaries = {}
    for device in ("cpu", "0"):
        out = tmp_path / f"eval-{device}"
        args = [str(demo_model_path()), str(images.parent), "-o", str(out), "--device", device]
        result = CliRunner().invoke(main, ["eval", *args, "--precision", "fp32", "-q"])
        assert result.exit_code == 0, result.output
        summaries[device] = json.loads((out / "metrics.json").read_text())
        assert (out / "report.html").stat().st_size > 0
    cpu, gpu = summaries["cpu"], summaries["0"]
    assert gpu["engine"]["device"] == "cuda:0" and cpu["engine"]["device"] == "cpu"
    for group in ("segmentation", "classification"):
        for name, value in cpu[group].items():
            assert gpu[group][name] == pytest.approx(value, abs=0.01, nan_ok=True), name


def test_fp16_training_on_the_gpu_scales_its_loss(tmp_path: Path) -> None:
    """fp16 (the choice on GPUs without bf16) trains with dynamic loss scaling."""
    data, model = tmp_path / "data", tmp_path / "fp16.pt"
    generate(data, 8, (64, 64), defect_rate=0.5, seed=3)
    tiny = ["--width", "0.125", "--input-size", "64x64", "--seg-epochs", "3", "--cls-epochs", "2"]
    args = ["train", str(data), "-o", str(model), *tiny, "--precision", "fp16", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    training = load_checkpoint(model).training
    assert training["precision"]["precision"] == "fp16"
    assert training["loss_scale"]["dynamic"] and training["loss_scale"]["scale"] >= 1
    losses = [loss for phase in training["loss_history"].values() for loss in phase]
    assert len(losses) == 5 and all(np.isfinite(losses))


def test_the_papers_network_at_1408x512_on_the_gpu(tmp_path: Path) -> None:
    from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint
    from psicbatch.engines.spec import EngineSpec, open_engine
    from psicbatch.model import ModelConfig
    from psicbatch.run.postprocess import summarize_masks

    path = tmp_path / "paper.pt"
    save_checkpoint(untrained_checkpoint(ModelConfig(width=1.0), (1408, 512)), path)
    engine = open_engine(EngineSpec(checkpoint=path, precision="fp16"), "cuda:0", 4)
    probabilities, segmentation = engine.infer(torch.rand(4, 1, 1408, 512, device="cuda"))
    assert segmentation.shape == (4, 1408, 512) and segmentation.device.type == "cuda"
    assert torch.isfinite(probabilities).all() and torch.isfinite(segmentation).all()
    summary = summarize_masks(probabilities, segmentation, [(1408, 512)] * 4, 0.5)
    assert summary.seg_max.shape == (4,)


def test_cuda_event_timings_are_positive_and_ordered() -> None:
    from psicbatch.bench.measurements import gpu_timed

    device = torch.device("cuda:0")
    small, large = (torch.randn(n, n, device=device, dtype=torch.float16) for n in (1024, 8192))
    timers = [gpu_timed(lambda m=m: torch.matmul(m, m), device) for m in (small, large)]
    for timer in timers:
        timer()  # the first call also creates cuBLAS's handle and workspace
    seconds = [timer() for timer in timers]
    assert 0 < seconds[0] < seconds[1]  # 512x the work takes longer by the GPU's clock


def test_cuda_graph_replays_equal_eager_calls_and_keep_earlier_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two batch sizes, captured into one shared memory pool and replayed alternately:
    each replay equals the eager call, and outputs handed out earlier stay as they were."""
    from psicbatch.engines.cuda_graphs import GraphedForward
    from psicbatch.engines.export import ProbabilityModel
    from psicbatch.engines.folding import fold_batchnorm
    from psicbatch.model import ModelConfig, PSICNet

    # IEEE fp32: with TF32 (torch's default for cuDNN) eager and graphed calls differed by
    # 4e-5 on an H200, as two TF32 runs can.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = ProbabilityModel(fold_batchnorm(PSICNet(ModelConfig(width=0.25)).eval())).cuda()
    graphed = GraphedForward(model)
    inputs = [torch.rand(batch, 1, 256, 256, device="cuda") for batch in (2, 3, 2, 3)]
    with torch.inference_mode():
        eager = [model(images) for images in inputs]
        for images in inputs:  # each shape: eager first, then captured
            graphed(images)
        replayed = [graphed(images) for images in inputs]  # alternating shapes
    assert len(graphed.graphs) == 2
    for got, want in zip(replayed, eager, strict=True):
        for a, b in zip(got, want, strict=True):  # other inputs' outputs: ~1e-1 away
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_dali_gpu_output_without_a_copy_equals_the_copied_path(images: Path) -> None:
    """Zero-copy DLPack tensors equal DALI's own copy of the same pixels to the host, and
    stay as decoded while later batches are decoded into DALI's pool."""
    pytest.importorskip("nvidia.dali")
    files = sorted(images.glob("*.png"))[:12]
    decoder = DaliDecoder(Preprocessing((128, 96)), batch_size=4, device_id=0)
    first = decoder.decode(files[:4]).images
    assert first.device.type == "cuda"
    kept = first.clone()
    for start in (4, 8):
        decoder.decode(files[start : start + 4])
    torch.cuda.synchronize()
    assert torch.equal(first, kept)
    assert torch.equal(dali_copy(decoder, files[:4]), kept.cpu())
