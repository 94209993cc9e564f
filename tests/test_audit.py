"""``eval RESULTS --labels DATA``: a run's own decisions and masks scored against labels,
without inference."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.decisions import Decisions, Rule
from tests.test_decisions import cli

FAST = ["--precision", "fp32", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    generate(root, 16, (96, 96), defect_rate=0.4, seed=5)
    return root


def _rows(folder: Path) -> dict[str, dict]:
    return {row["path"]: row for row in pq.read_table(folder / "predictions.parquet").to_pylist()}


def test_a_run_with_every_mask_scores_as_eval_of_its_engine(dataset: Path, tmp_path: Path) -> None:
    results = tmp_path / "all.parquet"
    cli("run", str(dataset / "images"), "-o", str(results), "--masks", "all", "--decoder", "pil",
        *FAST)  # fmt: skip
    cli("eval", str(results), "--labels", str(dataset), "-o", str(tmp_path / "audit"), "-q")
    cli("eval", str(demo_model_path()), str(dataset), "-o", str(tmp_path / "eval"), *FAST)
    audited, evaluated = _rows(tmp_path / "audit"), _rows(tmp_path / "eval")
    assert audited.keys() == evaluated.keys() and len(audited) == 16
    for path, row in audited.items():
        other = evaluated[path]
        assert row["probability"] == pytest.approx(other["probability"], abs=1e-6)
        for key in ("predicted_defective", "predicted_defect_pixels", "true_defect_pixels"):
            assert row[key] == other[key], (path, key)
        assert row["mask_iou"] == pytest.approx(other["mask_iou"], nan_ok=True)
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("audit", "eval"))
    assert a["classification"] == b["classification"]
    assert a["engine"]["engine_sha256"] == b["engine"]["engine_sha256"]
    assert "without inference" in a["source"] and "masks all" in a["source"]
    # Images inspected twice (a watch seeing a file replaced): the last result is scored.
    table = pq.read_table(results)
    earlier = table.set_column(
        table.schema.get_field_index("is_defect"), "is_defect", pc.invert(table["is_defect"])
    )
    again = tmp_path / "again.parquet"
    pq.write_table(
        pa.concat_tables([earlier, table]).replace_schema_metadata(table.schema.metadata), again
    )
    cli("eval", str(again), "--labels", str(dataset), "-o", str(tmp_path / "again"), "-q")
    assert _rows(tmp_path / "again").keys() == audited.keys()
    for path, row in _rows(tmp_path / "again").items():
        assert row["predicted_defective"] == audited[path]["predicted_defective"]
    source = json.loads((tmp_path / "again" / "metrics.json").read_text())["source"]
    assert "16 earlier results of the same images" in source
    # The same rows as a --watch folder's hourly parts score the same.
    from psicbatch.run.output import read_metadata

    watch = tmp_path / "watch"
    hour = watch / "date=2026-12-05" / "hour=09"
    hour.mkdir(parents=True)
    (watch / "_watch.json").write_text(json.dumps(read_metadata(results)))
    plain = table.replace_schema_metadata(None)
    pq.write_table(plain.slice(0, 7), hour / "part-00000.parquet")
    pq.write_table(plain.slice(7), hour / "part-00001.parquet")
    cli("eval", str(watch), "--labels", str(dataset), "-o", str(tmp_path / "watched"), "-q")
    same = [json.dumps(_rows(tmp_path / n), default=str) for n in ("watched", "audit")]
    assert same[0] == same[1]  # (as text: NaN, for no defect, equals NaN)
    # Reviewed images copied out of the folder the run inspected are found by their bytes;
    # a copy that differs (here: one byte more) is not the image the run saw.
    reviewed = tmp_path / "reviewed"
    shutil.copytree(dataset, reviewed)
    changed = sorted((reviewed / "images").glob("*.png"))[3]
    changed.write_bytes(changed.read_bytes() + b"\0")
    cli("eval", str(results), "--labels", str(reviewed), "-o", str(tmp_path / "copies"), "-q")
    copied = _rows(tmp_path / "copies")
    assert len(copied) == 15 and str(changed) not in copied
    for path, row in copied.items():
        original = audited[path.replace(str(reviewed), str(dataset))]
        assert row["predicted_defective"] == original["predicted_defective"]
        assert row["probability"] == original["probability"]
    source = json.loads((tmp_path / "copies" / "metrics.json").read_text())["source"]
    assert "15 of the 16 labelled images have a result; 15 of them as copies" in source


def test_a_gated_run_is_scored_as_it_decided(dataset: Path, tmp_path: Path) -> None:
    """Its decision file's rule judged; images judged good have no mask; results of
    images not labelled, and error rows, are counted and left out."""
    inputs = tmp_path / "inputs"
    shutil.copytree(dataset / "images", inputs)
    (inputs / "broken.png").write_text("not an image")
    labelled = tmp_path / "labelled"
    shutil.copytree(dataset, labelled)
    first = sorted((labelled / "images").glob("*.png"))[0]
    (inputs / first.name).write_text("damaged")  # a labelled image the run cannot read
    shutil.copy(first, inputs / "extra.png")  # an image nobody labelled
    decisions = tmp_path / "d.json"
    Decisions(0.1, Rule("both", 95), {"max_escape_rate": 0.0}).write(decisions)
    results = tmp_path / "gated.parquet"
    cli("run", str(inputs), "-o", str(results), "--decisions", str(decisions), "--decoder", "pil",
        "--allow-errors", *FAST)  # fmt: skip
    # The results name the run's inputs: label those names as the dataset labels its own.
    for image in sorted((labelled / "images").glob("*.png")):
        image.unlink()
    for image in sorted(inputs.glob("synth_*.png")):
        (labelled / "images" / image.name).symlink_to(image)
    audit = tmp_path / "audit"
    cli("eval", str(results), "--labels", str(labelled), "-o", str(audit), "-q")
    decided = {row["path"]: row for row in pq.read_table(results).to_pylist()}
    rows = _rows(audit)
    assert len(rows) == 15  # 16 labelled, one unreadable to the run
    for row in rows.values():
        result = decided[row["path"].replace(str(labelled / "images"), str(inputs))]
        assert row["predicted_defective"] == result["is_defect"]
        assert row["predicted_defect_pixels"] == result["mask_area"]
        if not result["is_defect"]:
            assert row["predicted_defect_pixels"] == 0  # gated: no mask
            assert math.isnan(row["mask_iou"]) or row["mask_iou"] == 0
    # The case at stake: the rule judged an image otherwise than the model's threshold.
    assert any(row["predicted_defective"] != (row["probability"] >= 0.5) for row in rows.values())
    recorded = json.loads((audit / "metrics.json").read_text())
    assert recorded["decisions"]["source"] == f"the decision file {decisions}"
    assert recorded["decisions"]["min_area"] == 95
    source = recorded["source"]
    assert "16 of the 16 labelled images have a result; 1 of them an error" in source
    assert "2 results are of images not labelled" in source  # extra.png and broken.png
    assert "masks gated" in source
    report = (audit / "report.md").read_text()
    assert "Escapes and false rejects" in report and source in report
    # Its predictions calibrate a threshold, but not an area rule: gated masks have no
    # area for images judged good.
    predictions = str(audit / "predictions.parquet")
    cli("calibrate", predictions, "-o", str(tmp_path / "threshold.json"))
    area = ["--rule", "both", "--min-area", "5", "-o", str(tmp_path / "area.json")]
    refused = CliRunner().invoke(main, ["calibrate", predictions, *area])
    assert refused.exit_code == 1 and "rerun with --masks all" in refused.output


def test_results_of_other_images_and_mixed_options_are_refused(
    dataset: Path, tmp_path: Path
) -> None:
    results = tmp_path / "r.parquet"
    cli("run", str(dataset / "images"), "-o", str(results), "--decoder", "pil", *FAST)
    other = tmp_path / "other"
    generate(other, 4, (64, 64), defect_rate=0.5, seed=9)
    refused = CliRunner().invoke(
        main, ["eval", str(results), "--labels", str(other), "-o", str(tmp_path / "x"), "-q"]
    )
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "none of its results without an error is of an image of" in refused.output
    assert not (tmp_path / "x").exists()
    mixed = ["eval", str(results), "--labels", str(dataset), "--threshold", "0.5"]
    refused = CliRunner().invoke(main, mixed)
    assert refused.exit_code == 2 and "with --labels give RESULTS alone" in refused.output


def test_labels_count_inside_the_region_the_run_inspected(dataset: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    region = np.zeros((10, 10), np.uint8)
    region[:, :5] = 255
    Image.fromarray(region).save(tmp_path / "roi.png")
    inside = ["--roi", str(tmp_path / "roi.png")]
    results = tmp_path / "r.parquet"
    cli("run", str(dataset / "images"), "-o", str(results), "--masks", "all", "--decoder", "pil",
        *inside, *FAST)  # fmt: skip
    cli("eval", str(results), "--labels", str(dataset), "-o", str(tmp_path / "audit"), "-q")
    cli("eval", str(demo_model_path()), str(dataset), "-o", str(tmp_path / "eval"), *inside, *FAST)
    audited, evaluated = _rows(tmp_path / "audit"), _rows(tmp_path / "eval")
    for path, row in audited.items():
        for key in ("true_defect_pixels", "predicted_defect_pixels", "defect_intersection"):
            assert row[key] == evaluated[path][key], (path, key)
    cli("eval", str(demo_model_path()), str(dataset), "-o", str(tmp_path / "w"), *FAST)
    labelled = [
        sum(r["true_defect_pixels"] for r in rows.values())
        for rows in (_rows(tmp_path / "w"), audited)
    ]
    assert labelled[0] > labelled[1]  # labelled defects outside the region do not count
    (tmp_path / "roi.png").rename(tmp_path / "moved.png")
    refused = CliRunner().invoke(
        main, ["eval", str(results), "--labels", str(dataset), "-o", str(tmp_path / "x")]
    )
    assert refused.exit_code == 1 and "no longer there unchanged" in refused.output


@pytest.mark.timeout(60)
def test_only_regular_files_are_compared_as_copies(tmp_path: Path) -> None:
    from psicbatch.run.labelled_results import same_file_content

    labelled, inspected, pipe = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    labelled.write_bytes(b"same bytes")
    inspected.write_bytes(b"same bytes")
    os.mkfifo(pipe)  # opening it would wait for a writer forever
    assert same_file_content(inspected, labelled)
    assert not same_file_content(pipe, labelled)
    assert not same_file_content(tmp_path / "gone.png", labelled)
    inspected.write_bytes(b"same bytez")
    assert not same_file_content(inspected, labelled)


def _watched_and_run(dataset: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The dataset's images inspected by a run into a results file, and by a --watch of a
    folder they are copied into, with the same model (which learnt from 3 of them),
    decisions (chosen on all of them) and region: the results file, the line folder, the
    watch folder."""
    import dataclasses
    import signal

    import numpy as np
    from PIL import Image

    from psicbatch.checkpoint import load_checkpoint, save_checkpoint
    from psicbatch.fingerprints import ImageSet
    from tests.test_watch import rows, start_watch, wait_for

    images = sorted((dataset / "images").glob("*.png"))
    demo = load_checkpoint(demo_model_path())
    training = {**demo.training, "image_digests": ImageSet.of_files(images[:3]).encode()}
    model = save_checkpoint(dataclasses.replace(demo, training=training), tmp_path / "m.pt")
    region = np.zeros((10, 10), np.uint8)
    region[:, :5] = 255
    Image.fromarray(region).save(tmp_path / "roi.png")
    cli("eval", str(model), str(dataset), "-o", str(tmp_path / "v"), "--roi",
        str(tmp_path / "roi.png"), *FAST)  # fmt: skip
    decisions = tmp_path / "d.json"
    cli("calibrate", str(tmp_path / "v" / "predictions.parquet"), "--max-escape-rate", "1",
        "-o", str(decisions), "-q")  # fmt: skip
    same = ("--model", str(model), "--decisions", str(decisions), "--masks", "all",
            "--decoder", "pil", "--precision", "fp32")  # fmt: skip
    results = tmp_path / "r.parquet"
    cli("run", str(dataset / "images"), "-o", str(results), *same, "--device", "cpu", "-q")
    line, out = tmp_path / "line", tmp_path / "watched"
    line.mkdir()
    watching = start_watch(line, out, "--settle", "0.2", *same)
    for image in images:
        (line / image.name).write_bytes(image.read_bytes())
    wait_for(lambda: len(rows(out)) == len(images), watching)
    watching.send_signal(signal.SIGTERM)
    assert watching.wait(timeout=30) == 0
    return results, line, out


