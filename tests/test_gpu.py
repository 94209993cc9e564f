"""GPU paths: torch engines on CUDA, DALI GPU decoding, one worker per GPU.

These tests skip where no CUDA GPU is visible; they have not yet run on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.engines.build import BuildOptions, build_engine

pytestmark = pytest.mark.gpu


def test_torch_fp16_engine_on_cuda_keeps_parity(tmp_path: Path) -> None:
    options = BuildOptions(backend="torch", precision="fp16", max_batch=4, out=tmp_path / "e")
    _, manifest = build_engine(demo_model_path(), options)
    assert manifest.backend_details["device"] == "cuda"
    assert manifest.parity["decision_flips"] == 0
    assert manifest.parity["mask_iou_mean"] >= 0.9


def test_gpu_run_with_dali_gpu_decoding_matches_the_cpu_run(tmp_path: Path) -> None:
    generate(tmp_path / "data", 12, (150, 190), defect_rate=0.5, seed=4)
    images = str(tmp_path / "data" / "images")
    cpu, gpu = tmp_path / "cpu.parquet", tmp_path / "gpu.parquet"
    runner = CliRunner()
    assert runner.invoke(main, ["run", images, "-o", str(cpu), "-q", "--decoder", "pil",
                                "--precision", "fp32"]).exit_code == 0  # fmt: skip
    result = runner.invoke(main, ["run", images, "-o", str(gpu), "-q", "--devices", "0",
                                  "--decoder", "dali"])  # fmt: skip
    assert result.exit_code == 0, result.output
    cpu_rows, gpu_rows = pq.read_table(cpu).to_pylist(), pq.read_table(gpu).to_pylist()
    assert [r["path"] for r in cpu_rows] == [r["path"] for r in gpu_rows]
    for a, b in zip(cpu_rows, gpu_rows, strict=True):
        assert abs(a["probability"] - b["probability"]) < 0.05
        assert a["is_defect"] == b["is_defect"]
