"""The benchmark report as markdown: one table definition per section."""

from __future__ import annotations

from typing import Any

from psicbatch.bench.benchmark import STAGES, engine_busy
from psicbatch.bench.report import BenchReport, EngineChoice, EngineOnlyRow, SizeSummary
from psicbatch.contention import contention_line
from psicbatch.reports import Column, column_table

STAGE_HEADER = " / ".join(STAGES)


def _stage_ms(result: dict[str, Any]) -> str:
    per_image = result["stage_seconds_per_image"]
    return " / ".join(f"{1000 * per_image.get(stage, 0.0):.2f}" for stage in STAGES)


def _latency(result: dict[str, Any]) -> str:
    latency = result.get("latency_per_image")  # absent from reports written before it
    if not latency:
        return "-"
    return " / ".join(f"{latency[p]:.0f}" for p in ("p50", "p95", "p99"))


def _memory(peak: dict[str, Any]) -> str:
    text = f"host {peak['host_mib']:.0f} MiB"
    if peak.get("gpu_driver_used_mib") is not None:
        text += (
            f"; GPU: torch allocated {peak['gpu_mib']:.0f} MiB (reserved "
            f"{peak['gpu_reserved_mib']:.0f}), the driver counts {peak['gpu_driver_used_mib']:.0f}"
            " MiB in use on the device at the end"
        )
    if peak.get("gpu_driver_peak_mib") is not None:  # absent from reports written before it
        text += f" and counted at most {peak['gpu_driver_peak_mib']:.0f} MiB while it ran"
    return text


def _decoding_alone(e: dict[str, Any]) -> str:
    if "decode_only_items_per_s" not in e:  # reports written before it was measured
        return "-"
    return f"{e['decode_only_items_per_s']:.1f} ({100 * e['share_of_decode_only']:.0f}%)"


# Rows of end-to-end runs and host ceilings are the dicts ``measurements.end_to_end`` returns.
END_TO_END_COLUMNS: tuple[Column[tuple[str, dict[str, Any]]], ...] = (
    Column("size", lambda item: item[0]),
    Column("batch", lambda item: item[1]["batch"]),
    Column("device", lambda item: item[1].get("device", "-")),
    Column("images", lambda item: item[1]["images"]),
    Column("images/s", lambda item: f"{item[1]['throughput_items_per_s']:.3f}"),
    Column("share of engine-only", lambda item: f"{100 * item[1]['share_of_engine_only']:.0f}%"),
    Column("engine busy", lambda item: f"{100 * engine_busy(item[1]):.0f}%"),
    Column("decoding alone, images/s (share)", lambda item: _decoding_alone(item[1])),
    Column("decoder", lambda item: item[1]["decoder"]),
    Column("latency ms p50 / p95 / p99", lambda item: _latency(item[1])),
    Column(f"ms/image: {STAGE_HEADER}", lambda item: _stage_ms(item[1])),
    Column("bounded by", lambda item: item[1].get("bounded_by") or "-"),
)
HOST_COLUMNS: tuple[Column[dict[str, Any]], ...] = (
    Column("size", lambda h: f"{h['size'][0]}x{h['size'][1]}"),
    Column("outputs", lambda h: h["outputs"]),
    Column("batch", lambda h: h["batch"]),
    Column("device", lambda h: h["device"]),
    Column("images", lambda h: h["images"]),
    Column("images/s", lambda h: f"{h['throughput_items_per_s']:.0f}"),
    Column(f"ms/image: {STAGE_HEADER}", _stage_ms),
    Column("bounded by", lambda h: h.get("bounded_by") or "-"),
)


def _engine_lines(engine: EngineChoice | None) -> list[str]:
    if engine is None:  # reports written before the engine was recorded
        return []
    why = f" ({engine.selection})" if engine.selection else ""
    lines = [f"Engine: {engine.backend} {engine.precision}{engine.computed}{why}."]
    if engine.open_seconds is not None and engine.first_call_ms is not None:
        lines.append(
            f"Cold start, apart from every figure below: the engine opened in "
            f"{engine.open_seconds:.2f} s (loading, preparing; on a GPU one warm-up batch) "
            f"and its first call took {engine.first_call_ms:.1f} ms."
        )
    if engine.advice:
        lines.append(f"Faster here: {engine.advice}.")
    return lines


def _optional(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)


