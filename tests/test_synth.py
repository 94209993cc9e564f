"""The synthetic data generator: discs drawn in their bounding box equal the whole-image
formula, a seed gives the same images, and the command shows its progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from psicbatch.cli import main
from psicbatch.data.synth import add_disc, generate, generate_many


@pytest.mark.parametrize(
    ("cy", "cx", "radius"),
    [(20.3, 30.7, 2.2), (0.0, 0.0, 1.5), (39.9, 59.2, 3.0), (-2.5, 10.0, 3.0), (50.0, 5.0, 4.0)],
)
def test_a_disc_in_its_bounding_box_equals_the_whole_image_formula(
    cy: float, cx: float, radius: float
) -> None:
    y, x = np.mgrid[:40, :60]
    mask = np.zeros((40, 60), bool)
    add_disc(mask, cy, cx, radius)
    assert np.array_equal(mask, (x - cx) ** 2 + (y - cy) ** 2 <= radius**2)


def test_a_seed_gives_the_same_images(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", 6, (64, 48), defect_rate=1.0, seed=3)
    second = generate(tmp_path / "b", 6, (64, 48), defect_rate=1.0, seed=3)
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes()


def test_images_generated_on_several_processes_are_each_chunk_s_own(tmp_path: Path) -> None:
    """Chunk k is generate(..., seed=seed + k) in its own folder: the same images."""
    paths = generate_many(tmp_path / "many", 5, (48, 40), defect_rate=0.4, seed=7, processes=2)
    assert len(paths) == 5 and len(set(paths)) == 5
    for chunk, count in enumerate((3, 2)):
        alone = generate(
            tmp_path / f"alone{chunk}", count, (48, 40), defect_rate=0.4, seed=7 + chunk
        )
        ours = sorted((tmp_path / "many" / str(chunk) / "images").iterdir())
        assert [p.read_bytes() for p in ours] == [p.read_bytes() for p in alone]


def test_synth_shows_progress_unless_quiet(tmp_path: Path) -> None:
    shown = CliRunner().invoke(main, ["synth", str(tmp_path / "a"), "--count", "3"])
    quiet = CliRunner().invoke(main, ["synth", str(tmp_path / "b"), "--count", "3", "-q"])
    assert shown.exit_code == quiet.exit_code == 0
    assert "generating" in shown.output and "generating" not in quiet.output
