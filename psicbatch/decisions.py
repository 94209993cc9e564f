"""Decisions a line can set: the image threshold chosen for a target escape rate (defective
parts judged good), a minimum defect area, and the rule combining them; stored in a
versioned decision file that ``psicbatch run --decisions`` applies.

A line does not ask for the best F1: it asks for no escapes, and as few false rejects
(good parts judged defective) as that allows. Every candidate threshold's rates are
computed on labelled validation images, and the chosen operating point says how much the
validation data can vouch for it: with n defective images and none escaping, the escape
rate is only known to be below the one-sided 95% Clopper-Pearson bound 1 - 0.05^(1/n)
(about 3/n), which a report must show, not hide.
"""

from __future__ import annotations

import getpass
import json
import math
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from psicbatch.atomic import write_atomically
from psicbatch.errors import PsicbatchError
from psicbatch.part_scores import PartIndex
from psicbatch.paths import FileSnapshot, readable_path
from psicbatch.scores import TypeEscapes, named_types

RULES = ("classifier", "both", "either")  # how the image decision and the area combine
CONFIDENCE = 0.95
PARTS_TARGET = "parts"  # a target's key naming what made the parts it counts, if it does
DECISIONS_FORMAT = "psicbatch-decisions"
DECISIONS_VERSION = 2  # 2: may name a region of interest (version 1 never does)


@dataclass(frozen=True)
class Rule:
    """``classifier``: probability >= threshold. ``both``: that and a mask of at least
    ``min_area`` pixels (specks do not reject a part). ``either``: one of the two."""

    name: str = "classifier"
    min_area: int = 0

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise PsicbatchError(f"unknown rule {self.name!r}; choose one of {', '.join(RULES)}")
        if self.min_area < 0:
            raise PsicbatchError(f"the minimum area must be at least 0 pixels, got {self.min_area}")

    def conditions(self, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images judged defective whatever the probability, images judged defective
        when their probability reaches the threshold), from the mask areas."""
        areas = np.asarray(areas)
        large = areas >= self.min_area
        none = np.zeros(areas.shape, dtype=bool)
        if self.name == "both":
            return none, large
        if self.name == "either":
            return large & (areas > 0), ~none
        return none, ~none

    @property
    def needs_probability(self) -> bool:
        """Whether an image below the probability threshold is judged defect-free whatever
        its mask (so a gated run need not compute its mask)."""
        return self.name != "either"

    def defective(self, above: np.ndarray, areas: np.ndarray) -> np.ndarray:
        """The decision from 'probability at or above the threshold' and the mask areas."""
        always, when_above = self.conditions(areas)
        return always | (above & when_above)


CLASSIFIER = Rule()  # the default: the image probability alone


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    escapes: int  # defective images judged good
    defective: int
    false_rejects: int  # good images judged defective
    good: int
    by_type: tuple[TypeEscapes, ...] = ()  # where a review named defect types
    unit: str = "images"  # what the counts count: images, or parts (``part_scores``)

    @property
    def escape_rate(self) -> float:
        return self.escapes / self.defective

    @property
    def false_reject_rate(self) -> float:
        return self.false_rejects / self.good

    @property
    def escape_rate_upper(self) -> float:
        """One-sided 95% upper confidence bound of the escape rate (Clopper-Pearson)."""
        return upper_bound(self.escapes, self.defective)

    def to_dict(self) -> dict[str, Any]:
        record = {
            **{key: value for key, value in asdict(self).items() if key != "by_type"},
            "escape_rate": self.escape_rate,
            "false_reject_rate": self.false_reject_rate,
            "escape_rate_upper_95": self.escape_rate_upper,
        }
        if self.by_type:
            record["defect_types"] = [asdict(kind) for kind in self.by_type]
        return record

    def within(self, type_limits: dict[str, float]) -> bool:
        """Whether each named type's escape rate is within its limit."""
        return all(
            kind.escapes / kind.images <= type_limits.get(kind.defect_type, 1.0)
            for kind in self.by_type
        )


def upper_bound(failures: int, trials: int, confidence: float = CONFIDENCE) -> float:
    """Clopper-Pearson one-sided upper bound of a rate seen ``failures`` times in ``trials``."""
    from scipy.stats import beta  # imported here: it takes 0.4 s, and only calibration needs it

    if failures >= trials:
        return 1.0
    return float(beta.ppf(confidence, failures + 1, trials - failures))


