"""Benchmark figures: latency percentiles and throughput against batch size."""

from __future__ import annotations

from pathlib import Path

from psicbatch.bench.report import BenchReport


def plot_benchmark(report: BenchReport, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report.results
    labels = [f"{r.size_name}\nbatch {r.batch}" for r in results]
    figure, axes = plt.subplots(figsize=(max(5, 1.3 * len(results)), 3.6), dpi=100)
    width = 0.2
    for offset, percentile in enumerate(("p50", "p90", "p99")):
        values = [r.latency_per_call[percentile] for r in results]
        positions = [i + (offset - 1) * width for i in range(len(results))]
        axes.bar(positions, values, width, label=percentile)
    axes.set_xticks(range(len(results)), labels, fontsize=8)
    axes.set(ylabel="latency per call (ms)", title="Engine latency percentiles")
    axes.legend()
    figure.tight_layout()
    latency = out / "bench_latency.png"
    figure.savefig(latency)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(5, 3.6), dpi=100)
    for key in dict.fromkeys((r.size_name, r.backend, r.precision) for r in results):
        series = [r for r in results if (r.size_name, r.backend, r.precision) == key]
        axes.plot(
            [r.batch for r in series],
            [r.throughput_items_per_s for r in series],
            marker="o",
            label=" ".join(key),
        )
    axes.set(xlabel="batch size", ylabel="images/s", title="Throughput vs batch size")
    axes.set_xscale("log", base=2)
    batches = sorted({r.batch for r in results})
    axes.set_xticks(batches, [str(b) for b in batches])
    axes.legend(fontsize=8)
    figure.tight_layout()
    throughput = out / "bench_throughput.png"
    figure.savefig(throughput)
    plt.close(figure)
    return [latency, throughput]
