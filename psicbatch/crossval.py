"""k-fold cross-validation: train and evaluate one model per fold, report as the paper does.

Each fold lives in ``OUT/foldK/`` (model, evaluation report); a fold whose evaluation is
already written is skipped and a fold with a partial training resumes, so an interrupted
run continues where it stopped. ``OUT/cv_job.json`` and ``OUT/splits.json`` record what
makes the job the job it is (the dataset, the training options, the scoring engine; the
folds), so a folder's finished folds are reused only by the same job: a rerun with other
options is refused rather than reported with another job's folds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.progress import Progress

from psicbatch.checkpoint import load_checkpoint
from psicbatch.cv_report import (
    cross_validation_html,
    cross_validation_markdown,
    cross_validation_tables,
)
from psicbatch.data.combined import WHOLE, datasets_text, part_text
from psicbatch.data.layouts import SampleRef
from psicbatch.data.memory import InPlaceSplits, load_into_memory
from psicbatch.data.splits import joined_groups, kfold_by_group, save_splits
from psicbatch.devices import resolve_device
from psicbatch.engines.base import Engine
from psicbatch.engines.build import BuildOptions, build_engine
from psicbatch.engines.loading import load_engine
from psicbatch.engines.registry import backend
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.errors import PsicbatchError
from psicbatch.evaluate import evaluate, metrics_summary
from psicbatch.fine_tuning import StartingPoint
from psicbatch.fingerprints import ImageSet, chosen_on, file_digests, overlap_of
from psicbatch.part_scores import grouping_of
from psicbatch.reports import plot_curves, write_json, write_predictions
from psicbatch.scores import EvaluationSummary
from psicbatch.train import Trainer, partial_path
from psicbatch.train_options import (
    TrainOptions,
    changed_values,
    check_masks,
    option_name,
    with_defaults,
)
from psicbatch.validation import best_epochs


@dataclass(frozen=True)
class FoldEngine:
    """How each fold's model is scored: the engine that would be deployed."""

    backend: str = "torch"
    precision: str = "auto"

    def check(self, device: str) -> None:
        """Refuse at once, naming cv's own options, an engine no fold could be scored
        with here: met only after the first fold's training, it would cost that
        training."""
        if self.precision == "int8":
            raise PsicbatchError(
                "int8 engines need calibration images; build each fold's engine with "
                "'psicbatch build-engine FOLD/model.pt --precision int8 --calib DIR' and "
                "score it with 'psicbatch eval --engine'"
            )
        entry = backend(self.backend, "--engine-backend")
        problem = entry.problem()
        if problem is not None:
            raise PsicbatchError(f"--engine-backend {self.backend} is {problem}")
        kind = device.split(":")[0]
        where = kind if kind in entry.precisions else "cpu"  # CPU runtimes score on the CPU
        if where not in entry.precisions:
            raise PsicbatchError(
                f"--engine-backend {self.backend} runs on {' or '.join(entry.precisions)}; "
                f"the folds train and are scored on {kind} (--device)"
            )
        floats = [p for p in entry.precisions[where] if p != "int8"]
        if self.precision not in ("auto", *floats):
            raise PsicbatchError(
                f"--engine-precision {self.precision} is not available with the "
                f"{self.backend} engine on {where}; choose auto or {', '.join(sorted(floats))}"
            )