def operating_points(
    probabilities: np.ndarray,
    labels: np.ndarray,
    areas: np.ndarray,
    rule: Rule,
    defect_types: Sequence[str] | None = None,
    parts: Sequence[str] | None = None,
) -> list[OperatingPoint]:
    """Every distinct decision the threshold can make on these images, from the lowest
    threshold (everything rejected) up: each at the midpoint between neighbouring scores,
    so the validation images keep their decision with the largest margin; with each
    image's ``defect_types`` (a review's), each type's escapes at every point. With each
    image's part (``parts``), counted in parts: a part is defective when any of its images
    is, and judged defective when any of its images is (``part_scores``)."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(probabilities, dtype=float)
    always, when_above = rule.conditions(areas)
    swing = when_above & ~always  # decided by the threshold alone
    kinds = named_types(defect_types, labels.tolist()) if defect_types is not None else []
    members = [labels & (np.asarray(defect_types) == kind) for kind in kinds]
    if parts is not None:
        of = PartIndex.of(parts)
        # A part swings at its highest-scoring image that the threshold decides.
        scores = np.where(of.any(swing), of.max(np.where(swing, scores, -np.inf)), of.max(scores))
        always = of.any(always)
        swing = of.any(swing) & ~always
        labels = of.any(labels)
        members = [of.any(member) for member in members]
    unit = "images" if parts is None else "parts"
    _check_both_kinds(labels, unit)
    distinct = np.unique(scores)
    candidates = np.array(
        [0.0, *((distinct[:-1] + distinct[1:]) / 2), math.nextafter(distinct[-1], 2)]
    )
    judged = _judged_counter(scores, always, swing, candidates)
    defective, good = int(labels.sum()), int((~labels).sum())
    caught, rejected = judged(labels), judged(~labels)
    by_type = [
        (kind, int(member.sum()), judged(member))
        for kind, member in zip(kinds, members, strict=True)
    ]
    return [
        OperatingPoint(
            float(t),
            defective - int(caught[n]),
            defective,
            int(rejected[n]),
            good,
            tuple(TypeEscapes(k, images, images - int(found[n])) for k, images, found in by_type),
            unit,
        )
        for n, t in enumerate(candidates)
    ]


class NoRates(PsicbatchError):
    """Validation images (or parts) all of one kind: no escape or false-reject rate."""


def _check_both_kinds(labels: np.ndarray, unit: str) -> None:
    kind = unit[:-1]  # image, part
    if not labels.any():
        raise NoRates(
            f"the validation images hold no defective {kind}: an escape rate cannot be "
            f"estimated; add labelled defective {unit}"
        )
    if labels.all():
        raise NoRates(
            f"the validation images hold no defect-free {kind}: a false-reject rate cannot "
            f"be estimated; add labelled good {unit}"
        )


def point_at(
    threshold: float, probabilities: np.ndarray, labels: np.ndarray, areas: np.ndarray, rule: Rule
) -> OperatingPoint:
    """The escapes and false rejects of one threshold on these images, counted in images
    (decisions chosen for parts, seen image by image)."""
    labels = np.asarray(labels, dtype=bool)
    judged = rule.defective(np.asarray(probabilities) >= threshold, areas)
    return OperatingPoint(
        threshold,
        int((labels & ~judged).sum()),
        int(labels.sum()),
        int((~labels & judged).sum()),
        int((~labels).sum()),
    )


def _judged_counter(
    scores: np.ndarray, always: np.ndarray, swing: np.ndarray, candidates: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """How many of a set of images (a boolean mask) are judged defective at each candidate
    threshold: those judged so whatever their score (``always``) and those the threshold
    decides (``swing``) at or above it. One sort and cumulative counts, not a pass over
    every image per candidate: the images at or above a threshold are a prefix of the
    images by descending score."""
    order = np.argsort(-scores, kind="stable")
    swinging = swing[order]
    above = len(scores) - np.searchsorted(np.sort(scores), candidates, side="left")

    def judged(members: np.ndarray) -> np.ndarray:
        cumulative = np.concatenate([[0], np.cumsum(swinging & members[order])])
        return int((always & members).sum()) + cumulative[above]

    return judged


def choose(
    points: list[OperatingPoint],
    max_escape_rate: float | None = 0.0,
    max_false_reject_rate: float | None = None,
    type_limits: dict[str, float] | None = None,
) -> OperatingPoint:
    """The operating point for a target: the fewest false rejects with at most
    ``max_escape_rate`` escapes, or the fewest escapes with at most
    ``max_false_reject_rate`` false rejects (ties: the higher threshold); either way
    within each defect type's limit in ``type_limits``."""
    limits = type_limits or {}
    points = [p for p in points if p.within(limits)]
    of_types = "".join(f", {kind} at most {limit:g}" for kind, limit in sorted(limits.items()))
    if max_false_reject_rate is not None:
        allowed = [p for p in points if p.false_reject_rate <= max_false_reject_rate]
        target = f"a false-reject rate of at most {max_false_reject_rate:g}{of_types}"
        return _best(allowed, target, lambda p: (p.escapes, p.false_rejects, -p.threshold))
    limit = 0.0 if max_escape_rate is None else max_escape_rate
    allowed = [p for p in points if p.escape_rate <= limit]
    target = f"an escape rate of at most {limit:g}{of_types}"
    return _best(allowed, target, lambda p: (p.false_rejects, p.escapes, -p.threshold))


def _best(
    allowed: list[OperatingPoint], target: str, order: Callable[[OperatingPoint], tuple]
) -> OperatingPoint:
    if not allowed:  # the lowest threshold rejects everything: only an area rule can miss
        raise PsicbatchError(
            f"no threshold gives {target} on these images with this rule; relax the target "
            "or the minimum area"
        )
    return min(allowed, key=order)


