"""The benchmark run and its reports (JSON and markdown)."""

from __future__ import annotations

import importlib.util
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from psicbatch import __version__
from psicbatch.bench.measurements import (
    decode_only,
    end_to_end,
    engine_ceiling,
    engine_only,
    host_ceiling,
    research_baseline,
)
from psicbatch.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, untrained_checkpoint
from psicbatch.data.images import image_files
from psicbatch.data.synth import generate
from psicbatch.engines import Engine, Manifest, default_device, load_engine
from psicbatch.engines.null_engine import NULL_OUTPUTS
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.hardware import cpu_precisions
from psicbatch.model import ModelConfig, count_flops
from psicbatch.precision import cpu_auto
from psicbatch.reports import markdown_table
from psicbatch.versions import installed_versions

SIZE_PRESETS = {"ksdd": (1408, 512), "ksdd2": (640, 232), "dagm": (512, 512)}
TARGET_SECONDS = (1.0, 2.0)  # the industrial per-image budget the paper cites


@dataclass(frozen=True)
class BenchPlan:
    sizes: tuple[tuple[str, tuple[int, int]], ...]
    batches: tuple[int, ...]
    seconds: float = 20.0
    baseline: bool = True
    images: Path | None = None
    end_to_end: bool = True
    host_ceiling: bool = True
    host_batch: int = 32


def random_checkpoint(width: float, folder: Path) -> Path:
    """An untrained checkpoint of the given width: cost, not accuracy, is what is measured."""
    path = folder / f"random-width-{width}.pt"
    save_checkpoint(untrained_checkpoint(ModelConfig(width=width)), path)
    return path


BENCH_LIBRARIES = (
    "torch",
    "numpy",
    "pillow",
    "pyarrow",
    "onnx",
    "onnxruntime",
    "openvino",
    "nvidia-dali-cuda120",
    "tensorrt",
)


def memory_peak() -> dict[str, float | None]:
    """Peak resident memory of this process (and of the GPU, where one is used), in MiB."""
    import resource

    peak = {"host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    peak["gpu_mib"] = (
        torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    )
    return peak


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "isa": cpu_precisions().describe(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "psicbatch": __version__,
        "libraries": installed_versions(BENCH_LIBRARIES),
    }


def run_benchmark(
    plan: BenchPlan,
    checkpoint_path: Path | None,
    engine_dir: Path | None,
    precision: str,
    progress: Any = None,
) -> dict[str, Any]:
    """Measure every size x batch, the baseline per size and the ceiling, in one run."""
    device = default_device()  # engine-only, end to end, baseline and host: all on this one
    template = load_engine(engine_dir, device) if engine_dir is not None else None
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    results, baselines, end_to_end_results, host = [], {}, {}, []
    ceiling = None
    for name, size in plan.sizes:
        spec = EngineSpec(checkpoint=checkpoint_path, precision=precision, input_size=size)
        engine = template or open_engine(spec, device, max(plan.batches))
        gflop = count_flops(ModelConfig(**engine.manifest.model), *size) / 1e9
        if ceiling is None:
            manifest = engine.manifest
            ceiling = engine_ceiling(
                manifest.backend, manifest.precision, device, seconds=min(6.0, plan.seconds)
            )
            chosen = engine.manifest
        for batch in plan.batches:
            measured = engine_only(engine, size, batch, plan.seconds)
            achieved = measured.throughput * gflop
            results.append(
                {
                    "size_name": name,
                    "size": list(size),
                    "batch": batch,
                    "backend": engine.manifest.backend,
                    "precision": engine.manifest.precision,
                    "gflop_per_image": gflop,
                    **measured.to_dict(),
                    "seconds_per_image": 1 / measured.throughput if measured.throughput else None,
                    "achieved_gflops": achieved,
                    "ceiling_share": achieved / ceiling["gflops"],
                }
            )
            if progress:
                progress(f"{name} batch {batch}: {measured.throughput:.2f} images/s")
        if plan.end_to_end:
            end_to_end_results[name] = _end_to_end(
                results[-len(plan.batches) :],
                engine,
                checkpoint_path,
                engine_dir,
                precision,
                size,
                plan,
                device,
            )
            if progress:
                e2e = end_to_end_results[name]
                progress(
                    f"{name} end to end (batch {e2e['batch']}): "
                    f"{e2e['throughput_items_per_s']:.2f} images/s"
                )
        if plan.host_ceiling:
            with tempfile.TemporaryDirectory() as folder:
                for outputs in NULL_OUTPUTS:
                    host.append(
                        host_ceiling(
                            size,
                            outputs,
                            plan.host_batch,
                            min(10.0, plan.seconds / 2),
                            device,
                            Path(folder) / outputs,
                        )
                    )
                    if progress:
                        progress(
                            f"{name} host ceiling, {outputs} outputs: "
                            f"{host[-1]['throughput_items_per_s']:.0f} images/s"
                        )
        if plan.baseline and checkpoint is not None:
            baselines[name] = _baseline(checkpoint, size, plan, device)
            if progress:
                progress(
                    f"{name} baseline: {baselines[name]['throughput_items_per_s']:.2f} images/s"
                )
    return {
        "machine": machine(),
        "engine": {
            "backend": chosen.backend,
            "precision": chosen.precision,
            "selection": chosen.selection,
            "advice": faster_configuration_advice(chosen, device),
        },
        "ceiling": ceiling,
        "results": results,
        "baseline": baselines,
        "end_to_end": end_to_end_results,
        "host_ceiling": host,
        "summary": _summary(results, baselines, end_to_end_results),
        "memory_peak": memory_peak(),
    }


