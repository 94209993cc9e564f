"""The images a model was trained on and decisions were chosen on, known again by content.

Figures measured on images a model learnt from, on the held-out images that chose its
kept epochs or thresholds, or on the images its decisions were calibrated on, say how it
does on those images, not on new parts. So a checkpoint keeps a digest of every training
and validation image file, a decision file one of every validation image, and an
evaluation counts how many of its own images are among them. An image is known by its
file's bytes (a 64-bit BLAKE2b digest): a copy or a renamed file is the same image, a
re-encoded one is not. A set is stored as one base64 string of its sorted digests, eight
bytes an image (2.8 kB of text for 264 KolektorSDD training images).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from psicbatch.cpus import available_cpus
from psicbatch.data import images as image_files
from psicbatch.paths import hashed_file
from psicbatch.run.limited import TimeLimitExceeded, run_limited

DIGEST_SIZE = 8  # bytes: a chance collision among a million images is about 3e-8


def file_digest(path: os.PathLike | str) -> bytes | None:
    """The digest of a regular file's bytes; None for one that cannot be read (a pipe
    would make the read wait for ever)."""
    try:
        if not os.path.isfile(path):
            return None
        return hashed_file(path, hashlib.blake2b(digest_size=DIGEST_SIZE)).digest()
    except OSError:
        return None


def file_digests(paths: Iterable[os.PathLike | str]) -> list[bytes | None]:
    """``file_digest`` of each path, in order, read by a thread per CPU (hashing and
    reading release the GIL), each within the read limit: past it, ``ReadStalled`` (the
    share stopped answering; the files beside it would stall as long)."""
    paths = list(paths)
    calls = [partial(file_digest, path) for path in paths]
    digests: list[bytes | None] = []
    for path, digest in zip(
        paths, run_limited(calls, available_cpus(), image_files.READ_SECONDS), strict=True
    ):
        if isinstance(digest, TimeLimitExceeded):
            raise image_files.read_stalled(Path(path))
        if isinstance(digest, BaseException):
            raise digest
        digests.append(digest)
    return digests


@dataclass(frozen=True)
class ImageSet:
    digests: frozenset[bytes]

    @classmethod
    def of_files(cls, paths: Iterable[Path]) -> ImageSet:
        """The set of the files that can be read (one that cannot is left out)."""
        return cls.of_digests(file_digests(paths))

    @classmethod
    def of_digests(cls, digests: Iterable[bytes | None]) -> ImageSet:
        return cls(frozenset(d for d in digests if d is not None))

    def __len__(self) -> int:
        return len(self.digests)

    def encode(self) -> str:
        """The stored form: base64 of the sorted digests, one after another."""
        return base64.b64encode(b"".join(sorted(self.digests))).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> ImageSet:
        """From ``encode``'s form; ValueError for anything else."""
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, AttributeError) as error:
            raise ValueError(f"image digests are not base64 ({error})") from None
        if len(raw) % DIGEST_SIZE:
            raise ValueError(f"image digests are not {DIGEST_SIZE}-byte digests")
        return cls(frozenset(raw[i : i + DIGEST_SIZE] for i in range(0, len(raw), DIGEST_SIZE)))

    def __or__(self, other: ImageSet) -> ImageSet:
        return ImageSet(self.digests | other.digests)

    def count_among(self, digests: Iterable[bytes | None]) -> int:
        """How many of ``digests`` (an evaluation's images, duplicates counted) are in
        this set."""
        return sum(1 for digest in digests if digest is not None and digest in self.digests)


@dataclass
class Overlap:
    """How many of an evaluation's images were seen before: among the images the model
    was trained on, among those its decisions were chosen on (None: no record says)."""

    images: int
    training: int | None = None
    training_total: int | None = None  # the images the model was trained on
    validation: int | None = None
    validation_total: int | None = None  # the images the decisions were chosen on
    chosen: int | None = None
    chosen_total: int | None = None  # the held-out images that chose the model
    chosen_for: str | None = None  # what they chose: "the model's kept epochs and thresholds"