@dataclass
class Decisions:
    """What a decision file holds: the thresholds, the rule, and how they were chosen."""

    classification_threshold: float  # pixel thresholds stay the model's own
    rule: Rule = field(default_factory=Rule)
    # max_escape_rate or max_false_reject_rate; max_escape_rate_of: {defect type: rate}
    target: dict[str, Any] = field(default_factory=dict)
    pixel_size_mm: float | None = None  # when the minimum area was given in mm²
    validation: dict[str, Any] = field(default_factory=dict)  # rates, counts, source
    set_by: str = ""
    set_at: str = ""
    command: str = ""
    # The engine whose probabilities the threshold was chosen on (backend, precision,
    # engine_sha256); empty when unknown (cv predictions pool several folds' models).
    scored_by: dict[str, Any] = field(default_factory=dict)
    # The region of interest the masks were counted inside (file, sha256, size), which
    # runs must apply (``region_record``); None for whole images.
    roi: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Version 1 unless a region is named: psicbatch before regions reads such files
        and would not know to apply it, so it must refuse them."""
        version = DECISIONS_VERSION if self.roi is not None else 1
        return {"format": DECISIONS_FORMAT, "version": version, **asdict(self)}

    def write(self, path: Path) -> None:
        """Written whole to a temporary name, then renamed: never half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        write_atomically(path, lambda temporary: temporary.write_text(text))

    @staticmethod
    def is_decision_file(path: Path) -> bool:
        """A JSON file written by ``psicbatch calibrate``."""
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(data, dict) and data.get("format") == DECISIONS_FORMAT

    @classmethod
    def read(cls, path: Path) -> Decisions:
        return cls.read_hashed(path)[0]

    @classmethod
    def read_hashed(cls, path: Path) -> tuple[Decisions, str]:
        """The decisions and the sha256 of the very bytes they were read from."""
        try:
            snapshot = FileSnapshot.read(path)
            data = json.loads(snapshot.data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise PsicbatchError(
                f"{readable_path(path)}: not a readable decision file ({reason})"
            ) from None
        return cls.from_dict(data, str(path)), snapshot.sha256

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Decisions:
        """A decision file's content (also as an engine manifest stores it)."""
        if not isinstance(data, dict) or data.get("format") != DECISIONS_FORMAT:
            raise PsicbatchError(f"{where}: not a psicbatch decision file")
        if data.get("version", 0) > DECISIONS_VERSION:
            raise PsicbatchError(
                f"{where}: decision file version {data['version']} is newer than this "
                f"psicbatch reads (up to {DECISIONS_VERSION}); upgrade psicbatch"
            )
        try:
            return cls(
                classification_threshold=float(data["classification_threshold"]),
                rule=Rule(**data.get("rule", {})),
                target=data.get("target", {}),
                pixel_size_mm=data.get("pixel_size_mm"),
                validation=data.get("validation", {}),
                set_by=data.get("set_by", ""),
                set_at=data.get("set_at", ""),
                command=data.get("command", ""),
                scored_by=data.get("scored_by") or {},
                roi=_region(data.get("roi")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise PsicbatchError(f"{where}: damaged decision file ({error})") from None


def target_text(target: dict[str, Any]) -> str:
    """``max_escape_rate 0, of crack 0``, and ``counted in parts (the dataset's groups)``
    for decisions chosen for parts."""
    limits = target.get("max_escape_rate_of") or {}
    rates = [
        f"{key} {value:g}"
        for key, value in target.items()
        if key not in ("max_escape_rate_of", PARTS_TARGET)
    ]
    of_types = [f"of {kind} {rate:g}" for kind, rate in sorted(limits.items())]
    parts = [f"counted in parts ({target[PARTS_TARGET]})"] if PARTS_TARGET in target else []
    return ", ".join(rates + of_types + parts)


def scoring_engine(engine: dict[str, Any]) -> dict[str, Any]:
    """What identifies the engine behind a set of probabilities, from an engine record
    (a manifest, or what eval and run store): a torch engine's file can be the checkpoint
    itself, so the precision counts too."""
    return {key: engine.get(key) for key in ("backend", "precision", "engine_sha256")}


def named_engine(engine: dict[str, Any]) -> str:
    """``onnxruntime fp32, sha256 1a7c1b5dea22``, for messages."""
    sha256 = str(engine.get("engine_sha256") or "")[:12]
    return f"{engine.get('backend')} {engine.get('precision')}, sha256 {sha256}"


def who_and_when() -> tuple[str, str]:
    """Who set the decisions (user@host) and when (UTC), recorded in the file."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"{user}@{socket.gethostname()}", stamp


def _region(record: Any) -> dict[str, Any] | None:
    if record is None:
        return None
    if not isinstance(record, dict) or not {"file", "sha256"} <= set(record):
        raise ValueError(f"its region of interest is not a file and a sha256: {record!r}")
    return record
