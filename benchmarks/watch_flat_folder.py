"""How long a watch takes to find a new file in one flat folder that keeps N inspected
files: under continuous arrivals the folder changes at every poll and is listed again,
and a poll waits long enough to take at most a tenth of the time.

    python benchmarks/watch_flat_folder.py [N ...]   (default 10000 30000 100000)

Files are empty (a poll stats only new names, it reads none); the folder is a temporary
one on this machine's disk.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from psicbatch.run.folder_scan import FolderScan, Ledger, version


def first_poll_after_a_new_file(count: int) -> tuple[float, float]:
    """Seconds of the poll that finds one new file, and the wait it sets before the next."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for index in range(count):
            (folder / f"img_{index:07d}.png").touch()
        ledger = Ledger(version(path, path.stat()) for path in folder.iterdir())
        scan = FolderScan(folder, folder / "results", ledger)
        scan.pending(time.monotonic())  # the first, full pass
        (folder / "new.png").touch()
        started = time.perf_counter()
        found = scan.pending(time.monotonic())
        took = time.perf_counter() - started
        assert list(found) == [folder / "new.png"]
        return took, scan.wait_seconds


print("files in the folder | poll finding a new file (s) | wait before the next poll (s)")
for count in [int(arg) for arg in sys.argv[1:]] or [10_000, 30_000, 100_000]:
    took, wait = first_poll_after_a_new_file(count)
    print(f"{count} | {took:.3f} | {wait:.2f}")