def _end_to_end(
    measured: list[dict],
    engine: Engine,
    checkpoint_path: Path | None,
    engine_dir: Path | None,
    precision: str,
    size: tuple[int, int],
    plan: BenchPlan,
    device: str,
) -> dict[str, Any]:
    """The run path at the batch size the engine did best with, on enough images for
    about half the measurement time (at least three batches), next to the run's decoder
    alone on the same files."""
    best = max(measured, key=lambda r: r["throughput_items_per_s"])
    batch = best["batch"]
    count = int(min(400, max(3 * batch, best["throughput_items_per_s"] * plan.seconds / 2)))
    spec = EngineSpec(
        engine_dir=engine_dir,
        checkpoint=checkpoint_path,
        precision=precision,
        input_size=None if engine_dir else size,
    )
    with tempfile.TemporaryDirectory() as folder:
        files = (
            image_files(plan.images)[:count]
            if plan.images
            else generate(Path(folder) / "images", count, size, defect_rate=0.3, seed=2)
        )
        result = end_to_end(spec, files, batch, Path(folder), device)
        decoding = decode_only(files, engine.manifest.engine_preprocessing(), batch, device)
    result["share_of_engine_only"] = (
        result["throughput_items_per_s"] / best["throughput_items_per_s"]
    )
    result["decode_only_items_per_s"] = decoding["throughput_items_per_s"]
    result["share_of_decode_only"] = (
        result["throughput_items_per_s"] / decoding["throughput_items_per_s"]
    )
    return result


def _baseline(
    checkpoint: Checkpoint, size: tuple[int, int], plan: BenchPlan, device: str
) -> dict[str, Any]:
    if plan.images is not None:
        files = image_files(plan.images)[:32]
        return research_baseline(checkpoint, files, size, plan.seconds, device).to_dict()
    with tempfile.TemporaryDirectory() as folder:
        files = generate(Path(folder), 8, size, defect_rate=0.5, seed=1)
        return research_baseline(checkpoint, files, size, plan.seconds, device).to_dict()


def _summary(
    results: list[dict], baselines: dict[str, dict], end_to_end: dict[str, dict]
) -> list[dict[str, Any]]:
    """Per size: best engine throughput, batch-1 latency, speedup and verdict."""
    rows = []
    for name in dict.fromkeys(r["size_name"] for r in results):
        mine = [r for r in results if r["size_name"] == name]
        best = max(mine, key=lambda r: r["throughput_items_per_s"])
        single = next((r for r in mine if r["batch"] == 1), None)
        latency = single["latency_per_call"]["p50"] / 1000 if single else best["seconds_per_image"]
        base = baselines.get(name, {}).get("throughput_items_per_s")
        rows.append(
            {
                "size_name": name,
                "size": best["size"],
                "best_images_per_s": best["throughput_items_per_s"],
                "best_batch": best["batch"],
                "latency_s_per_image": latency,
                "ceiling_share": best["ceiling_share"],
                "baseline_images_per_s": base,
                "speedup_vs_baseline": best["throughput_items_per_s"] / base if base else None,
                "end_to_end_images_per_s": end_to_end.get(name, {}).get("throughput_items_per_s"),
                "end_to_end_share": end_to_end.get(name, {}).get("share_of_engine_only"),
                "verdict": _verdict(latency),
            }
        )
    return rows


