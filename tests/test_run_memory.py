"""Memory stays bounded however many images a run processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CONSOLE = Path(sys.executable).parent / "psicbatch"


def resident_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


@pytest.mark.slow  # reason: 3000 images through the full run path, about a minute
def test_resident_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3000):
        image = rng.integers(80, 160, (64, 64), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    out = tmp_path / "results.parquet"
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
            "256",
            "-q",
            "--decoder",
            "pil",
        ]
    )
    samples = []
    while process.poll() is None:
        if (rss := resident_mb(process.pid)) is not None:
            samples.append(rss)
        time.sleep(0.2)
    assert process.returncode == 0
    assert len(samples) >= 10
    early = max(samples[len(samples) // 5 : len(samples) // 3])
    late = max(samples[len(samples) // 3 :])
    # Steady state: the last two thirds of the run use no more than the early part plus slack.
    assert late < early + 64, f"resident memory grew from {early:.0f} MB to {late:.0f} MB"
