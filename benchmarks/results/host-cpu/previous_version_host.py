"""Host path of psicbatch 0.1.0 as first released (commit db89e16) on the null engine's
outputs: rows made one image at a time in the inference thread, then the Parquet write in
series, decoding excluded. From a checkout of this repository:

    git worktree add /tmp/previous db89e16
    python previous_version_host.py /tmp/previous

The outputs are computed first with this checkout's null engine, then the previous
version's code is imported from the worktree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 32
SIZE = (1408, 512)
IMAGES = {"clean": 640, "defects": 640, "noisy": 96}
MAKE_OUTPUTS = """
import sys, numpy, torch
from psicbatch.engines.null_engine import NullEngine, null_manifest
kind, path = sys.argv[1], sys.argv[2]
engine = NullEngine(null_manifest((1408, 512), 32), torch.device("cpu"), kind)
p, s = engine._ready((1408, 512))
numpy.savez(path, p=p.numpy(), s=s.numpy())
"""


class ReadyOutputs:
    """Stands in for the previous version's engine: numpy outputs, handed out in turn."""

    batch_range = (1, 64)

    def __init__(self, probabilities: np.ndarray, segmentation: np.ndarray) -> None:
        self.probabilities, self.segmentation, self.position = probabilities, segmentation, 0

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = self.position % max(len(self.probabilities) - BATCH, 1)
        self.position += len(images)
        chosen = slice(start, start + len(images))
        return self.probabilities[chosen], self.segmentation[chosen, 0]


def measure(previous: str, folder: Path) -> dict[str, float]:
    sys.path.insert(0, previous)
    from psicbatch.run.decode import DecodedBatch
    from psicbatch.run.output import PartWriter
    from psicbatch.run.runner import Worker

    rates = {}
    for kind, count in IMAGES.items():
        data = np.load(folder / f"{kind}.npz")
        worker = Worker.__new__(Worker)  # only what _rows uses: engine and thresholds
        worker.engine = ReadyOutputs(data["p"], data["s"])
        worker.threshold = worker.seg_threshold = 0.5
        writer = PartWriter(folder / f"{kind}.parquet")
        images = np.zeros((BATCH, 1, *SIZE), np.float32)
        began, done = time.perf_counter(), 0
        while done < count:
            items = [(done + i, Path(f"{done + i}.png")) for i in range(BATCH)]
            decoded = DecodedBatch(list(range(BATCH)), images, [SIZE] * BATCH)
            writer.write(worker._rows(items, decoded, {}))
            done += BATCH
        rates[kind] = done / (time.perf_counter() - began)
        print(kind, f"{rates[kind]:.1f} images/s", flush=True)
    return rates


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for kind in IMAGES:
            path = Path(folder) / f"{kind}.npz"
            subprocess.run([sys.executable, "-c", MAKE_OUTPUTS, kind, str(path)], check=True)
        rates = measure(sys.argv[1], Path(folder))
    out = Path(__file__).with_name("previous_version_host.json")
    out.write_text(json.dumps(rates, indent=2) + "\n")


if __name__ == "__main__":
    main()