STAGES = ("decode+preprocess", "in series", "inference", "postprocess", "write")


def engine_busy(result: dict[str, Any]) -> float:
    """Share of an end-to-end run's time the engine was computing, from that run alone."""
    inference = result["stage_seconds_per_image"].get("inference", 0.0)
    return result["throughput_items_per_s"] * inference


STAGE_HEADER = " / ".join(STAGES)


END_TO_END_COLUMNS = (
    "size | batch | device | images | images/s | share of engine-only | engine busy | "
    f"decoding alone, images/s (share) | decoder | ms/image: {STAGE_HEADER} | bounded by"
).split(" | ")
HOST_COLUMNS = (
    f"size | outputs | batch | device | images | images/s | ms/image: {STAGE_HEADER} | bounded by"
).split(" | ")


def _end_to_end_row(name: str, e: dict[str, Any]) -> list[Any]:
    decoding = (
        f"{e['decode_only_items_per_s']:.1f} ({100 * e['share_of_decode_only']:.0f}%)"
        if "decode_only_items_per_s" in e
        else "-"
    )
    return [
        name,
        e["batch"],
        e.get("device", "-"),
        e["images"],
        f"{e['throughput_items_per_s']:.3f}",
        f"{100 * e['share_of_engine_only']:.0f}%",
        f"{100 * engine_busy(e):.0f}%",
        decoding,
        e["decoder"],
        _stage_ms(e),
        e.get("bounded_by") or "-",
    ]


def _host_row(h: dict[str, Any]) -> list[Any]:
    return [
        f"{h['size'][0]}x{h['size'][1]}",
        h["outputs"],
        h["batch"],
        h["device"],
        h["images"],
        f"{h['throughput_items_per_s']:.0f}",
        _stage_ms(h),
        h.get("bounded_by") or "-",
    ]


def _stage_ms(result: dict[str, Any]) -> str:
    per_image = result["stage_seconds_per_image"]
    return " / ".join(f"{1000 * per_image.get(stage, 0.0):.2f}" for stage in STAGES)


def _verdict(seconds: float) -> str:
    low, high = TARGET_SECONDS
    if seconds <= low:
        return f"meets the {low:g} s target"
    if seconds <= high:
        return f"meets the {high:g} s target"
    return f"misses the {high:g} s target"


def faster_configuration_advice(manifest: Manifest, device: str) -> str | None:
    """A configuration faster on this machine than the one measured, where one is known:
    torch's native precision here, or the fastest engine of a measured build's table."""
    if device != "cpu":
        return None
    if manifest.backend == "torch" and manifest.precision != cpu_auto().precision:
        best = cpu_auto()
        return (
            f"--precision {best.precision} is faster than {manifest.precision} here ({best.reason})"
        )
    timed = [t for t in manifest.tuning or [] if t.get("seconds_per_image")]
    if timed:
        fastest = min(timed, key=lambda t: t["seconds_per_image"])
        if (fastest["backend"], fastest["precision"]) != (manifest.backend, manifest.precision):
            return (
                f"{fastest['backend']} {fastest['precision']} was the fastest engine measured "
                "when this engine was built (build-engine --backend auto --precision auto)"
            )
        return None
    if manifest.backend == "torch":
        others = [b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b)]
        if others:
            return (
                "not measured: a built engine may be faster on this CPU "
                f"({' and '.join(others)} are installed); 'psicbatch build-engine MODEL' "
                "times every candidate here and keeps the fastest"
            )
    return None


def _engine_lines(engine: dict[str, Any] | None) -> list[str]:
    if engine is None:  # reports written before the engine was recorded
        return []
    why = f" ({engine['selection']})" if engine["selection"] else ""
    lines = [f"Engine: {engine['backend']} {engine['precision']}{why}."]
    if engine["advice"]:
        lines.append(f"Faster here: {engine['advice']}.")
    return lines


def _unit(ceiling: dict[str, Any]) -> str:
    return "GOP/s" if str(ceiling["precision"]).startswith("int8") else "GFLOP/s"


