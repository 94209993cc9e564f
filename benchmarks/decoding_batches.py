"""Decoding one batch at a time against several at once, on this machine, in one run.

A worker's decoding stage waits for a batch's slowest file before the next batch starts;
when the worker has more decoding threads than the batch has files (16 CPUs and batches
of 8 on a GPU server), threads idle. ``psicbatch run`` therefore decodes
``ceil(threads / batch)`` batches at once (at most 4; DALI with a pipeline each). This
measures ``psicbatch run``'s path with the null engine (no inference cost: decoding
decides) on 1408x512 PNG and JPEG files, PIL and DALI (CPU) decoding, one batch at a time
against the default, at batches where this machine's threads outnumber the batch and
where they do not. The two settings alternate, three times each, so drift of the machine
shows as spread.

Usage: python benchmarks/decoding_batches.py OUT_DIR [--count 240] [--batches 1,2,8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.bench.measurements import end_to_end  # noqa: E402
from psicbatch.cpus import available_cpus  # noqa: E402
from psicbatch.data.synth import generate  # noqa: E402
from psicbatch.engines.spec import EngineSpec  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402
from psicbatch.run import decode  # noqa: E402

SIZE = (1408, 512)
DISTINCT = 24  # generated images, cycled through
ROUNDS = 3


def images_per_second(
    files: list[Path], batch: int, decoder: str, at_once: int | None, folder: Path
) -> float:
    """The run path's rate with at most ``at_once`` batches decoded at once (None: the
    default rule). The worker runs in this process, so the limit applies to it."""
    default = decode.MAX_DECODING_BATCHES
    decode.MAX_DECODING_BATCHES = at_once or default
    try:
        spec = EngineSpec(null_outputs="clean", input_size=SIZE)
        result = end_to_end(spec, files, batch, folder, "cpu", decoder=decoder)
    finally:
        decode.MAX_DECODING_BATCHES = default
    return float(result["throughput_items_per_s"])


def generated_files(root: Path) -> dict[str, list[Path]]:
    """DISTINCT generated images at SIZE under ``root``, as PNG and as JPEG files."""
    pngs = sorted(generate(root / "generated", DISTINCT, SIZE, seed=5))
    for png in pngs:
        Image.open(png).save(png.with_suffix(".jpg"), quality=92)
    return {"png": pngs, "jpg": [png.with_suffix(".jpg") for png in pngs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=240, help="files per measured run")
    parser.add_argument("--batches", default="1,2,8")
    parser.add_argument("--decoders", default="pil,dali")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    threads = available_cpus()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generated = generated_files(root)
        cases = [
            (decoder, kind, distinct, batch)
            for decoder in args.decoders.split(",")
            for kind, distinct in generated.items()
            for batch in batches
        ]
        for decoder, kind, distinct, batch in cases:
            files = [distinct[i % len(distinct)] for i in range(args.count)]
            rates: dict[str, list[float]] = {"one": [], "default": []}
            for round_number in range(ROUNDS):
                for setting, at_once in (("one", 1), ("default", None)):
                    out = root / f"{decoder}-{kind}-{batch}-{setting}-{round_number}"
                    rates[setting].append(images_per_second(files, batch, decoder, at_once, out))
            at_once = decode.concurrent_batches(threads, batch)
            result = {"decoder": decoder, "kind": kind, "batch": batch, "at_once": at_once}
            results.append({**result, **rates})
            rows.append(
                [
                    *result.values(),
                    " / ".join(f"{r:.1f}" for r in rates["one"]),
                    " / ".join(f"{r:.1f}" for r in rates["default"]),
                    f"{max(rates['default']) / max(rates['one']):.2f}",
                ]
            )
            print(rows[-1], flush=True)
    facts = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decoding-batches.json").write_text(
        json.dumps({"machine": facts, "threads": threads, "results": results}, indent=1) + "\n"
    )
    header = ["decoder", "files", "batch", "batches at once", "one at a time, images/s"]
    header += ["default", "best/best"]
    text = (
        f"# Decoding batches at once: {facts['cpu']}, {facts['isa']}, {threads} decoding "
        f"threads\n\n`psicbatch run` path, null engine, CPU decoding, {SIZE[0]}x{SIZE[1]}, "
        f"{args.count} files a run; {ROUNDS} runs of each setting, alternating.\n\n"
        + "\n".join(markdown_table(header, rows))
        + "\n"
    )
    (args.out / "decoding-batches.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
