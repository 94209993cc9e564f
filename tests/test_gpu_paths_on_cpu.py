"""The CPU-side halves of the GPU checks: what GPU runs rely on, exercised where there is
no GPU (each has a ``gpu`` counterpart in test_gpu.py), and the prepared GPU check script
in its CPU dry-run mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from psicbatch.cli import main
from psicbatch.preprocess import Preprocessing
from psicbatch.run import decode

ROOT = Path(__file__).resolve().parents[1]


def test_a_failed_gpu_decoded_batch_is_isolated_without_pinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPU decoding returns device tensors; isolating a bad file must not pin them (torch
    refuses to pin anything but dense CPU tensors). ``meta`` tensors stand in for CUDA."""
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 30), 90, np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:45])  # a header, then too little for PIL too
    monkeypatch.setattr(decode.DaliDecoder, "_build", lambda self: None)

    def gpu_decode(self: decode.DaliDecoder, data: list[np.ndarray]) -> torch.Tensor:
        if any(len(array) == 45 for array in data):
            raise RuntimeError("nvImageCodec failure: damaged data")  # DALI fails the batch
        return torch.empty((len(data), 1, 16, 16), device="meta")

    monkeypatch.setattr(decode.DaliDecoder, "_run", gpu_decode)
    decoder = decode.DaliDecoder(Preprocessing((16, 16)), batch_size=3, device_id=0, pin=True)
    batch = decoder.decode([good, bad, good])
    assert batch.positions == [0, 2] and set(batch.errors) == {1}
    assert batch.images.device.type == "meta"  # left where decoding put it


def write_mixed_sizes(folder: Path) -> Path:
    """7 images of 4 original sizes: batches of 4 mix sizes and the last one is partial."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, (height, width) in enumerate([(96, 80), (150, 190), (64, 64)] * 2 + [(33, 47)]):
        Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    return folder


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mixed_sizes(tmp_path_factory.mktemp("data") / "mixed")


def test_mixed_sizes_and_a_partial_last_batch(mixed_sizes: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    args = ["run", str(mixed_sizes), "--out", str(out), "--batch-size", "4", "--masks", "all"]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--decoder", "pil", "-q"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 7 and all(row["error"] is None for row in rows)
    for row in rows:
        with Image.open(row["path"]) as image:
            assert (row["width"], row["height"]) == image.size
        assert row["mask"]["size"] == [row["height"], row["width"]]


def test_the_paper_size_input_on_the_cpu_path(tmp_path: Path) -> None:
    """1408x512 through the run path's engine and post-processing (a narrow network: the
    shapes are what matters here; test_gpu runs the paper's width on a GPU)."""
    from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint
    from psicbatch.engines.spec import EngineSpec, open_engine
    from psicbatch.model import ModelConfig
    from psicbatch.run.postprocess import summarize_masks

    path = tmp_path / "m.pt"
    save_checkpoint(untrained_checkpoint(ModelConfig(width=0.0625), (1408, 512)), path)
    engine = open_engine(EngineSpec(checkpoint=path, precision="fp32"), "cpu", 2)
    probabilities, segmentation = engine.infer(torch.rand(2, 1, 1408, 512))
    assert probabilities.shape == (2,) and segmentation.shape == (2, 1408, 512)
    summary = summarize_masks(probabilities, segmentation, [(1408, 512), (2000, 700)], 0.5)
    assert summary.seg_max.shape == (2,) and summary.sizes[1] == (2000, 700)


def test_every_benchmark_script_parses() -> None:
    """What the default suite checks of the benchmarks that run only in ``slow`` tests or
    on a GPU: each shell script is valid bash and each Python script compiles."""
    scripts = sorted((ROOT / "benchmarks").glob("*.sh"))
    assert ROOT / "benchmarks" / "gpu_check.sh" in scripts
    for script in scripts:
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{script.name}: {checked.stderr}"
    for source in sorted((ROOT / "benchmarks").glob("*.py")):
        compile(source.read_text(), str(source), "exec")


