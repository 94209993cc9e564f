"""Memory of cutting a dataset into training tiles alone (``data.memory.load_tiles``):
the peak while cutting, and what stays resident once the tiles are held.

    python benchmarks/tile_loading_memory.py DATA 256x256 32

DATA is a dataset in the folder layout (``psicbatch synth DATA --size 2048x2048``). Run
it with PYTHONPATH at a checkout to measure that checkout's code.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from psicbatch.bench.machine import resident_mib
from psicbatch.data.layouts import read_dataset
from psicbatch.data.memory import load_tiles

folder, size, overlap = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
height, width = (int(side) for side in size.split("x"))
samples = read_dataset(folder, "folder")
before = resident_mib()
data = load_tiles(samples, (height, width), overlap, 1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(
    f"{len(data.images)} tiles, {data.images.numel() / 2**20:.0f} MiB of pixels; resident "
    f"before {before:.0f} MiB, after {resident_mib():.0f} MiB; peak {peak:.0f} MiB"
)