def overlap_of(
    files: list[Path],
    training: str | None,
    decisions: dict[str, Any] | None,
    digests: list[bytes | None] | None = None,
    chosen: Any = None,
) -> Overlap | None:
    """``files``' overlap with a model's training images (``training``, as a checkpoint
    or manifest stores them), with the held-out images that chose the model (``chosen``,
    ``chosen_on``'s record) and with the validation images of ``decisions`` (their
    record); None, and no file read, when none records its images. ``digests``: the
    files' own, where they were read already. A record that cannot be decoded counts as
    none: it is a report's aside, not a reason to refuse."""
    validation = _record(_record(decisions).get("validation")).get("image_digests")
    known = {
        name: recorded_images(text)
        for name, text in (
            ("training", training),
            ("chosen", _record(chosen).get("image_digests")),
            ("validation", validation),
        )
    }
    if not any(known.values()):
        return None
    if digests is None:
        digests = file_digests(files)
    overlap = Overlap(len(files))
    for name, images in known.items():
        if images:
            setattr(overlap, name, images.count_among(digests))
            setattr(overlap, f"{name}_total", len(images))
    if overlap.chosen is not None:
        overlap.chosen_for = str(_record(chosen).get("chose", "the model"))
    return overlap


def chosen_on(training: dict[str, Any]) -> dict[str, str]:
    """The held-out images that chose what a model is, and what they chose, for its
    manifest: ``{"chose": "the model's kept epochs and thresholds", "image_digests": ...}``;
    empty where none chose anything (validation images that only scored the epochs are
    held out still)."""
    choices = _choices(training)
    if not choices:
        return {}
    own = [what for what in ("kept epochs", "thresholds") if what in choices]
    said = [f"the model's {' and '.join(own)}"] if own else []
    if "starting epochs" in choices:
        said.append("the kept epochs of the model it started from")
    return {"chose": " and ".join(said), "image_digests": _union(choices.values())}


def epochs_chosen_on(training: dict[str, Any]) -> str | None:
    """The held-out images that chose a model's weights (its kept epochs, or those of the
    model it started from): what a model fine-tuned from it records; None if none did."""
    choices = _choices(training)
    weights = [choices[what] for what in ("kept epochs", "starting epochs") if what in choices]
    return _union(weights) if weights else None


def _choices(training: dict[str, Any]) -> dict[str, ImageSet]:
    """What held-out images chose, and which: the kept epochs (``train --keep best``), the
    thresholds (``--thresholds-on validation``), the starting model's kept epochs
    (``--init``), from a checkpoint's training record."""
    options = _record(training.get("options"))
    held_out = recorded_images(_record(training.get("validation")).get("image_digests"))
    made = {
        "kept epochs": held_out if options.get("keep") == "best" else None,
        "thresholds": held_out if options.get("thresholds_on") == "validation" else None,
        "starting epochs": recorded_images(_record(training.get("init")).get("epochs_chosen_on")),
    }
    return {what: images for what, images in made.items() if images}


def _record(value: Any) -> dict[str, Any]:
    """A record as read from a file (a manifest, a checkpoint, a results file's metadata):
    one damaged into something else counts as none, since the images a model has seen
    are a report's aside, not a reason to refuse it."""
    return value if isinstance(value, dict) else {}


def _union(sets: Iterable[ImageSet]) -> str:
    return ImageSet(frozenset().union(*(image_set.digests for image_set in sets))).encode()


