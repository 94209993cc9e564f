"""Which decisions a run applies, the same for ``psicbatch run`` and ``Inspector``: a
decision file's, else those stored with its engine (unless a threshold is given), else
the model's own threshold; the region of interest they were calibrated inside with
them (``region_record``); and the check that they were chosen on the probabilities of
the engine that runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psicbatch.decisions import CLASSIFIER, Decisions, Rule, named_engine, scoring_engine
from psicbatch.engines.revisions import engine_decisions
from psicbatch.errors import PsicbatchError
from psicbatch.paths import FileSnapshot
from psicbatch.region_record import applied_region, read_region


@dataclass(frozen=True)
class RunDecisions:
    threshold: float | None  # the image threshold; None: the model's
    rule: Rule
    record: dict[str, Any] | None  # what the results' metadata says of them
    roi: FileSnapshot | None  # the region of interest the run applies, as read


def run_decisions(
    decisions_file: Path | None,
    engine_dir: Path | None,
    threshold: float | None,
    roi: Path | None = None,
) -> RunDecisions:
    """``roi`` is the region asked for (``--roi``): decisions calibrated inside a region
    take that region, and refuse another."""
    if decisions_file is not None:
        chosen, sha256 = Decisions.read_hashed(decisions_file)
        record = {"file": str(decisions_file), "sha256": sha256}
        record.update(chosen.to_dict())
        region = applied_region(chosen.roi, roi, None, str(decisions_file))
        return RunDecisions(chosen.classification_threshold, chosen.rule, record, region)
    if engine_dir is not None and threshold is None:
        stored = engine_decisions(engine_dir)
        if stored is not None:
            decisions, record = stored
            where = f"the engine {engine_dir}"
            region = applied_region(decisions.roi, roi, engine_dir, where)
            return RunDecisions(decisions.classification_threshold, decisions.rule, record, region)
    return RunDecisions(threshold, CLASSIFIER, None, read_region(roi) if roi is not None else None)


def check_decisions_fit(decisions: dict[str, Any] | None, engine: dict[str, Any]) -> None:
    """Refuse, in one line, decisions chosen on another engine's probabilities: their
    escape rate holds for that engine only. Decisions that do not say which engine they
    were chosen on (older files, cv predictions) are applied as they are."""
    scored_by = (decisions or {}).get("scored_by")
    if scored_by and scored_by != scoring_engine(engine):
        source = (decisions or {}).get("file") or "the engine's decisions"
        raise PsicbatchError(
            f"{source}: chosen on another engine's probabilities ({named_engine(scored_by)}) "
            f"than this run's ({named_engine(engine)}); calibrate on this engine's results, "
            "or run the engine they were chosen on"
        )
