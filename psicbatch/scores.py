"""Typed evaluation results: what ``eval`` and ``cv`` compute, write as JSON and read back.

One dataclass per part of a summary, and one list (``HEADLINE``) of the metrics every
report shows, so a metric is named once; reports are built from these, never from keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from psicbatch.fingerprints import Overlap
from psicbatch.part_scores import PartScores


@dataclass(frozen=True)
class SegmentationScores:
    """Mask and boundary mIoU in three readings (see ``evaluate.image_iou``), and the
    two-class mIoU of the pooled pixels. Summaries written before the "all" and "gated"
    readings existed read back with those as NaN."""

    mask_miou: float
    boundary_miou: float
    two_class_miou: float
    mask_miou_all: float = math.nan
    boundary_miou_all: float = math.nan
    mask_miou_gated: float = math.nan
    boundary_miou_gated: float = math.nan

    def reading(self, kind: str, reading: str) -> float:
        """``kind`` mask or boundary; ``reading`` "" (defective images), "all" or "gated"."""
        return float(getattr(self, f"{kind}_miou" + (f"_{reading}" if reading else "")))


@dataclass(frozen=True)
class ClassificationScores:
    auc: float
    ap: float
    accuracy: float
    tp: int
    fp: int
    fn: int
    tn: int


@dataclass(frozen=True)
class EngineDescription:
    """What a report says about the engine it scored."""

    backend: str
    precision: str
    device: str
    engine_sha256: str
    checkpoint_sha256: str | None
    input_size: tuple[int, int]
    selection: str | None = None  # why this backend and precision

    def ran_as(self) -> str:
        """Backend, precision and device, as in ``onnxruntime fp32 on cpu``."""
        return f"{self.backend} {self.precision} on {self.device}"

    def line(self) -> str:
        why = f" ({self.selection})" if self.selection else ""
        height, width = self.input_size
        return f"{self.ran_as()}{why}, {height}x{width}, engine sha256 {self.engine_sha256[:12]}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineDescription:
        return cls(**{**data, "input_size": tuple(data["input_size"])})

    @classmethod
    def of_manifest(cls, manifest: dict[str, Any], device: str) -> EngineDescription:
        """From an engine manifest's fields (a ``Manifest``'s, or as a run's results
        record them), running on ``device``."""
        size = manifest["input_size"]
        return cls(
            backend=manifest["backend"],
            precision=manifest["precision"],
            device=device,
            engine_sha256=manifest["engine_sha256"],
            checkpoint_sha256=manifest.get("checkpoint_sha256"),
            input_size=(size[0], size[1]),
            selection=manifest.get("selection"),
        )


@dataclass(frozen=True)
class AppliedDecisions:
    """The image decision an evaluation scored, where it came from and, for calibrated
    decisions, what they were chosen for and what validation gave them: a report sets
    the escapes and false rejects measured on its images beside those."""

    threshold: float  # probability at or above: defective (with the rule)
    rule: str = "classifier"  # decisions.RULES
    min_area: int = 0
    source: str = "the model's threshold"
    target: dict[str, Any] = field(default_factory=dict)  # max_escape_rate, ...
    validation: dict[str, Any] = field(default_factory=dict)  # escapes, defective, ...

    def line(self) -> str:
        """``probability >= 0.231 and at least 10 defect pixels (rule both), from ...``"""
        decision = f"probability >= {self.threshold:.4g}"
        pixels = max(self.min_area, 1) if self.rule == "either" else self.min_area
        area = f"at least {pixels} defect pixel" + ("s" if pixels != 1 else "")
        if self.rule == "both" and pixels:
            decision = f"{decision} and {area}"
        elif self.rule == "either":
            decision = f"{decision} or {area}"
        rule = f" (rule {self.rule})" if self.rule != "classifier" else ""
        return f"{decision}{rule}, from {self.source}"

    @classmethod
    def from_record(
        cls,
        threshold: float,
        record: dict[str, Any] | None,
        rule: str = "classifier",
        min_area: int = 0,
    ) -> AppliedDecisions:
        """Decisions given to a run or an evaluation, from the record results and
        evaluations keep of them (a decision file's, an engine's stored ones, or none
        for a threshold given alone)."""
        record = record or {}
        if "file" in record:
            source = f"the decision file {record['file']}"
        elif "engine" in record:
            revision = record.get("manifest_revision")
            source = f"the decisions stored with {record['engine']} (manifest revision {revision})"
        else:
            source = "the threshold given"
        validation = record.get("validation") or {}
        counts = ("source", "escapes", "defective", "false_rejects", "good", "unit")
        return cls(
            threshold=threshold,
            rule=rule,
            min_area=min_area,
            source=source,
            target=dict(record.get("target") or {}),
            validation={key: validation[key] for key in counts if key in validation},
        )


@dataclass(frozen=True)
class Metric:
    """One headline metric: where it lives in a summary and how a table heads it."""

    group: str  # "segmentation" or "classification"
    name: str
    label: str

    def of(self, summary: EvaluationSummary) -> float:
        return float(getattr(getattr(summary, self.group), self.name))


HEADLINE = (
    Metric("segmentation", "mask_miou", "Mask mIoU"),
    Metric("segmentation", "boundary_miou", "Boundary mIoU"),
    Metric("segmentation", "two_class_miou", "two-class mIoU"),
    Metric("classification", "auc", "AUC"),
    Metric("classification", "ap", "AP"),
    Metric("classification", "accuracy", "Accuracy"),
)
CLASSIFICATION = tuple(metric for metric in HEADLINE if metric.group == "classification")


@dataclass(frozen=True)
class MetricDelta:
    engine: float
    reference: float
    delta: float


@dataclass(frozen=True)
class Comparison:
    """The headline metrics of an engine next to a reference checkpoint's (fp32)."""

    reference: str
    reference_engine: EngineDescription
    metrics: dict[str, MetricDelta]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        return cls(
            reference=data.get("reference", "the reference"),
            reference_engine=EngineDescription.from_dict(data["reference_engine"]),
            metrics={name: MetricDelta(**value) for name, value in data["metrics"].items()},
        )