def copies_note(ids: list[str], digests: list[bytes | None], shown: int = 3) -> str | None:
    """``2 of the 400 images are byte-identical copies of others (kos26/Part0 of
    kos01/Part0, ...)``; None when every image file is its own."""
    first: dict[bytes, str] = {}
    copies = []
    for sample_id, digest in zip(ids, digests, strict=True):
        if digest is not None:
            original = first.setdefault(digest, sample_id)
            if original != sample_id:
                copies.append(f"{sample_id} of {original}")
    if not copies:
        return None
    more = f", and {len(copies) - shown} more" if len(copies) > shown else ""
    are = (
        "is a byte-identical copy of another"
        if len(copies) == 1
        else ("are byte-identical copies of others")
    )
    return (
        f"{len(copies)} of the {len(ids)} images {are} "
        f"({', '.join(copies[:shown])}{more}): each weighs twice in training, and a copy "
        "labelled differently contradicts its original"
    )


@dataclass(frozen=True)
class SeenBefore:
    """What images seen before are (``what``), and what their share means for the
    figures: all of them (``all_seen``), some (``some_seen``); ``label``: ``info``'s key."""

    label: str
    what: str
    all_seen: str
    some_seen: str


SEEN_BEFORE = {
    "training": SeenBefore(
        "seen in training",
        "the model was trained on",
        "the figures say how it does on images it learnt from, not on new parts",
        "the figures overstate how it does on new parts",
    ),
    "chosen": SeenBefore(
        "seen in choosing the model",
        "that chose {chose}",
        "the figures say how it does on the images it was chosen for, not on new parts",
        "the figures overstate how it does on new parts",
    ),
    "validation": SeenBefore(
        "seen in validation",
        "the decisions were chosen on",
        "the rates repeat validation's and do not check the decisions on images they have not seen",
        "the rates are partly validation's own and check the decisions less than they seem to",
    ),
}


def seen_before(overlap: Overlap | None, kind: str) -> list[str]:
    """The sentence saying how many of the images the model (``training``) or the
    decisions (``validation``) had seen, known by their files' content; none unrecorded."""
    seen = getattr(overlap, kind) if overlap is not None else None
    if overlap is None or seen is None:
        return []
    said = SEEN_BEFORE[kind]
    what = said.what.format(chose=overlap.chosen_for)
    among = f"the {getattr(overlap, kind + '_total')} images {what}"
    if not seen:
        return [f"None of these images is among {among} (known by their files' content)."]
    if seen == overlap.images:
        return [f"All of these images are among {among}: {said.all_seen}."]
    return [f"{seen} of these {overlap.images} images are among {among}: {said.some_seen}."]


def calibration_notes(training: int | None, chosen: int | None, images: int) -> list[str]:
    """What calibrating on images the model was trained on (``training`` of ``images``),
    or on held-out images that chose its epochs or thresholds (``chosen``), means for the
    threshold."""
    why = {
        "those the model was trained on": (training, "its probabilities there are surer"),
        "the held-out images that chose the model's epochs or thresholds": (
            chosen,
            "it was picked for how it did on them: it does better there",
        ),
    }
    return [
        f"{seen} of the {images} validation images are among {among}: {surer} than on new "
        "parts, so the threshold chosen may let more defects escape on the line than "
        "validation shows"
        for among, (seen, surer) in why.items()
        if seen
    ]


def trained_on(text: Any) -> str | None:
    """``264 images, known by their files' content``, for ``info``; None unrecorded."""
    images = recorded_images(text)
    return f"{len(images)} images, known by their files' content" if images else None


def chosen_text(chosen: Any) -> str | None:
    """``the model's kept epochs: 130 held-out images, known by their files' content``,
    for ``info``; None where no held-out image chose anything."""
    record = _record(chosen)
    images = recorded_images(record.get("image_digests"))
    if not images:
        return None
    return f"{record.get('chose')}: {len(images)} held-out images, known by their files' content"


def recorded_images(text: Any) -> ImageSet | None:
    """A recorded image set; None where none is recorded or the record cannot be decoded
    (the images a model has seen are a report's aside, not a reason to refuse it)."""
    if not text:
        return None
    try:
        return ImageSet.decode(text)
    except ValueError:
        return None
