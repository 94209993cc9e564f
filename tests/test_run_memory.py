"""Memory stays bounded however many images a run processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psicbatch.bench.machine import resident_mib

CONSOLE = Path(sys.executable).parent / "psicbatch"
ROWS_PER_PART = 128


@pytest.mark.slow  # reason: 3000 images through the full run path and a process start
def test_resident_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    """Memory is compared by progress (rows saved in parts), not by time: start-up (imports,
    the engine, thread pools) takes a varying share of a short run."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3000):
        image = rng.integers(80, 160, (64, 64), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    out = tmp_path / "results.parquet"
    parts = out.with_name(out.name + ".parts")
    process = subprocess.Popen(
        [
            CONSOLE,
            "run",
            folder,
            "--out",
            out,
            "--batch-size",
            "16",
            "--flush-every",
            str(ROWS_PER_PART),
            "-q",
            "--decoder",
            "pil",
        ]
    )
    samples = []  # (parts saved, resident MB)
    while process.poll() is None:
        saved = len(list(parts.glob("*.parquet"))) if parts.is_dir() else 0
        if (rss := resident_mib(process.pid)) is not None:
            samples.append((saved, rss))
        time.sleep(0.05)
    assert process.returncode == 0
    # Early: 256 to 1024 rows saved (steady state begun); late: every sample after that.
    early = [rss for saved, rss in samples if 2 <= saved < 8]
    late = [rss for saved, rss in samples if saved >= 8]
    assert len(early) >= 3 and len(late) >= 3, samples
    # The remaining two thirds of the run use no more than the early part plus slack.
    assert max(late) < max(early) + 64, (
        f"resident memory grew from {max(early):.0f} MB to {max(late):.0f} MB"
    )