def cross_validate(
    samples: list[SampleRef],
    options: TrainOptions,
    folds: int,
    out: Path,
    dataset: dict[str, str],
    progress: Progress | None = None,
    scoring: FoldEngine = FoldEngine(),
    only_fold: int | None = None,
    digests: list[bytes | None] | None = None,
    start: StartingPoint | None = None,
    score_epochs: bool = False,
) -> dict[str, Any]:
    """Run every fold (or only fold ``only_fold``, 1-based, for studies that change one
    thing on fixed folds) and write ``OUT/report.md``, ``report.html``, ``cv.json``,
    predictions and curves.
    ``digests``: each sample's image file's (read here when not given); ``start``: the
    checkpoint every fold's training starts from (``--init``); ``score_epochs``: every
    epoch of a fold's training scored on its test images (``validation``), whose best
    epochs the report gives fold by fold."""
    if only_fold is not None and not 1 <= only_fold <= folds:
        raise PsicbatchError(f"--fold must be between 1 and {folds}, got {only_fold}")
    scoring.check(resolve_device(options.device))
    if digests is None:
        digests = file_digests(sample.image_path for sample in samples)
    test_ids = kfold_by_group(samples, folds, options.seed, digests)
    _check_fold_masks(samples, test_ids, options.mode)  # before any fold trains
    job = _job_identity(dataset, options, scoring, score_epochs)
    _check_same_job(out, job, test_ids)
    out.mkdir(parents=True, exist_ok=True)
    (out / JOB_FILE).write_text(json.dumps(job, indent=1) + "\n")
    save_splits(out / "splits.json", test_ids, options.seed)
    channels = 3 if dataset.get("channels") == "3" else 1
    bit_depth = int(dataset.get("bit_depth", 8))
    data = InPlaceSplits(
        load_into_memory(samples, options.input_size, channels, progress, bit_depth)
    )
    fold_reports, all_rows = [], []
    for fold, fold_test_ids in enumerate(test_ids, start=1):
        if only_fold is not None and fold != only_fold:
            continue
        report = _run_fold(
            samples,
            digests,
            data,
            options,
            fold,
            set(fold_test_ids),
            out,
            dataset,
            progress,
            scoring,
            start,
            score_epochs,
        )
        fold_reports.append(report)
        all_rows += [{**row, "fold": fold} for row in report.pop("rows")]
    pooled = metrics_summary(all_rows, grouping_of(dataset.get("group_by")))
    report = {
        "dataset": f"{dataset['path']}{part_text(dataset.get('split', WHOLE))}",
        "layout": dataset["layout"],
        "command": dataset["command"],
        "images": len(samples),
        "defective_images": sum(s.is_defective for s in samples),
        "joined_groups": _linked(joined_groups(samples, digests)),
        "group_by": dataset.get("group_by"),  # the pattern naming groups, if one did
        "groups": len({s.group for s in samples}),
        "options": options.to_dict(),
        "input_size_choice": dataset.get("input_size"),  # how --input-size auto chose it
        "init": start.record() if start else None,  # the checkpoint the folds started from
        "folds": fold_reports,
        "tables": cross_validation_tables([f["summary"] for f in fold_reports]),
        "pooled": pooled,
        "fold_pages": [  # folds scored before the pages existed have none
            page
            for fold in fold_reports
            if (out / (page := f"fold{fold['fold']}/evaluation/report.html")).is_file()
        ],
    }
    write_json(out / "cv.json", report)
    write_predictions(out / "predictions.parquet", all_rows)
    curves = plot_curves(out, all_rows, f"{folds}-fold CV, pooled")
    (out / "report.md").write_text(cross_validation_markdown(report, curves))
    (out / "report.html").write_text(cross_validation_html(report, curves), encoding="utf-8")
    return report


def _linked(joined: dict[str, str]) -> list[list[str]]:
    """The sets of groups that share identical images, each sorted, for the report."""
    sets: dict[str, list[str]] = {}
    for group, first in sorted(joined.items()):
        sets.setdefault(first, [first]).append(group)
    return list(sets.values())


JOB_FILE = "cv_job.json"  # beside splits.json, which records the folds
# Identity field -> how a message names it.
JOB_FIELDS = {
    "dataset": "the dataset (DATA, --layout, --split, --channels, --group-by)",
    "folds": "the folds (--folds, --seed, the dataset's images and which are identical)",
    "training": "the training options",
    "scoring": "the scoring engine (--engine-backend, --engine-precision)",
    "score_epochs": "whether every epoch was scored on the folds' test images (--score-epochs)",
}


def _job_identity(
    dataset: dict[str, Any], options: TrainOptions, scoring: FoldEngine, score_epochs: bool
) -> dict[str, Any]:
    """What a cross-validation's folds depend on besides the folds themselves, as JSON
    gives it back (the device they ran on is not part of it)."""
    where = {key: dataset.get(key) for key in ("layout", "channels", "bit_depth")}
    folders = [Path(folder).resolve() for folder in dataset.get("folders") or [dataset["path"]]]
    for key in ("group_by", "split"):  # folders of earlier jobs record neither
        if dataset.get(key) is not None:
            where[key] = dataset[key]
    training = {key: value for key, value in options.to_dict().items() if key != "device"}
    job = {
        "dataset": {"path": datasets_text(folders), **where},
        "training": training,
        "scoring": {"backend": scoring.backend, "precision": scoring.precision},
        "score_epochs": score_epochs,
    }
    return json.loads(json.dumps(job))