@pytest.mark.timeout(180)
def test_a_watch_folder_audits_as_a_results_file_of_the_same_run(
    dataset: Path, tmp_path: Path
) -> None:
    """A --watch folder records, as a results file does, the region, the decision file and
    the images the model learnt from: its audit counts labels inside the region and says
    which of its images the model and its decisions had seen."""
    results, line, out = _watched_and_run(dataset, tmp_path)
    audits = {}
    for name, source in (("file", results), ("watch", out)):
        cli("eval", str(source), "--labels", str(dataset), "-o", str(tmp_path / name), "-q")
        audits[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    watched, ran = _rows(tmp_path / "watch"), _rows(tmp_path / "file")
    assert {Path(p).name for p in watched} == {Path(p).name for p in ran}
    for path, row in ran.items():
        other = next(r for p, r in watched.items() if Path(p).name == Path(path).name)
        for key in ("true_defect_pixels", "predicted_defect_pixels", "predicted_defective"):
            assert row[key] == other[key], (path, key)
    assert audits["watch"]["overlap"] == audits["file"]["overlap"] == {
        "images": 16, "training": 3, "training_total": 3, "validation": 16,
        "validation_total": 16, "chosen": None, "chosen_total": None,
        "chosen_for": None}  # fmt: skip
    assert audits["watch"]["decisions"] == audits["file"]["decisions"]
    assert audits["watch"]["roi"] == audits["file"]["roi"] is not None
    # Decisions chosen again on the watch folder are those chosen on the results file.
    chosen = {}
    for name, source in (("file", results), ("watch", out)):
        target = tmp_path / f"{name}.json"
        cli("calibrate", str(source), "--labels", str(dataset), "-o", str(target), "-q")
        chosen[name] = json.loads(target.read_text())["validation"]
    for key in ("threshold", "escapes", "false_rejects", "seen_in_training", "image_digests"):
        assert chosen["watch"][key] == chosen["file"][key], key
    assert chosen["watch"]["seen_in_training"] == 3
    # Their pages describe the run as info does: the decision file by name, not its content.
    for name, source in (("file", results), ("watch", out)):
        page = tmp_path / f"{name}-report.html"
        cli("report", str(source), "--html", str(page))
        text = page.read_text()
        assert "<tr><th>judged defective</th><td>probability &gt;= " in text
        assert "<tr><th>roi</th><td>file=" in text and "image_digests" not in text
    # The line moves its images away: the watch folder's audit still finds the reviewed
    # copies, by the name and size it recorded of each.
    shutil.rmtree(line)
    cli("eval", str(out), "--labels", str(dataset), "-o", str(tmp_path / "moved"), "-q")
    assert json.dumps(_rows(tmp_path / "moved"), default=str) == json.dumps(watched, default=str)
    source = json.loads((tmp_path / "moved" / "metrics.json").read_text())["source"]
    assert "16 of them as copies" in source and "16 of those known by name and size" in source


def test_a_run_s_images_moved_away_are_found_by_name_and_size(
    dataset: Path, tmp_path: Path
) -> None:
    """Results record the size of each file read, so a review of copies scores a run whose
    images were archived since, as it scored them while they were there."""
    line = Path(shutil.copytree(dataset / "images", tmp_path / "line"))
    results = tmp_path / "r.parquet"
    cli("run", str(line), "-o", str(results), "--masks", "all", "--decoder", "pil", *FAST)
    cli("eval", str(results), "--labels", str(dataset), "-o", str(tmp_path / "there"), "-q")
    line.rename(tmp_path / "archived")
    cli("eval", str(results), "--labels", str(dataset), "-o", str(tmp_path / "moved"), "-q")
    there, moved = (json.dumps(_rows(tmp_path / n), default=str) for n in ("there", "moved"))
    assert moved == there
    source = json.loads((tmp_path / "moved" / "metrics.json").read_text())["source"]
    assert "16 of them as copies" in source and "16 of those known by name and size" in source


def test_a_review_sorted_into_folders_audits_a_run(dataset: Path, tmp_path: Path) -> None:
    """Reviewers sort parts into ok/ and ng/ and seldom draw masks: the run's decisions are
    scored as against full labels; masks only where there are some."""
    from tests.test_evaluate import sorted_by_review

    unmasked = sorted_by_review(dataset, tmp_path / "reviewed")
    (tmp_path / "reviewed" / "ng" / "pit").mkdir()
    for image in sorted((tmp_path / "reviewed" / "ng").glob("*.png"))[::2]:
        image.rename(tmp_path / "reviewed" / "ng" / "pit" / image.name)
    results = tmp_path / "r.parquet"
    cli("run", str(dataset / "images"), "-o", str(results), "--masks", "all", *FAST)
    cli("eval", str(results), "--labels", str(dataset), "-o", str(tmp_path / "full"), "-q")
    cli("eval", str(results), "--labels", str(tmp_path / "reviewed"), "--layout", "classes",
        "-o", str(tmp_path / "sorted"), "-q")  # fmt: skip
    full, reviewed = (
        {Path(path).name: row for path, row in _rows(tmp_path / name).items()}
        for name in ("full", "sorted")
    )  # the labelled copies are matched to the inspected files by name and content
    assert full.keys() == reviewed.keys() and len(full) == 16
    for name, row in reviewed.items():
        assert row["predicted_defective"] == full[name]["predicted_defective"]
        assert row["mask_known"] is (Path(name).stem not in unmasked)
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("sorted", "full"))
    assert a["classification"] == b["classification"]
    assert a["unmasked_defective"] == len(unmasked) > 0
    # Decisions need only the sorting: chosen from it, they are those full labels give.
    chosen = {}
    for name, labels in (("full", dataset), ("sorted", tmp_path / "reviewed")):
        target = tmp_path / f"{name}.json"
        cli("calibrate", str(results), "--labels", str(labels), "-o", str(target), "-q")
        chosen[name] = json.loads(target.read_text())["validation"]
    for key in ("threshold", "escapes", "false_rejects"):
        assert chosen["sorted"][key] == chosen["full"][key], key
    types = chosen["sorted"]["defect_types"]  # and which types they let through
    assert [kind["defect_type"] for kind in types] == ["", "pit"]
    assert sum(kind["images"] for kind in types) == chosen["sorted"]["defective"]
    assert sum(kind["escapes"] for kind in types) == chosen["sorted"]["escapes"]
    assert "defect_types" not in chosen["full"]
