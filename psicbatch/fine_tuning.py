"""Training that starts from a trained model's weights (``train --init``, ``cv --init``).

A line's model meets newly labelled images: a new batch of parts, a new defect, a
camera moved. Starting from its weights instead of random ones keeps what it has learnt
(on KolektorSDD it drew better masks than training again, in the same time; see
``benchmarks/results/kolektorsdd-fine-tuning/``). The new model keeps what its weights
were learnt on: the network's width, the image channels and pixel depth, the
normalisation (mean and std) and the resizing; by default also the input size and
tiling, since filters are learnt at one scale. Thresholds are chosen again on the new
training images.

The starting checkpoint is recorded by content (a SHA-256 of its file: a resumed training
or a rerun cross-validation refuses another one), and the images it was trained on join
the new model's record, so an evaluation still says which of its images the model has
seen, directly or through the model it started from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psicbatch.errors import CheckpointError, PsicbatchError
from psicbatch.fingerprints import ImageSet, epochs_chosen_on, recorded_images
from psicbatch.paths import file_sha256

if TYPE_CHECKING:  # torch is imported when a checkpoint is read, not by the command line
    from psicbatch.checkpoint import Checkpoint


@dataclass(frozen=True)
class StartingPoint:
    """The checkpoint a training starts from, and its file's SHA-256 (hex)."""

    path: Path
    checkpoint: Checkpoint
    digest: str

    @property
    def bit_depth(self) -> int:
        return self.checkpoint.preprocessing.bit_depth

    @property
    def channels(self) -> int:
        return self.checkpoint.model_config.in_channels

    @property
    def width(self) -> float:
        return self.checkpoint.model_config.width

    @property
    def images_seen(self) -> ImageSet | None:
        """The images the starting model was trained on, where its record says."""
        return recorded_images(self.checkpoint.training.get("image_digests"))

    @property
    def images_chosen_on(self) -> ImageSet | None:
        """The held-out images that chose the starting model's weights (its kept epochs,
        or those of the model it started from), where its record says."""
        return recorded_images(epochs_chosen_on(self.checkpoint.training))

    def known_among(self, digests: list[bytes | None]) -> tuple[int, int]:
        """How many of ``digests`` (image files' digests) the starting model was trained
        on, and how many are held-out images that chose its epochs (0 where unrecorded)."""
        seen, chose = self.images_seen, self.images_chosen_on
        return (
            seen.count_among(digests) if seen is not None else 0,
            chose.count_among(digests) if chose is not None else 0,
        )

    def check_fits(self, init: str | None, width: float, channels: int, bit_depth: int) -> None:
        """A training from here has options and images as ``train --init`` makes them."""
        if init != self.digest:
            raise ValueError("the options' init must be the starting checkpoint's SHA-256")
        check_same_reading(self, "--width", width, self.width)
        check_same_reading(self, "--channels", channels, self.channels)
        check_same_reading(self, "--bit-depth", bit_depth, self.bit_depth)

    def record(self) -> dict[str, Any]:
        """What a fine-tuned checkpoint and a cross-validation report say of it."""
        images = self.images_seen
        training = self.checkpoint.training
        return {
            "path": str(self.path),
            "sha256": self.digest,
            "data": (training.get("dataset") or {}).get("path"),
            "images": len(images) if images is not None else None,
            # held-out images that chose its weights: evaluations count them too
            **({"epochs_chosen_on": chosen} if (chosen := epochs_chosen_on(training)) else {}),
        }

    def seen_with(self, encoded: str | None) -> str | None:
        """The images a fine-tuned model has seen (``ImageSet.encode``'s form): the new
        training's (``encoded``) and those the starting model was trained on. None when
        neither is recorded."""
        new, earlier = recorded_images(encoded), self.images_seen
        if new is None or earlier is None:
            return encoded if earlier is None else earlier.encode()
        return (new | earlier).encode()


def started_from(record: dict[str, Any]) -> str:
    """``old.pt (SHA-256 3f2a9c81d0e4..., trained on 264 images of /data/line1)``: a
    ``StartingPoint.record`` in words, for notes, ``info`` and reports."""
    images = f"{record['images']} images" if record.get("images") is not None else "images"
    trained = f"trained on {images} of {record['data']}" if record.get("data") else None
    facts = [f"SHA-256 {str(record.get('sha256'))[:12]}...", *([trained] if trained else [])]
    return f"{record.get('path')} ({', '.join(facts)})"


def starting_point(path: Path) -> StartingPoint:
    """Read ``--init``'s checkpoint; refuse, in one line, one that is not a finished
    training's (an unfinished one is resumed, not started from)."""
    from psicbatch.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    if checkpoint.training.get("complete") is False:
        raise CheckpointError(
            path,
            "an unfinished training's progress: finish it with 'psicbatch train --resume' "
            "and start from the checkpoint it writes",
        )
    digest = file_sha256(path)
    return StartingPoint(path, checkpoint, digest)


def check_same_reading(start: StartingPoint, option: str, asked: float, has: float) -> None:
    """Refuse an option that would make the new model read images otherwise than the
    starting one's weights were learnt to (``--channels 3`` from a grayscale model)."""
    if asked != has:
        raise PsicbatchError(
            f"{start.path}: its weights were learnt on {_reading(option, has)}; {option} "
            f"{asked} asks for {_reading(option, asked)} (leave {option} out to keep the "
            "checkpoint's)"
        )


def _reading(option: str, value: float) -> str:
    if option == "--channels":
        return "grayscale images" if value == 1 else "colour images"
    if option == "--bit-depth":
        return f"{value}-bit pixels"
    return f"a network of width {value}"