@pytest.mark.slow  # reason: ten processes of the GPU check's steps at tiny sizes (~50 s)
def test_the_gpu_check_script_runs_in_its_cpu_dry_run_mode(tmp_path: Path) -> None:
    out = tmp_path / "check"
    environment = {**os.environ, "PYTHON": sys.executable}
    process = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    expected = {
        "machine.txt",
        "nvidia-smi.txt",
        "versions.json",
        "machine-info.json",
        "gpu-tests.txt",
        "bench.json",
        "bench.md",
        "bench-log.txt",
        "run-one-gpu-jpg.txt",
        "run-one-gpu-png.txt",
        "run-all-gpus-jpg.txt",
        "end-to-end.md",
        "kernels.md",
        "cold-start.md",
        "variants.md",
    }
    assert expected <= {path.name for path in out.iterdir()}
    assert "torch" in json.loads((out / "versions.json").read_text())
    assert json.loads((out / "machine-info.json").read_text())["default device"] == "cpu"
    bench = json.loads((out / "bench.json").read_text())
    assert [r["batch"] for r in bench["results"]] == [1, 2]
    for suffix in ("jpg", "png"):
        summary = (out / f"run-one-gpu-{suffix}.txt").read_text()
        assert "exit code 0" in summary and "images processed" in summary
        assert "one device only" in (out / f"run-all-gpus-{suffix}.txt").read_text()
    # Each run's rate after start-up beside engine-only at the run's batch, as a share.
    row = r"\| run-one-gpu-(jpg|png) \| [0-9.]+ \| [0-9.]+ \| [0-9]+% \|"
    shares = re.findall(row, (out / "end-to-end.md").read_text())
    assert shares == ["jpg", "png"]
    assert "| input | weight | layers |" in (out / "kernels.md").read_text()  # by shape
    cold_start = (out / "cold-start.md").read_text()
    assert re.search(r"\| searched at open \| [0-9.]+ \| [0-9.]+ \|", cold_start)
    assert re.search(r"\| heuristic \| [0-9.]+ \| [0-9.]+ \|", cold_start)
    variants = (out / "variants.md").read_text()
    for variant in ("deconvs as convs", "first layer on 8 channels", "both rewrites"):
        assert re.search(
            rf"\| {variant} \| [0-9.]+ \| [0-9.]+ \| [0-9.e+-]+, [0-9.e+-]+ \|", variants
        )
    assert "FAILED" not in (out / "machine.txt").read_text()
    assert "dry run" in (out / "gpu-tests.txt").read_text()  # they skip without a GPU


@pytest.mark.slow  # reason: the host ceiling benchmark end to end at 1408x512 (~15 s)
def test_the_host_ceiling_benchmark_runs_and_writes_its_report(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "host_ceiling.py"), str(tmp_path)]
    process = subprocess.run(
        [*command, "--count", "16", "--seconds", "0.5"], capture_output=True, text=True
    )
    assert process.returncode == 0, process.stdout + process.stderr
    report = json.loads((tmp_path / "host_ceiling.json").read_text())
    assert [h["outputs"] for h in report["host"]] == ["clean", "defects", "noisy"]
    assert all(h["throughput_items_per_s"] > 0 for h in report["host"])
    assert "## Null engine" in (tmp_path / "host_ceiling.md").read_text()


@pytest.mark.slow  # reason: quantizes and times five int8 candidates (about 2 minutes)
def test_the_cpu_int8_benchmark_runs_and_writes_its_report(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "cpu_int8.py"), str(tmp_path)]
    quick = ["--sizes", "128x128", "--batches", "1", "--seconds", "0.3", "--skip", "pt2e"]
    process = subprocess.run([*command, *quick], capture_output=True, text=True)
    assert process.returncode == 0, process.stdout + process.stderr
    assert any(path.suffix == ".md" for path in tmp_path.iterdir())
