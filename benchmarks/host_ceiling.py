"""Host-side ceiling of ``psicbatch run`` on this machine, all figures from one run.

1. The whole run path with the null engine and decoding excluded, at 1408x512, for
   clean, defective (one in ten) and noisy outputs: images/s, ms per stage, and the work
   done in series with the engine. Next to it, the per-image definition of a row
   (``tests/reference_rows.py``: resize, threshold, RLE and row one image at a time, with
   today's vectorised RLE encoder) followed by the Parquet write in series, on the same
   outputs: what batching on the device and overlapping the stages add.
2. ``psicbatch run`` with the bundled demo model (128x128 engine: inference is cheap) on
   1408x512 PNG files, against decoding the same files alone (the run's decoder, and plain
   single-thread PIL).

Usage: python benchmarks/host_ceiling.py OUT_DIR [--count 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.assets import demo_model_path  # noqa: E402
from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.bench.measurements import decode_only, host_ceiling  # noqa: E402
from psicbatch.data.synth import generate  # noqa: E402
from psicbatch.engines.null_engine import (  # noqa: E402
    NULL_OUTPUTS,
    NullEngine,
    null_manifest,
)
from psicbatch.engines.spec import EngineSpec, describe_engine  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402
from psicbatch.run.output import INDEX_COLUMN, KEY_COLUMN, PartWriter  # noqa: E402
from psicbatch.run.runner import RunOptions, run  # noqa: E402
from tests.reference_rows import result_row  # noqa: E402

SIZE = (1408, 512)
BATCH = 32


def per_image_reference(outputs: str, images: int, folder: Path) -> float:
    """Images/s of the per-image post-processing and in-series write on null outputs."""
    engine = NullEngine(null_manifest(SIZE, BATCH), torch.device("cpu"), outputs)
    writer = PartWriter(folder / "reference.parquet")
    writer.directory.mkdir(parents=True)  # a run's output creates it; here nothing else does
    batch_input = torch.zeros((BATCH, 1, *SIZE))
    began = time.perf_counter()
    done = 0
    while done < images:
        probabilities, segmentation = (t.numpy() for t in engine.infer(batch_input))
        rows = [
            {
                **result_row(
                    done + i,
                    Path(f"{done + i}.png"),
                    probabilities[i],
                    segmentation[i],
                    SIZE,
                    0.5,
                    0.5,
                ),
                INDEX_COLUMN: done + i,
                KEY_COLUMN: f"{done + i}.png".encode(),
            }
            for i in range(BATCH)
        ]
        writer.write(rows)
        done += BATCH
    return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=200, help="PNG files for part 2")
    parser.add_argument("--seconds", type=float, default=10.0, help="of work per null run")
    args = parser.parse_args()
    report: dict = {"machine": machine(), "size": list(SIZE), "batch": BATCH, "host": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for outputs in NULL_OUTPUTS:
            now = host_ceiling(SIZE, outputs, BATCH, args.seconds, "cpu", folder / outputs)
            reference_count = {"clean": 640, "defects": 640, "noisy": 192}[outputs]
            before = per_image_reference(outputs, reference_count, folder / f"ref-{outputs}")
            report["host"].append({**now, "per_image_reference_items_per_s": before})
            print(
                f"{outputs}: {now['throughput_items_per_s']:.0f} images/s "
                f"(per-image reference {before:.0f})",
                flush=True,
            )
        files = generate(folder / "png", args.count, SIZE, defect_rate=0.3, seed=5)
        checkpoint = demo_model_path()
        spec = EngineSpec(checkpoint=checkpoint)
        summary = run(files, spec, RunOptions(out=folder / "run.parquet", devices=("cpu",)))
        manifest = describe_engine(spec, "cpu", 8)
        preprocessing = manifest.engine_preprocessing()
        decoder = decode_only(files, preprocessing, 8, "cpu")
        began = time.perf_counter()
        for path in files:
            with Image.open(path) as image:
                image.convert("L").load()
        plain = len(files) / (time.perf_counter() - began)
        report["run_vs_decode"] = {
            "files": len(files),
            "run_items_per_s": summary.steady_throughput,
            "run_decoder": summary.decoder,
            "decoder_alone_items_per_s": decoder["throughput_items_per_s"],
            "plain_pil_single_thread_items_per_s": plain,
            "stage_ms_per_image": {
                k: 1000 * v / summary.images for k, v in summary.stage_seconds.items()
            },
        }
        print(json.dumps(report["run_vs_decode"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report["command"] = "python benchmarks/host_ceiling.py " + " ".join(sys.argv[1:])
    (args.out / "host_ceiling.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "host_ceiling.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    m, r = report["machine"], report["run_vs_decode"]
    stages = ("in series", "inference", "postprocess", "write")
    lines = [
        "# psicbatch host ceiling",
        "",
        f"Machine: {m['cpu']} ({m.get('isa', 'ISA not recorded')}), {m['cores']} cores, "
        f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}. All figures from one run.",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"## Null engine, decoding excluded, {report['size'][0]}x{report['size'][1]}, "
        f"batch {report['batch']}",
        "",
    ]
    lines += markdown_table(
        [
            "outputs",
            "images",
            "images/s",
            "per-image rows + serial write, images/s",
            "ratio",
            "ms/image: " + " / ".join(stages),
            "bounded by",
        ],
        [
            [
                h["outputs"],
                h["images"],
                f"{h['throughput_items_per_s']:.0f}",
                f"{h['per_image_reference_items_per_s']:.0f}",
                f"{h['throughput_items_per_s'] / h['per_image_reference_items_per_s']:.1f}x",
                " / ".join(f"{1000 * h['stage_seconds_per_image'].get(s, 0):.3f}" for s in stages),
                h["bounded_by"],
            ]
            for h in report["host"]
        ],
    )
    lines += ["", "## `psicbatch run` against decoding alone (1408x512 PNG, demo model)", ""]
    lines += markdown_table(
        ["files", "run images/s", "run's decoder alone", "share", "plain PIL, one thread", "share"],
        [
            [
                r["files"],
                f"{r['run_items_per_s']:.1f}",
                f"{r['decoder_alone_items_per_s']:.1f}",
                f"{100 * r['run_items_per_s'] / r['decoder_alone_items_per_s']:.0f}%",
                f"{r['plain_pil_single_thread_items_per_s']:.1f}",
                f"{100 * r['run_items_per_s'] / r['plain_pil_single_thread_items_per_s']:.0f}%",
            ]
        ],
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--markdown"]:  # rewrite the markdown of a saved report
        saved = Path(sys.argv[2])
        report = json.loads((saved / "host_ceiling.json").read_text())
        (saved / "host_ceiling.md").write_text(markdown(report))
    else:
        main()