def markdown(report: dict[str, Any], command: str) -> str:
    m, c = report["machine"], report["ceiling"]
    lines = [
        "# psicbatch benchmark",
        "",
        f"Machine: {m['cpu']} ({m.get('isa', 'ISA not recorded')}), {m['cores']} cores, "
        f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}, psicbatch {m['psicbatch']}.",
        *_engine_lines(report.get("engine")),
        f"Ceiling measured in the same run: {c['gflops']:.0f} {_unit(c)} ({c['precision']} "
        f"{c['size']}x{c['size']} matrix product). Peak memory: "
        f"{report['memory_peak']['host_mib']:.0f} MiB.",
        "",
        "```",
        command,
        "```",
        "",
        "## Per size",
        "",
    ]
    lines += markdown_table(
        [
            "size",
            "best images/s (batch)",
            "latency s/image (batch 1, p50)",
            "share of ceiling",
            "baseline images/s",
            "speedup",
            "verdict",
        ],
        [
            [
                f"{s['size_name']} ({s['size'][0]}x{s['size'][1]})",
                f"{s['best_images_per_s']:.3f} ({s['best_batch']})",
                f"{s['latency_s_per_image']:.3f}",
                f"{100 * s['ceiling_share']:.0f}%",
                f"{s['baseline_images_per_s']:.3f}" if s["baseline_images_per_s"] else "-",
                f"{s['speedup_vs_baseline']:.2f}x" if s["speedup_vs_baseline"] else "-",
                s["verdict"],
            ]
            for s in report["summary"]
        ],
    )
    if any(row["ceiling_share"] > 1 for row in report["summary"]):
        lines += [
            "",
            "A share above 100% means the model's convolutions ran faster than the "
            "matrix product: that product is a lower bound of the machine's peak here, "
            "not the peak itself.",
        ]
    if report.get("end_to_end"):
        lines += ["", "## End to end (`psicbatch run` path)", ""]
        lines += markdown_table(
            END_TO_END_COLUMNS, [_end_to_end_row(n, e) for n, e in report["end_to_end"].items()]
        )
        lines += [
            "",
            "Decoding, inference and post-processing run in threads of their own, on "
            "different batches at once, and Parquet is written in another; the stage times "
            "add up to more than the wall time when they overlap. 'in series' is the work "
            "the inference thread does besides the engine (the upload). 'engine busy' is the "
            "share of the run's time the engine was computing, measured within the run "
            "itself (images/s x inference s/image): unlike the share of engine-only, which "
            "compares with a measurement taken minutes earlier, machine drift cannot move it.",
        ]
    if report.get("host_ceiling"):
        lines += ["", "## Host ceiling (null engine, decoding excluded)", ""]
        lines += markdown_table(HOST_COLUMNS, [_host_row(h) for h in report["host_ceiling"]])
        lines += [
            "",
            "The whole run path with an engine that returns ready outputs at once and a "
            "decoder that hands out one ready batch (as when the GPU decodes): what the host "
            "side can feed, whatever the accelerator. Outputs: clean = every image defect-free;"
            " defects = one image in ten with a thin crack-like defect; noisy = an untrained "
            "network's kind of output (a random field at 1/8 resolution, about half of the "
            "pixels above threshold).",
        ]
    lines += ["", "## Engine only, every configuration", ""]
    lines += markdown_table(
        [
            "size",
            "batch",
            "backend",
            "precision",
            "GFLOP/image",
            "images/s",
            "p50 ms",
            "p99 ms",
            "GFLOP/s",
            "stable",
        ],
        [
            [
                r["size_name"],
                r["batch"],
                r["backend"],
                r["precision"],
                f"{r['gflop_per_image']:.1f}",
                f"{r['throughput_items_per_s']:.3f}",
                f"{r['latency_per_call']['p50']:.1f}",
                f"{r['latency_per_call']['p99']:.1f}",
                f"{r['achieved_gflops']:.0f}",
                "yes" if r["stable"] else "no",
            ]
            for r in report["results"]
        ],
    )
    lines += [
        "",
        "Latencies are per call (one batch); the baseline is PIL decoding plus torch fp32 eager "
        "inference, one image at a time, as research code runs it.",
        "",
    ]
    return "\n".join(lines)
