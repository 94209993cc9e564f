"""The images a model was trained on and decisions were chosen on, known again by content.

Figures measured on images a model learnt from, or on the images its decisions were
calibrated on, say how it does on those images, not on new parts. So a checkpoint keeps
a digest of every training image file, a decision file one of every validation image, and
an evaluation counts how many of its own images are among them. An image is known by its
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psicbatch.cpus import available_cpus
from psicbatch.paths import hashed_file

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
    reading release the GIL)."""
    with ThreadPoolExecutor(available_cpus()) as pool:
        return list(pool.map(file_digest, paths))


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


def overlap_of(
    files: list[Path],
    training: str | None,
    decisions: dict[str, Any] | None,
    digests: list[bytes | None] | None = None,
) -> Overlap | None:
    """``files``' overlap with a model's training images (``training``, as a checkpoint
    or manifest stores them) and with the validation images of ``decisions`` (their
    record); None, and no file read, when neither records its images. ``digests``: the
    files' own, where they were read already. A record that cannot be decoded counts as
    none: it is a report's aside, not a reason to refuse."""
    validation = ((decisions or {}).get("validation") or {}).get("image_digests")
    known = {
        name: recorded_images(text)
        for name, text in (("training", training), ("validation", validation))
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
    return overlap


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


# What images seen before are, and what their share means for the figures.
SEEN_BEFORE = {
    "training": (
        "the model was trained on",
        "the figures say how it does on images it learnt from, not on new parts",
        "the figures overstate how it does on new parts",
    ),
    "validation": (
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
    what, all_seen, some_seen = SEEN_BEFORE[kind]
    among = f"the {getattr(overlap, kind + '_total')} images {what}"
    if not seen:
        return [f"None of these images is among {among} (known by their files' content)."]
    if seen == overlap.images:
        return [f"All of these images are among {among}: {all_seen}."]
    return [f"{seen} of these {overlap.images} images are among {among}: {some_seen}."]


def training_note(seen: int, images: int) -> str:
    """What calibrating on images the model was trained on means for the threshold."""
    return (
        f"{seen} of the {images} validation images are among those the model was trained on: "
        "its probabilities there are surer than on new parts, so the threshold chosen may "
        "let more defects escape on the line than validation shows"
    )


def trained_on(text: Any) -> str | None:
    """``264 images, known by their files' content``, for ``info``; None unrecorded."""
    images = recorded_images(text)
    return f"{len(images)} images, known by their files' content" if images else None


def recorded_images(text: Any) -> ImageSet | None:
    """A recorded image set; None where none is recorded or the record cannot be decoded
    (the images a model has seen are a report's aside, not a reason to refuse it)."""
    if not text:
        return None
    try:
        return ImageSet.decode(text)
    except ValueError:
        return None
