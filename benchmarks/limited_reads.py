"""What reading files under a time limit costs, on this machine, in one run.

Every file psicbatch reads may stall (a network share that stopped answering), so each
read runs in a thread that is abandoned at its limit. Two costs are measured here,
alternating the settings three times each so drift of the machine shows as spread:

1. ``psicbatch run``'s PIL decoding (the run path with the null engine, 1408x512 PNG and
   JPEG files, batch 8): a fresh thread for every file, as psicbatch did before, against
   threads kept from one call to the next (``limited``'s default).
2. Training's and evaluation's reads from a path (header, decoded image, mask): within the
   time limit (a kept thread) against the same reads in the caller's thread, with no
   limit, on a labelled dataset's files (KolektorSDD where given).

Usage: python benchmarks/limited_reads.py OUT_DIR [--data FOLDER] [--count 240]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decoding_batches import ROUNDS, SIZE, generated_files  # noqa: E402  (this folder's)

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.bench.measurements import end_to_end  # noqa: E402
from psicbatch.data import images  # noqa: E402
from psicbatch.data.synth import generate  # noqa: E402
from psicbatch.engines.spec import EngineSpec  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402
from psicbatch.run import limited  # noqa: E402

BATCH = 8
READS = 200  # files of each kind read per measurement


@contextmanager
def fresh_threads() -> Iterator[None]:
    """Each time-limited call in a thread of its own, started for it."""
    kept = limited._start

    def start(call: Callable[[], None]) -> None:
        threading.Thread(target=call, name=limited.BUSY_NAME, daemon=True).start()

    limited._start = start
    try:
        yield
    finally:
        limited._start = kept


@contextmanager
def no_limit() -> Iterator[None]:
    """Reads from a path in the caller's thread, as before they had a time limit."""
    limited_open = images._open
    images._open = lambda path, data=None, lazy=False: images._opened(path, data, lazy)
    try:
        yield
    finally:
        images._open = limited_open


def decoding_rate(files: list[Path], folder: Path) -> float:
    spec = EngineSpec(null_outputs="clean", input_size=SIZE)
    result = end_to_end(spec, files, BATCH, folder, "cpu", decoder="pil")
    return float(result["throughput_items_per_s"])


def milliseconds_per_file(read: Callable[[Path], object], files: list[Path]) -> float:
    for path in files[:10]:  # warm the page cache and the thread
        read(path)
    began = time.perf_counter()
    for path in files:
        read(path)
    return (time.perf_counter() - began) * 1e3 / len(files)


def labelled_files(data: Path | None, root: Path) -> tuple[str, list[Path], list[Path]]:
    """A dataset's images and masks: the folder given (KolektorSDD's kosNN/PartN.jpg and
    PartN_label.png), or generated ones."""
    if data is None:
        data = root / "labelled"
        generate(data, READS, (1408, 512), defect_rate=0.5, seed=6)
        pictures = sorted((data / "images").glob("*.png"))
        masks = sorted((data / "masks").glob("*.png"))
        return "generated 1408x512 PNG", pictures, masks
    pictures = sorted(p for p in data.rglob("*") if p.suffix in (".jpg", ".png", ".bmp"))
    masks = [p for p in pictures if "_label" in p.stem]
    pictures = [p for p in pictures if "_label" not in p.stem]
    return str(data), pictures[:READS], masks[:READS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, help="a labelled dataset's folder")
    parser.add_argument("--count", type=int, default=240, help="files per measured run")
    args = parser.parse_args()
    decoding: list[dict] = []
    reading: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for kind, distinct in generated_files(root).items():
            files = [distinct[i % len(distinct)] for i in range(args.count)]
            rates: dict[str, list[float]] = {"fresh": [], "kept": []}
            for round_number in range(ROUNDS):
                for setting in ("fresh", "kept"):
                    out = root / f"{kind}-{setting}-{round_number}"
                    with fresh_threads() if setting == "fresh" else nullcontext():
                        rates[setting].append(decoding_rate(files, out))
            decoding.append({"files": kind, **rates})
            print(decoding[-1], flush=True)
        source, pictures, masks = labelled_files(args.data, root)
        reads = {
            "header": (images.file_header, pictures),
            "decoded image": (lambda path: images.read_image(path, 1), pictures),
            "mask": (images.read_mask, masks),
        }
        for name, (read, files) in reads.items():
            costs: dict[str, list[float]] = {"no limit": [], "limited": []}
            for _ in range(ROUNDS):
                for setting in ("no limit", "limited"):
                    with no_limit() if setting == "no limit" else nullcontext():
                        costs[setting].append(milliseconds_per_file(read, files))
            reading.append({"read": name, "files": len(files), **costs})
            print(reading[-1], flush=True)
    facts = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"machine": facts, "reads_from": source, "decoding": decoding, "reading": reading}
    (args.out / "limited-reads.json").write_text(json.dumps(record, indent=1) + "\n")
    spread = " / ".join
    decoding_rows = [
        [
            row["files"],
            spread(f"{r:.1f}" for r in row["fresh"]),
            spread(f"{r:.1f}" for r in row["kept"]),
            f"{max(row['kept']) / max(row['fresh']):.2f}",
        ]
        for row in decoding
    ]
    reading_rows = [
        [
            row["read"],
            row["files"],
            spread(f"{c:.3f}" for c in row["no limit"]),
            spread(f"{c:.3f}" for c in row["limited"]),
            f"{min(row['limited']) - min(row['no limit']):+.3f}",
        ]
        for row in reading
    ]
    text = (
        f"# Reading under a time limit: {facts['cpu']}, {facts['isa']}\n\n"
        f"`psicbatch run` path, null engine, PIL decoding, {SIZE[0]}x{SIZE[1]}, batch {BATCH}, "
        f"{args.count} files a run; images/s, {ROUNDS} runs of each setting, alternating.\n\n"
        + "\n".join(
            markdown_table(
                ["files", "a fresh thread per file", "kept threads", "best/best"], decoding_rows
            )
        )
        + f"\n\nReads from a path ({source}), milliseconds per file, {ROUNDS} rounds of each "
        "setting, alternating, in one process.\n\n"
        + "\n".join(
            markdown_table(
                ["read", "files", "no limit", "within the limit", "best - best"], reading_rows
            )
        )
        + "\n"
    )
    (args.out / "limited-reads.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