@dataclass(frozen=True)
class TypeEscapes:
    """The defective images of one type, as a review sorted them, and how many of them
    were judged defect-free: which type a line misses."""

    defect_type: str  # "" for those sorted under no type
    images: int
    escapes: int  # judged defect-free

    @property
    def label(self) -> str:
        """The type as reports name it."""
        return self.defect_type or "(no type)"


def named_types(types: Sequence[str], defective: Sequence[bool]) -> list[str]:
    """The defect types of the defective images, sorted ("" for those under none); none
    at all where no review named a type."""
    named = {kind for kind, is_defective in zip(types, defective, strict=True) if is_defective}
    return [] if named == {""} else sorted(named)


def escapes_by_type(
    types: Sequence[str], defective: Sequence[bool], judged_defective: Sequence[bool]
) -> list[TypeEscapes]:
    """Each named type's defective images and escapes, by type name; an empty list where
    no review named a type."""
    named = named_types(types, defective)
    if not named:
        return []
    counts = {kind: [0, 0] for kind in named}
    for kind, is_defective, judged in zip(types, defective, judged_defective, strict=True):
        if is_defective:
            counts[kind][0] += 1
            counts[kind][1] += not judged
    return [TypeEscapes(kind, images, escapes) for kind, (images, escapes) in counts.items()]


@dataclass(frozen=True)
class DefectTypeScores(TypeEscapes):
    """A type's escapes with how well its masks were found (``eval``)."""

    with_masks: int = 0
    mask_miou: float = math.nan  # over those with a mask (strict); NaN without any


@dataclass
class EvaluationSummary:
    images: int
    defective_images: int
    segmentation: SegmentationScores
    classification: ClassificationScores
    thresholds: dict[str, float] = field(default_factory=dict)
    engine: EngineDescription | None = None
    comparison: Comparison | None = None
    evaluated: str | None = None  # the engine or checkpoint path, as given
    command: str | None = None
    roi: dict[str, Any] | None = None  # the region of interest masks were scored in
    decisions: AppliedDecisions | None = None  # None in summaries written before them
    source: str | None = None  # what was scored, when not an engine's inference (a sentence)
    gated_masks: bool = False  # scored from a run's gated masks: images judged good have none
    overlap: Overlap | None = None  # of the images, those the model or decisions had seen
    unmasked_defective: int = 0  # defective images without a true mask: no mask scores
    defect_types: list[DefectTypeScores] = field(default_factory=list)  # where reviews name them
    division: str | None = None  # the part of a published train/test division scored, or both
    parts: PartScores | None = None  # the decision over parts, where parts have several images

    def compare(self, reference: EvaluationSummary, name: str) -> Comparison:
        """This summary's headline metrics next to ``reference``'s, with deltas."""
        if reference.engine is None:
            raise ValueError("the reference summary does not describe its engine")
        return Comparison(
            reference=name,
            reference_engine=reference.engine,
            metrics={
                metric.name: MetricDelta(
                    metric.of(self), metric.of(reference), metric.of(self) - metric.of(reference)
                )
                for metric in HEADLINE
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``metrics.json``, ``cv.json``); absent parts are left out."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationSummary:
        known = {f.name for f in fields(SegmentationScores)}
        return cls(
            images=data["images"],
            defective_images=data["defective_images"],
            segmentation=SegmentationScores(
                **{k: v for k, v in data["segmentation"].items() if k in known}
            ),
            classification=ClassificationScores(**data["classification"]),
            thresholds=dict(data.get("thresholds", {})),
            engine=EngineDescription.from_dict(data["engine"]) if data.get("engine") else None,
            comparison=Comparison.from_dict(data["comparison"]) if data.get("comparison") else None,
            evaluated=data.get("evaluated"),
            command=data.get("command"),
            roi=data.get("roi"),
            decisions=_applied(data["decisions"]) if data.get("decisions") else None,
            source=data.get("source"),
            gated_masks=bool(data.get("gated_masks", False)),
            overlap=Overlap(**data["overlap"]) if data.get("overlap") else None,
            unmasked_defective=int(data.get("unmasked_defective", 0)),
            defect_types=[DefectTypeScores(**kind) for kind in data.get("defect_types", [])],
            division=data.get("division"),
            parts=PartScores(**data["parts"]) if data.get("parts") else None,
        )


def _applied(data: dict[str, Any]) -> AppliedDecisions:
    """Decisions as a summary records them; keys of older records that are no longer
    kept are left out."""
    known = {f.name for f in fields(AppliedDecisions)}
    return AppliedDecisions(**{key: value for key, value in data.items() if key in known})