def _check_same_job(out: Path, job: dict[str, Any], test_ids: list[list[str]]) -> None:
    """Refuse, in one line, to continue another job's folds in ``out``: its splits.json
    records the folds, its job record (absent in a folder of an earlier psicbatch) the
    rest."""
    recorded: dict[str, Any] = {}
    try:
        if (out / JOB_FILE).is_file():
            recorded = json.loads((out / JOB_FILE).read_text())
        if (out / "splits.json").is_file():
            recorded["folds"] = json.loads((out / "splits.json").read_text())["test_ids"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PsicbatchError(f"{out}: damaged cross-validation record ({error})") from None
    if isinstance(recorded.get("training"), dict):  # the job leaves out the device
        recorded["training"] = with_defaults(recorded["training"], job["training"])
    if "training" in recorded:  # jobs recorded before epochs could be scored scored none
        recorded.setdefault("score_epochs", False)
    current = {**job, "folds": test_ids}
    differing = [
        JOB_FIELDS[key]
        + changed_values(recorded[key], current[key], option_name if key == "training" else str)
        for key in JOB_FIELDS
        if key in recorded and recorded[key] != current[key]
    ]
    if differing:
        raise PsicbatchError(
            f"{out}: holds the folds of another cross-validation (choose another --out, or "
            f"remove the folder to start again); it differs in {'; '.join(differing)}"
        )


def _fold_engine(
    model_path: Path, fold_dir: Path, scoring: FoldEngine, device: str, max_batch: int
) -> Engine:
    """The fold's model as the engine ``scoring`` asks for (built next to it if needed)."""
    if scoring.backend == "torch":
        return open_engine(
            EngineSpec(checkpoint=model_path, precision=scoring.precision), device, max_batch
        )
    options = BuildOptions(
        backend=scoring.backend,
        precision=scoring.precision,
        max_batch=max_batch,
        out=fold_dir / "engine",
        overwrite=True,  # the fold's own, rebuilt when cv resumes
    )
    directory, _ = build_engine(model_path, options)
    return load_engine(directory, device)


def _check_fold_masks(samples: list[SampleRef], test_ids: list[list[str]], mode: str) -> None:
    """Each fold's training images can teach the masks (``check_masks``)."""
    for fold, fold_test_ids in enumerate(test_ids, start=1):
        held_out = set(fold_test_ids)
        training = [sample for sample in samples if sample.id not in held_out]
        try:
            check_masks([s.is_defective for s in training], [s.mask_known for s in training], mode)
        except PsicbatchError as error:
            raise PsicbatchError(f"fold {fold}: {error}") from None


def _run_fold(
    samples: list[SampleRef],
    digests: list[bytes | None],  # each sample's image file's, known by content
    data: InPlaceSplits,
    options: TrainOptions,
    fold: int,
    test_ids: set[str],
    out: Path,
    dataset: dict[str, str],
    progress: Progress | None,
    scoring: FoldEngine,
    start: StartingPoint | None,
    score_epochs: bool,
) -> dict[str, Any]:
    fold_dir = out / f"fold{fold}"
    model_path = fold_dir / "model.pt"
    done_marker = fold_dir / "fold.json"
    train_index = [i for i, s in enumerate(samples) if s.id not in test_ids]
    test_index = [i for i, s in enumerate(samples) if s.id in test_ids]
    if done_marker.exists() and model_path.exists():
        record = json.loads(done_marker.read_text())
        record["summary"] = EvaluationSummary.from_dict(record["summary"])
        record["rows"] = pq.read_table(fold_dir / "evaluation" / "predictions.parquet").to_pylist()
        return record
    train_data, test_data = data.split(train_index, test_index)
    if not model_path.exists():
        metadata = {
            "dataset": {**dataset, "fold": fold, "train_images": len(train_index)},
            "image_digests": ImageSet.of_digests(digests[i] for i in train_index).encode(),
        }
        if score_epochs:
            held_out = ImageSet.of_digests(digests[i] for i in test_index).encode()
            metadata["validation"] = {
                "path": f"fold {fold}'s test images",
                "images": len(test_index),
                "image_digests": held_out,
            }
        trainer = Trainer(
            train_data,
            options,
            model_path,
            progress,
            metadata=metadata,
            start=start,
            validation=test_data if score_epochs else None,
        )
        trainer.run(resume=partial_path(model_path).exists())
    checkpoint = load_checkpoint(model_path, weights=False)  # its training record only
    train_minutes = checkpoint.training.get("train_seconds", 0.0) / 60
    test_samples = [samples[i] for i in test_index]
    batch = 4 * options.batch_size
    engine = _fold_engine(model_path, fold_dir, scoring, resolve_device(options.device), batch)
    grouping = grouping_of(dataset.get("group_by"))
    evaluation = evaluate(engine, test_samples, test_data, batch, progress, grouping)
    test_files = [sample.image_path for sample in test_samples]  # known by content: 0 seen
    training = str(checkpoint.training.get("image_digests", ""))
    test_digests = [digests[i] for i in test_index]
    evaluation.summary.overlap = overlap_of(
        test_files, training, None, test_digests, chosen_on(checkpoint.training)
    )
    evaluation.write(fold_dir / "evaluation", f"Fold {fold} test set")
    record = {
        "fold": fold,
        "train_images": len(train_index),
        "test_images": len(test_index),
        "train_minutes": train_minutes,
        "summary": evaluation.summary,
    }
    if "validation_history" in checkpoint.training:
        record["best_epochs"] = best_epochs(checkpoint.training["validation_history"])
    write_json(done_marker, record)
    return {**record, "rows": evaluation.rows}
