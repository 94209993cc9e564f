from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

from click.testing import CliRunner

from psicbatch.assets import demo_model_path
from psicbatch.bench.benchmark import STAGES
from psicbatch.cli import main
from psicbatch.engines.null_engine import NULL_OUTPUTS


def test_tiny_benchmark_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = [
        "bench",
        "--sizes",
        "64x64,dagm",
        "--batch",
        "1,2",
        "--width",
        "0.125",
        "--duration",
        "0.1",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    assert report["ceiling"]["gflops"] > 0
    # Cold start apart: opening the engine, and its first call before any warm-up.
    assert report["engine"]["open_seconds"] > 0 and report["engine"]["first_call_ms"] > 0
    assert report["memory_peak"]["host_mib"] > 100
    libraries = report["machine"]["libraries"]
    assert libraries["torch"] == importlib.metadata.version("torch")
    assert set(libraries) >= {"onnxruntime", "nvidia-dali-cuda120", "tensorrt"}
    assert {(r["size_name"], r["batch"]) for r in report["results"]} == {
        ("64x64", 1),
        ("64x64", 2),
        ("dagm", 1),
        ("dagm", 2),
    }
    for row in report["results"]:
        latency = row["latency_per_call"]
        assert latency["unit"] == "ms" and latency["count"] >= 1
        assert latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
        assert row["warmup"]["count"] == 2 and row["throughput_items_per_s"] > 0
        assert row["ceiling_share"] > 0 and row["achieved_gflops"] > 0
    dagm = next(s for s in report["summary"] if s["size_name"] == "dagm")
    assert dagm["size"] == [512, 512] and dagm["speedup_vs_baseline"] > 0
    assert dagm["verdict"].startswith(("meets", "misses"))
    assert report["baseline"]["dagm"]["items_per_call"] == 1
    end_to_end = report["end_to_end"]["64x64"]
    assert end_to_end["images"] >= 3 * end_to_end["batch"]
    assert end_to_end["throughput_items_per_s"] > 0 and end_to_end["share_of_engine_only"] > 0
    assert set(end_to_end["stage_seconds_per_image"]) == {
        "decode+preprocess",
        "in series",
        "inference",
        "postprocess",
        "rows",
        "write",
    }
    assert end_to_end["device"] == "cpu" and end_to_end["bounded_by"] in STAGES
    assert end_to_end["threshold"] == 1.0  # an untrained network's noise masks not encoded
    assert end_to_end["share_of_decode_only"] > 0 and end_to_end["decode_only_items_per_s"] > 0
    # The null-engine host ceiling: every size with each kind of output, decoding excluded.
    host = report["host_ceiling"]
    assert {(tuple(h["size"]), h["outputs"]) for h in host} == {
        (size, outputs) for size in ((64, 64), (512, 512)) for outputs in NULL_OUTPUTS
    }
    for row in host:
        assert row["decoder"] == "null" and row["throughput_items_per_s"] > 0
        assert row["images"] >= 8 * row["batch"] and row["bounded_by"] in STAGES
    text = (out / "bench.md").read_text()
    assert "psicbatch bench" in text and "dagm (512x512)" in text and "--width 0.125" in text
    assert "End to end" in text and "Host ceiling (null engine, decoding excluded)" in text
    assert "Cold start, apart from every figure below" in text
    contention = report["contention"]  # what else used the CPUs meanwhile (Linux)
    assert contention["seconds"] > 0 and contention["cpus"] == len(os.sched_getaffinity(0))
    assert "CPU contention during the benchmark" in text
    for figure in ("bench_latency.png", "bench_throughput.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    compared = CliRunner().invoke(
        main, ["bench", "--compare", str(out / "bench.json"), str(out / "bench.json")]
    )
    assert compared.exit_code == 0, compared.output
    assert "1.00x" in compared.output and "dagm" in compared.output


def test_bad_options() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["bench", "--batch", "0"]).exit_code == 2
    huge = runner.invoke(main, ["bench", "--sizes", "dagm,huge"])
    assert huge.exit_code == 2 and "Invalid value for '--sizes'" in huge.output
    assert "'huge' is neither a preset (ksdd, ksdd2, dagm) nor a size" in huge.output
    odd = runner.invoke(main, ["bench", "--sizes", "100x100"])
    assert odd.exit_code == 2 and "multiples of 8" in odd.output
    both = runner.invoke(main, ["bench", "--width", "1", "--model", str(demo_model_path())])
    assert both.exit_code == 2 and "at most one" in both.output
    for width in ("9", "0", "-1"):  # refused by the option, before any model is built
        wide = runner.invoke(main, ["bench", "--width", width])
        assert wide.exit_code == 2 and "Invalid value for '--width'" in wide.output


def test_default_batches_fill_a_gpu_more_than_a_cpu() -> None:
    from psicbatch.commands.bench import _batches

    assert _batches("auto", "cpu") == (1, 4) and _batches("auto", "cuda:0") == (1, 8, 32)
    assert _batches("2,16", "cuda:0") == (2, 16)


def test_a_batch_sweep_doubles_until_images_per_second_level_off(tmp_path: Path) -> None:
    from psicbatch.bench.benchmark import levelled_off, sweep_batches

    assert sweep_batches("cpu") == (1, 2, 4, 8, 16, 32) and sweep_batches("cuda:0")[-1] == 1024
    assert not levelled_off([10, 20, 20.1]) and levelled_off([10, 10.2, 10.1])
    out = tmp_path / "sweep"
    args = ["bench", "--batch", "sweep", "--width", "0.125", "--sizes", "32x32"]
    quick = ["--duration", "0.3", "--no-baseline", "--no-end-to-end", "--no-host-ceiling"]
    result = CliRunner().invoke(main, [*args, *quick, "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    batches = [row["batch"] for row in report["results"]]
    assert batches == [2**i for i in range(len(batches))] and len(batches) >= 3
    assert report["sweep"]["32x32"]  # why it stopped: levelled off or the CPU's limit
    assert "Batch sweep at 32x32: stopped" in (out / "bench.md").read_text()
