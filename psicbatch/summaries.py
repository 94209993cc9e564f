"""What ``psicbatch info`` shows of a checkpoint, an engine folder, a run's results, an
evaluation or a decision file: the fields a person checks at a glance, also written as
JSON. torch is imported only for a checkpoint or an engine (loading weights, counting the
cost per image): results, evaluations and decisions are shown without it."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from psicbatch.checkpoint_file import check_checkpoint_file
from psicbatch.data.combined import WHOLE
from psicbatch.data.layouts import AUTO, folder_of_dataset, matching_layouts
from psicbatch.decisions import Decisions, target_text
from psicbatch.engines.manifest import MANIFEST_NAME, Manifest, read_manifest
from psicbatch.engines.revisions import engine_decisions
from psicbatch.errors import PsicbatchError
from psicbatch.fine_tuning import started_from
from psicbatch.fingerprints import SEEN_BEFORE, chosen_on, chosen_text, seen_before, trained_on
from psicbatch.part_scores import PartScores
from psicbatch.paths import file_sha256, regular_file_bytes
from psicbatch.run.output_guard import RESULTS, is_results_file
from psicbatch.run.results import results_summary, watch_identity
from psicbatch.scores import (
    HEADLINE,
    AppliedDecisions,
    EngineDescription,
    EvaluationSummary,
    TypeEscapes,
)


def summarize(
    paths: Sequence[Path], layout: str = AUTO, group_by: str | None = None, split: str = WHOLE
) -> tuple[str, dict[str, Any]]:
    """What ``paths`` are (a checkpoint, an engine folder, a run's results, an evaluation,
    decisions, a labelled dataset: in ``layout`` where one is named, its cv groups made by
    ``group_by`` where given, the ``split`` part of a published train/test division;
    several: the folders of one dataset) and their summary; a one-line error where they
    are none of them."""
    if len(paths) > 1 or layout != AUTO or group_by is not None or split != WHOLE:
        from psicbatch.dataset_summary import dataset_summary

        return "dataset", dataset_summary(paths, layout, group_by, split)
    path = paths[0]
    if path.is_dir():
        engine = (path / MANIFEST_NAME).exists()
        if not engine and watch_identity(path):
            return "results", results_summary(path)
        if any((path / name).is_file() for name in EVALUATION_RECORDS):
            return evaluation_summary(path)
        if engine:
            return "engine", engine_summary(path, read_manifest(path))
        layouts = matching_layouts(path)
        if len(layouts) == 1 or (not layouts and folder_of_dataset(path) is not None):
            from psicbatch.dataset_summary import dataset_summary

            return "dataset", dataset_summary([path], AUTO)
        matched = f": it looks like the {' and the '.join(layouts)} layouts" if layouts else ""
        raise PsicbatchError(
            f"{path}: not an engine folder ({MANIFEST_NAME}), an eval or cv folder "
            f"({' or '.join(EVALUATION_RECORDS)}), a --watch results folder or a labelled "
            f"dataset in one layout{matched} (choose one with --layout)"
        )
    if is_results_file(path) or path.suffix.lower() in RESULTS.suffixes:
        return "results", results_summary(path)  # a damaged one says what is wrong with it
    if path.name in EVALUATION_RECORDS and path.is_file():  # the record stands for its folder
        return evaluation_summary(path.parent)
    if path.suffix.lower() == ".json":
        return "decisions", decisions_summary(path)
    return "checkpoint", checkpoint_summary(path)


def decisions_summary(path: Path) -> dict[str, Any]:
    """A decision file's threshold and rule, what they were chosen for and on, and the
    region of interest runs of them apply."""
    return {"file": str(path), **decisions_fields(Decisions.read(path))}


def decisions_fields(decisions: Decisions) -> dict[str, Any]:
    """What a person checks of decisions, in a file or stored with an engine."""
    chosen = decisions.validation
    summary = {
        "classification_threshold": decisions.classification_threshold,
        "rule": asdict(decisions.rule),
        "target": target_text(decisions.target),
        "pixel_size_mm": decisions.pixel_size_mm,
        "validation": {
            key: chosen[key]
            for key in (
                *("source", "unit", "defective", "escapes", "good", "false_rejects"),
                # of them, images the model learnt from, or held-out images that chose it
                *("seen_in_training", "seen_in_choosing"),
            )
            if key in chosen
        },
        "escape_rate_upper_95": chosen.get("escape_rate_upper_95"),
        "escapes by defect type": _recorded_type_escapes(chosen),
        "scored_by": decisions.scored_by,
        "roi": decisions.roi,
        "set_by": decisions.set_by,
        "set_at": decisions.set_at,
    }
    return {key: value for key, value in summary.items() if value not in ({}, [], None, "")}


def _recorded_type_escapes(validation: dict[str, Any]) -> list[str]:
    """The escapes by defect type a decision file records (files of earlier versions and
    reviews without types: none)."""
    try:
        return type_escapes_lines(
            TypeEscapes(**kind) for kind in validation.get("defect_types", [])
        )
    except TypeError:
        return ["(not readable in this decision file)"]


def type_escapes_lines(types: Iterable[TypeEscapes]) -> list[str]:
    """``scratch: 1 of 12`` per defect type."""
    return [f"{kind.label}: {kind.escapes} of {kind.images}" for kind in types]


# The record an ``eval`` report folder holds, and a ``cv`` folder's (pooled over folds).
EVALUATION_RECORDS = ("metrics.json", "cv.json")


def evaluation_summary(path: Path) -> tuple[str, dict[str, Any]]:
    """An ``eval`` report folder's headline figures, or a ``cv`` folder's pooled ones (with
    the kind of engine its folds' models were scored as), and which of the two it is."""
    name = next(n for n in reversed(EVALUATION_RECORDS) if (path / n).is_file())
    try:
        record = json.loads(regular_file_bytes(path / name))
        summary = EvaluationSummary.from_dict(record["pooled"] if name == "cv.json" else record)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PsicbatchError(f"{path / name}: not a readable psicbatch record ({error})") from None
    engine = summary.engine.line() if summary.engine else "-"
    what: dict[str, Any] = {"evaluated": summary.evaluated or "-"}
    if name == "cv.json":  # each fold scores its own model, on engines alike
        what = {"dataset": record.get("dataset", "-"), "folds": len(record["folds"])}
        scored = [fold["summary"].get("engine") for fold in record["folds"]]
        if scored and scored[0]:
            e = EngineDescription.from_dict(scored[0])
            height, width = e.input_size
            engine = f"{e.ran_as()}, {height}x{width}, one per fold"
    return "cross-validation" if name == "cv.json" else "evaluation", {
        "folder": str(path),
        **what,
        **({"dataset parts": summary.division} if summary.division else {}),
        "images": summary.images,
        "defective_images": summary.defective_images,
        **({"without a mask": summary.unmasked_defective} if summary.unmasked_defective else {}),
        **{f"{metric.label} (%)": round(100 * metric.of(summary), 2) for metric in HEADLINE},
        "FP / FN": f"{summary.classification.fp} / {summary.classification.fn}",
        **({"parts": _parts_line(summary.parts)} if summary.parts else {}),
        **(
            {"escapes by defect type": type_escapes_lines(summary.defect_types)}
            if summary.defect_types
            else {}
        ),
        "judged defective": summary.decisions.line() if summary.decisions else "-",
        **{
            seen.label: " ".join(said)
            for kind, seen in SEEN_BEFORE.items()
            if (said := seen_before(summary.overlap, kind))
        },
        "engine": engine,
        "command": summary.command or record.get("command", "-"),
        "reports": ", ".join(n for n in ("report.html", "report.md") if (path / n).is_file()),
    }


def _parts_line(parts: PartScores) -> str:
    """``50 of up to 8 images (the dataset's groups): 0 of 23 defective escaped, ...``"""
    return (
        f"{parts.parts} of up to {parts.largest} images ({parts.grouping}): "
        f"{parts.escapes} of {parts.defective} defective escaped, "
        f"{parts.false_rejects} of {parts.good} good rejected"
    )


def checkpoint_summary(path: Path) -> dict[str, Any]:
    check_checkpoint_file(path)  # a wrong path said before torch loads
    from psicbatch.checkpoint import load_checkpoint  # torch: for checkpoints and engines only
    from psicbatch.engines.build import engine_size
    from psicbatch.model import count_flops

    checkpoint = load_checkpoint(path, weights=False)  # their shapes are counted only
    height, width = checkpoint.preprocessing.input_size
    params = sum(t.numel() for name, t in checkpoint.state_dict.items() if _is_parameter(name))
    flops = count_flops(checkpoint.model_config, height, width)
    return {
        "file": str(path),
        "sha256": file_sha256(path),
        "psicbatch_version": checkpoint.psicbatch_version,
        "width": checkpoint.model_config.width,
        "in_channels": checkpoint.model_config.in_channels,
        "parameters": params,
        "input_size": f"{height}x{width}",
        "gflop_per_image": round(flops / 1e9, 2),
        "mean": list(checkpoint.preprocessing.mean),
        "std": list(checkpoint.preprocessing.std),
        "thresholds": asdict(checkpoint.thresholds),
        "run_batch_here": _run_batch_here(engine_size(checkpoint, None)),
        "training": training_summary(checkpoint.training),
        **{
            f"{phase} loss by epoch": sparkline(values)
            for phase, values in checkpoint.training.get("loss_history", {}).items()
            if values
        },
        **_validation_lines(checkpoint.training),
    }


def _validation_lines(training: dict[str, Any]) -> dict[str, str]:
    """Each phase's scores on the validation images by epoch (``train --validation``):
    where the loss turns up, or the AP down, more epochs stopped helping."""
    held_out = training.get("validation")
    if not held_out:
        return {}
    lines = {"validation": f"{held_out['path']} ({held_out['images']} images)"}
    for phase, measures in training.get("validation_history", {}).items():
        for measure, values in measures.items():
            if measure == "ap":  # in percent, as every report gives the paper's AP
                lines[f"validation {phase} AP by epoch"] = sparkline([100 * v for v in values])
            else:
                lines[f"validation {phase} loss by epoch"] = sparkline(values)
    return lines


def engine_summary(directory: Path, manifest: Manifest) -> dict[str, Any]:
    """What an engine folder runs and how far it was checked, from its manifest (whose
    sha256 of the engine file ``read_manifest`` has verified)."""
    from psicbatch.model import ModelConfig, count_flops

    height, width = manifest.input_size
    config = None  # unknown (an older or edited manifest): no width, no cost shown
    if manifest.model:
        with contextlib.suppress(TypeError, ValueError):
            config = ModelConfig(**manifest.model)
    parity = manifest.parity
    summary = {
        "folder": str(directory),
        "backend": manifest.backend,
        "precision": manifest.precision,
        "engine_file": manifest.engine_file,
        "engine_sha256": manifest.engine_sha256,
        "checkpoint_sha256": manifest.checkpoint_sha256,
        "width": config.width if config else None,
        "in_channels": manifest.channels,
        "input_size": f"{height}x{width}",
        "accepted_sizes": "{}x{}..{}x{}".format(*manifest.min_size, *manifest.max_size),
        "batch": f"{manifest.min_batch}..{manifest.max_batch}",
        "run_batch_here": _run_batch_here((height, width)),
        "gflop_per_image": round(count_flops(config, height, width) / 1e9, 2) if config else None,
        "tile_overlap": manifest.preprocessing.get("tile_overlap"),
        "bit_depth": manifest.preprocessing.get("bit_depth"),
        "thresholds": manifest.thresholds,
        "trained_on": trained_on(manifest.training_images),
        "chosen_on": chosen_text(manifest.chosen_on),
        **_stored_decisions(directory),
        "revision": manifest.revision,
        "parity": {
            key: parity[key]
            for key in ("images", "source", "device", "decision_flips", "mask_iou_mean")
            if key in parity
        },
        "built_for": manifest.built_for,
        "large_kernels": _large_kernels_here(manifest),
        "selection": manifest.selection,
        "versions": manifest.versions,
    }
    return {key: value for key, value in summary.items() if value not in ({}, None, "")}


def _run_batch_here(input_size: tuple[int, int]) -> str:
    """The batch ``psicbatch run --batch-size auto`` takes with an engine or checkpoint of
    ``input_size`` on this machine's default device, and why (``run.batch_choice``)."""
    from psicbatch.devices import default_device
    from psicbatch.run.batch_choice import batch_for_size

    batch, why = batch_for_size(input_size, default_device())
    return f"{batch} (auto: {why})"


def _large_kernels_here(manifest: Manifest) -> str | None:
    """How a torch engine would compute conv10 if opened on this machine's CPU: that
    depends on the CPU (and on GPUs cuDNN computes it directly), so runs record it too."""
    import torch

    from psicbatch.engines.frequency_conv import large_kernel_method
    from psicbatch.engines.registry import SUPPORTED

    if manifest.backend != "torch" or manifest.precision not in SUPPORTED["torch"]["cpu"]:
        return None
    method = large_kernel_method(torch.device("cpu"), manifest.precision)
    return f"{method} on this machine's CPU, direct on GPUs"


def _stored_decisions(directory: Path) -> dict[str, Any]:
    """The decisions stored with an engine, as a run of it applies them, and where they
    came from."""
    try:
        stored = engine_decisions(directory)
    except PsicbatchError as error:
        return {"decisions": str(error)}  # shown, as the run would refuse them
    if stored is None:
        return {}
    decisions, record = stored
    rule = decisions.rule
    line = AppliedDecisions.from_record(
        decisions.classification_threshold, record, rule.name, rule.min_area
    ).line()
    fields = decisions_fields(decisions)
    fields["decision_file"] = record.get("decision_file")
    return {"judged defective": line, "decisions": fields}


def training_summary(training: dict[str, Any]) -> dict[str, Any]:
    """The parts of the training record a person wants to see at a glance."""
    options = training.get("options", {})
    losses = training.get("loss_history", {})
    dataset = training.get("dataset", {})
    summary = {
        "mode": options.get("mode", training.get("mode", "unknown")),
        "complete": training.get("complete", training.get("mode") == "untrained"),
        "epochs": training.get("epochs_done", {}),
        # each phase's epoch whose weights it ended with (--keep best; else the last)
        "kept_epochs": training.get("kept_epochs"),
        "thresholds_on": options.get("thresholds_on"),  # the images they were chosen on
        "final_loss": {phase: values[-1] for phase, values in losses.items() if values},
        "minutes": round(training.get("train_seconds", 0.0) / 60, 1),
        # scoring the epochs on held-out images (--validation), apart from training them
        "validation_minutes": (
            round(training["validation_seconds"] / 60, 1)
            if "validation_seconds" in training
            else None
        ),
        "precision": (training.get("precision") or {}).get("precision"),
        "large_kernels": training.get("large_kernels"),  # conv10 direct or by FFT
        "layout": training.get("layout"),  # channels_last or contiguous
        "data": f"{dataset.get('path', '-')} ({dataset.get('layout', '-')}"
        + (f", {dataset['split']} part)" if dataset.get("split") else ")"),
        "input_size": dataset.get("input_size"),  # how --input-size auto chose it
        "started_from": started_from(training["init"]) if training.get("init") else None,
        "trained_on": trained_on(training.get("image_digests")),
        "chosen_on": chosen_text(chosen_on(training)),  # held-out images that chose it
        # defective images that taught the decision only (no mask)
        "defective_without_masks": dataset.get("defective_without_masks"),
    }
    return {key: value for key, value in summary.items() if value not in ({}, None)}


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 30) -> str:
    """A loss history at a glance: its first and last value and one bar per epoch (the
    mean of neighbouring epochs beyond ``width``), on a log scale where every value is
    positive, since losses fall by orders of magnitude; × where a loss was not finite."""
    count = min(width, len(values))
    groups = [
        values[i * len(values) // count : (i + 1) * len(values) // count] for i in range(count)
    ]
    means = [sum(group) / len(group) for group in groups]
    finite = [value for value in means if math.isfinite(value)]
    if finite and min(finite) > 0:
        means = [math.log(value) if math.isfinite(value) else value for value in means]
        finite = [math.log(value) for value in finite]
    low = min(finite, default=0.0)
    span = (max(finite, default=0.0) - low) or 1.0
    bars = "".join(
        SPARKS[round((value - low) / span * (len(SPARKS) - 1))] if math.isfinite(value) else "×"
        for value in means
    )
    return f"{values[0]:.4g} {bars} {values[-1]:.4g}"


def _is_parameter(name: str) -> bool:
    # BatchNorm running statistics are buffers, not learned parameters.
    return not name.endswith(("running_mean", "running_var", "num_batches_tracked"))
