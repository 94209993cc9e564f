"""Image digests: what a checkpoint, a decision file and an evaluation compare."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from psicbatch.fingerprints import ImageSet, chosen_on, chosen_text, file_digest, overlap_of


def test_a_copy_is_the_same_image_and_another_file_is_not(tmp_path: Path) -> None:
    first, other = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(b"\x89PNG one image")
    other.write_bytes(b"\x89PNG another image")
    copy = Path(shutil.copy(first, tmp_path / "renamed.png"))
    assert file_digest(copy) == file_digest(first) != file_digest(other)
    images = ImageSet.of_files([first, tmp_path / "missing.png"])  # unreadable: left out
    assert len(images) == 1
    assert ImageSet.decode(images.encode()) == images
    overlap = overlap_of([copy, other, first], images.encode(), None)
    assert overlap is not None
    assert (overlap.images, overlap.training, overlap.training_total) == (3, 2, 1)
    assert overlap.validation is None  # no decisions: not recorded, not "none seen"


@pytest.mark.timeout(60)
def test_a_named_pipe_is_not_read(tmp_path: Path) -> None:
    """Reading a FIFO would wait for ever for a writer."""
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    assert file_digest(pipe) is None


@pytest.mark.parametrize("text", ["not base64!", "AAAA", 42])
def test_a_damaged_record_is_refused_by_decode_and_ignored_by_overlap(text: object) -> None:
    with pytest.raises(ValueError):
        ImageSet.decode(text)  # type: ignore[arg-type]
    assert overlap_of([], text, None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("damaged", ["garbage", 7, ["a"], {"image_digests": "not base64!"}])
def test_a_damaged_record_of_the_images_that_chose_a_model_counts_as_none(
    tmp_path: Path, damaged: object
) -> None:
    """A hand-edited manifest, checkpoint record or results file: nothing said, no error."""
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG an image")
    assert overlap_of([image], None, None, chosen=damaged) is None
    assert chosen_text(damaged) is None
    record = {"options": {"keep": "best"}, "validation": damaged, "init": damaged}
    assert chosen_on(record) == {} and chosen_on({"options": damaged}) == {}
    held = ImageSet.of_files([image]).encode()
    kept = {"options": {"keep": "best"}, "validation": {"image_digests": held}}
    assert chosen_on(kept) == {"chose": "the model's kept epochs", "image_digests": held}