# The per-size table, in bench.md and on the terminal.
SIZE_COLUMNS: tuple[Column[SizeSummary], ...] = (
    Column("size", lambda s: s.label),
    Column("best images/s (batch)", lambda s: f"{s.best_images_per_s:.3f} ({s.best_batch})"),
    Column("latency s/image (batch 1, p50)", lambda s: f"{s.latency_s_per_image:.3f}"),
    Column("share of ceiling", lambda s: f"{100 * s.ceiling_share:.0f}%"),
    Column("baseline images/s", lambda s: _optional(s.baseline_images_per_s, "{:.3f}")),
    Column("speedup", lambda s: _optional(s.speedup_vs_baseline, "{:.2f}x")),
    Column("end to end", lambda s: _optional(s.end_to_end_share, "{:.0%} of engine")),
    Column("verdict", lambda s: s.verdict),
)
ENGINE_ONLY_COLUMNS: tuple[Column[EngineOnlyRow], ...] = (
    Column("size", lambda r: r.size_name),
    Column("batch", lambda r: r.batch),
    Column("backend", lambda r: r.backend),
    Column("precision", lambda r: r.precision),
    Column("GFLOP/image", lambda r: f"{r.gflop_per_image:.1f}"),
    Column("images/s", lambda r: f"{r.throughput_items_per_s:.3f}"),
    Column("p50 ms", lambda r: f"{r.latency_per_call['p50']:.1f}"),
    Column("p99 ms", lambda r: f"{r.latency_per_call['p99']:.1f}"),
    Column("GFLOP/s", lambda r: f"{r.achieved_gflops:.0f}"),
    Column("stable", lambda r: "yes" if r.stable else "no"),
)


def _unit(ceiling: dict[str, Any]) -> str:
    return "GOP/s" if str(ceiling["precision"]).startswith("int8") else "GFLOP/s"


def markdown(report: BenchReport) -> str:
    m, c = report.machine, report.ceiling
    lines = [
        "# psicbatch benchmark",
        "",
        f"Machine: {m['cpu']} ({m.get('isa', 'ISA not recorded')}), {m['cores']} cores, "
        f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}, psicbatch {m['psicbatch']}.",
        *_engine_lines(report.engine),
        f"Ceiling measured in the same run: {c['gflops']:.0f} {_unit(c)} ({c['precision']} "
        f"{c['size']}x{c['size']} matrix product). Peak memory: "
        f"{_memory(report.memory_peak)}.",
        "",
        contention_line(report.contention),
        "",
        "```",
        report.command or "",
        "```",
        "",
        "## Per size",
        "",
    ]
    lines += column_table(SIZE_COLUMNS, report.summary)
    if any(row.ceiling_share > 1 for row in report.summary):
        lines += [
            "",
            "A share above 100% means the model's convolutions ran faster than the "
            "matrix product: that product is a lower bound of the machine's peak here, "
            "not the peak itself, or the engine computed its large kernels in the "
            "frequency domain, with fewer operations than the network's count.",
        ]
    if report.end_to_end:
        lines += ["", "## End to end (`psicbatch run` path)", ""]
        lines += column_table(END_TO_END_COLUMNS, report.end_to_end.items())
        lines += [
            "",
            "Decoding (with the upload and normalisation), inference, post-processing on "
            "the engine's device and rows on the host run in threads of their own, on "
            "different batches at once, and Parquet is written in another; the stage times "
            "add up to more than the wall time when they overlap. 'in series' is the work "
            "the inference thread does besides the engine. Images/s are from the first "
            "batch's rows to the last's (start-up and finalising the file excluded), over "
            "about --duration seconds of work; latency is per image, from the start of its "
            "batch's decoding to its row. 'engine busy' is the share of the run's time the "
            "engine was computing, measured within the run itself (images/s x inference "
            "s/image): unlike the share of engine-only, which compares with a measurement "
            "taken minutes earlier, machine drift cannot move it.",
        ]
        if any(e.get("threshold") == 1.0 for e in report.end_to_end.values()):
            lines += [
                "",
                "The network is untrained (--width): its masks are noise, so the run judges "
                "every image defect-free (image threshold 1), as on a healthy line; the host "
                "ceiling below measures defective and noisy outputs.",
            ]
    if report.host_ceiling:
        lines += ["", "## Host ceiling (null engine, decoding excluded)", ""]
        lines += column_table(HOST_COLUMNS, report.host_ceiling)
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
    lines += column_table(ENGINE_ONLY_COLUMNS, report.results)
    for name, reason in report.sweep.items():
        lines += ["", f"Batch sweep at {name}: stopped, {reason}."]
    lines += [
        "",
        "Latencies are per call (one batch); the baseline is PIL decoding plus torch fp32 eager "
        "inference, one image at a time, as research code runs it.",
        "",
    ]
    return "\n".join(lines)
