"""Outputs that must not be replaced, file names that are not UTF-8, resumes that must
continue the same job, failed starts, impossible option values, and `report` on files
it must not trust. Every case here once lost data or crashed."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from psicbatch.model import PSICNet
from psicbatch.output_lock import OutputLock
from psicbatch.run.output import read_metadata
from psicbatch.run.output_guard import REPORT, REPORT_MARKER, RESULTS, write_checked
from tests.run_processes import CONSOLE, FAST, killed_run

INVALID_UTF8 = os.fsdecode(b"camera_\xff\xfe.png")


def image(path: Path, seed: int, size: tuple[int, int] = (48, 64)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def invoke(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        image(folder / f"part_{i:03d}.png", i)
    return folder


def interrupted_run(folder: Path, out: Path, *args: str) -> Path:
    """A real run of the console command, killed after it saved two parts."""
    return killed_run([folder, *FAST, "--batch-size", "2", "--flush-every", "2", *args], out)


# 1. Outputs never replace what they must not.


def test_out_refuses_inputs_foreign_files_and_devices(images: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/part_000.png\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    model = tmp_path / "m.pt"
    shutil.copy(demo_model_path(), model)
    target = images / "part_001.png"
    cases = [
        ([images, "--out", target], target, "is one of the input images"),
        ([images, "--model", model, "--out", model], model, "is the model"),
        (["--list", listing, "--out", listing], listing, "is the --list file"),
        ([images, "--out", notes], notes, "is not a psicbatch results file"),
    ]
    for args, victim, message in cases:
        before = victim.read_bytes()
        result = invoke("run", *args, *FAST)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert victim.read_bytes() == before
    result = invoke("run", images, "--out", "/dev/null", *FAST)
    assert result.exit_code == 1 and "not a regular file" in result.output
    assert Path("/dev/null").is_char_device()
    # A decision file inside a folder the command reads is named as inside it.
    labels = tmp_path / "labelled"
    generate(labels, 4, (32, 32), defect_rate=0.5, seed=1)
    results = tmp_path / "r.parquet"
    assert invoke("run", labels / "images", "--out", results, *FAST).exit_code == 0
    inside = invoke("calibrate", results, "--labels", labels, "--out", labels / "d.json")
    said = "d.json: is inside the labels, which this command reads; choose another --out"
    assert inside.exit_code == 1 and said in inside.output, inside.output


def test_outputs_are_named_as_what_they_hold(images: Path, tmp_path: Path) -> None:
    """Parquet is not written as results.csv, nor a page as report.pdf; the suffix is the
    format's in any letter case, or there is none."""
    wrong = invoke("run", images, "--out", tmp_path / "r.csv", *FAST)
    said = "r.csv: a psicbatch results file is Parquet, not .csv; name it *.parquet"
    assert wrong.exit_code == 1 and said in wrong.output, wrong.output
    assert len(wrong.output.strip().splitlines()) == 1 and not (tmp_path / "r.csv").exists()
    results = tmp_path / "r.PQ"
    assert invoke("run", images, "--out", results, *FAST).exit_code == 0
    wrong = invoke("report", results, "--out", tmp_path / "page.pdf")  # --html, as others say
    said = "page.pdf: a psicbatch report is HTML, not .pdf; name it *.html"
    assert wrong.exit_code == 1 and said in wrong.output, wrong.output
    assert not (tmp_path / "page.pdf").exists()
    assert invoke("report", results, "--html", tmp_path / "page").exit_code == 0


def test_checkpoints_replace_only_earlier_checkpoints_and_those_on_request(
    tmp_path: Path,
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    for command in (["init", notes], ["train", tmp_path, "--out", notes]):
        refused = invoke(*command, "--overwrite")
        assert refused.exit_code == 1 and "is not a psicbatch checkpoint" in refused.output
        assert len(refused.output.strip().splitlines()) == 1
    assert notes.read_text() == "keep me\n"
    model = tmp_path / "m.pt"
    tiny = ["--width", "0.125", "--input-size", "64x64"]
    assert invoke("init", model, *tiny).exit_code == 0
    refused = invoke("init", model, *tiny, "--seed", "1")
    assert refused.exit_code == 1 and "pass --overwrite" in refused.output
    refused = invoke("train", tmp_path, "--out", model)  # before any data is read
    assert refused.exit_code == 1 and "pass --overwrite" in refused.output
    before = model.read_bytes()
    assert invoke("init", model, *tiny, "--seed", "1", "--overwrite").exit_code == 0
    assert model.read_bytes() != before


def test_an_output_checked_on_a_share_that_stops_answering_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first look at a path the command line names, the checks of an output
    (what is there, whether its folder takes a new file) held a command for ever on a
    share that stopped answering. They are made within the read limit."""
    import time

    from psicbatch.run import output_guard

    monkeypatch.setenv("PSICBATCH_READ_TIMEOUT", "0.5")
    real = output_guard._status

    def stalled(path: Path, shown: str) -> object:
        time.sleep(3)
        return real(path, shown)

    monkeypatch.setattr(output_guard, "_status", stalled)
    model = tmp_path / "m.pt"
    began = time.monotonic()
    refused = invoke("init", model, "--width", "0.125", "--input-size", "64x64")
    assert time.monotonic() - began < 2.5
    assert (refused.exit_code, refused.output.strip()) == (
        1,
        f"Error: {model}: did not answer within 0.5 s (a network share that stopped "
        "answering? set PSICBATCH_READ_TIMEOUT to wait longer)",
    )
    assert not model.exists()


def test_folders_of_other_files_are_not_written_into(tmp_path: Path) -> None:
    """eval, cv, bench and synth write several files into a folder: a new or empty one,
    or their own earlier one, never a folder of the user's files."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes\n")
    model = str(demo_model_path())
    commands = {
        "evaluation": ["eval", model, tmp_path, "--out", mine],
        "cross-validation": ["cv", tmp_path, "--out", mine],
        "benchmark": ["bench", "--out", mine],
        "synthetic dataset": ["synth", mine, "--count", "2"],
    }
    for noun, command in commands.items():
        refused = invoke(*command)
        said = f"holds files and is not an earlier psicbatch {noun}"
        assert refused.exit_code == 1 and said in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["report.md"]
    below_a_file = mine / "report.md" / "out"
    for command in (["synth", below_a_file, "--count", "2"], ["bench", "--out", below_a_file]):
        refused = invoke(*command)
        said = "report.md/out: a part of this path is not a folder"  # not "exists and is not"
        assert refused.exit_code == 1 and said in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    data = tmp_path / "data"
    assert invoke("synth", data, "--count", "6", "--size", "32x32").exit_code == 0
    assert invoke("synth", data, "--count", "3", "--size", "32x32").exit_code == 0
    assert len(list((data / "images").iterdir())) == 3  # none left from the larger set


def test_earlier_results_are_replaced_only_with_overwrite(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    assert invoke("run", images, "--out", out, *FAST).exit_code == 0
    result = invoke("run", images, "--out", out, *FAST, "--threshold", "0.99")
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert read_metadata(out)["thresholds"]["classification"] != 0.99
    assert (
        invoke("run", images, "--out", out, *FAST, "--threshold", "0.99", "--overwrite").exit_code
        == 0
    )
    assert read_metadata(out)["thresholds"]["classification"] == 0.99


def test_report_never_replaces_its_results_or_foreign_files(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    assert invoke("run", images, "--out", out, *FAST).exit_code == 0
    before = out.read_bytes()
    result = invoke("report", out, "--html", out)
    assert result.exit_code == 1 and "is the results file" in result.output
    assert out.read_bytes() == before
    page = tmp_path / "page.html"
    page.write_text("<html>mine</html>")
    result = invoke("report", out, "--html", page)
    assert result.exit_code == 1 and "not a psicbatch report" in result.output
    report = tmp_path / "report.html"
    assert invoke("report", out, "--html", report).exit_code == 0
    assert REPORT_MARKER in report.read_bytes()
    assert invoke("report", out, "--html", report).exit_code == 1
    assert invoke("report", out, "--html", report, "--overwrite").exit_code == 0


def test_a_run_makes_its_folders_and_a_report_needs_its_own(images: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    result = invoke("report", empty, "--html", tmp_path / "a.html")
    assert result.exit_code == 1 and "not a psicbatch results file" in result.output
    out = tmp_path / "day" / "line 1" / "r.parquet"  # folders not there yet
    assert invoke("run", images, "--out", out, *FAST).exit_code == 0
    assert pq.read_table(out).num_rows > 0
    result = invoke("report", out, "--html", tmp_path / "missing" / "a.html")
    assert result.exit_code == 1 and "folder does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_report_does_not_trust_the_paths_in_results(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    assert invoke("run", images, "--out", out, *FAST, "--threshold", "0").exit_code == 0
    first, second = sorted(images.glob("*.png"))[:2]
    first.unlink()
    os.mkfifo(first)  # reading it would block forever
    from tests.test_reliability import _png_header_only

    _png_header_only(second, 60000, 60000)  # decoding it would take gigabytes
    report = tmp_path / "report.html"
    process = subprocess.run(
        [CONSOLE, "report", out, "--html", report], capture_output=True, timeout=120
    )
    assert process.returncode == 0, process.stderr
    defects, nearest = report.read_text().split("Nearest the threshold")  # shown in both
    assert defects.count("(image unreadable)") == nearest.count("(image unreadable)") == 2


@pytest.mark.timeout(120)  # opening a pipe would wait for a writer that never comes
def test_calibration_and_datasets_do_not_open_what_is_not_a_file(tmp_path: Path) -> None:
    """A named pipe where an image was: calibrate's page shows no thumbnail for it, eval
    and training name it in one line; neither waits for a writer that never comes."""
    root = tmp_path / "line"
    generate(root, 6, (48, 48), defect_rate=0.5, seed=2)
    out = tmp_path / "r.parquet"
    assert invoke("run", root / "images", "--out", out, *FAST, "--masks", "all").exit_code == 0
    pipe = root / "images" / "synth_00000.png"
    pipe.unlink()
    os.mkfifo(pipe)
    decisions = tmp_path / "d.json"
    result = invoke("calibrate", out, "--labels", root, "-o", decisions)
    assert result.exit_code == 0, result.output
    assert "(image not readable here)" in decisions.with_suffix(".html").read_text()
    for command in (
        ["eval", demo_model_path(), root, "--out", tmp_path / "eval"],
        ["train", root, "--out", tmp_path / "m.pt", "--width", "0.125", "--input-size", "32x32"],
    ):
        result = invoke(*command)
        assert result.exit_code == 1, result.output
        assert f"{pipe}: not a regular file (named pipe)" in result.output.strip().splitlines()[-1]


@pytest.mark.timeout(120)  # opening a pipe would wait for a writer that never comes
def test_small_input_files_that_are_pipes_or_not_what_they_claim(tmp_path: Path) -> None:
    """A list, a decision file or a bench report that is a named pipe, or a report that is
    not one: one line naming the file, never a wait or a traceback."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    images = tmp_path / "imgs"
    images.mkdir()
    image(images / "a.png", 1)
    for command in (
        ["run", "--list", pipe, "--out", tmp_path / "a.parquet"],
        ["run", images, "--decisions", pipe, "--out", tmp_path / "b.parquet"],
        ["bench", "--compare", pipe, pipe],
        ["run", images, "--roi", pipe, "--out", tmp_path / "c.parquet"],
        ["eval", demo_model_path(), images, "--roi", pipe],
    ):
        result = invoke(*command)
        assert result.exit_code == 1, result.output
        assert result.output.strip().startswith(f"Error: {pipe}: not a"), result.output
        assert "(named pipe)" in result.output and len(result.output.strip().splitlines()) == 1
    shown = invoke("info", pipe)
    assert shown.exit_code == 1 and shown.output.strip() == f"Error: {pipe}: not a file"
    for text, said in (("{}", "KeyError: 'machine'"), ("nope", "JSONDecodeError")):
        report = tmp_path / "bench.json"
        report.write_text(text)
        result = invoke("bench", "--compare", report, report)
        assert result.exit_code == 1 and said in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_an_output_spelt_dot_or_dot_dot_is_the_folder_it_names(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs place files beside themselves (OUT.lock, OUT.parts), which ``.`` has no
    name for: every command took it for a traceback. It is the folder it names."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    generate(tmp_path / "labelled", 4, (32, 32), defect_rate=0.5, seed=1)
    evaluated = invoke("eval", demo_model_path(), tmp_path / "labelled", "--out", ".", "-q")
    assert evaluated.exit_code == 0, evaluated.output
    assert (here / "metrics.json").exists() and not (tmp_path / "here.lock").exists()
    for out in (".", ".."):  # a folder, not the results file a run writes
        result = invoke("run", images, "--out", out, *FAST)
        said = f"Error: {Path(out).resolve()}: exists and is not a regular file; --out must"
        assert (result.exit_code, result.output.startswith(said)) == (1, True), result.output
    built = tmp_path / "built"
    built.mkdir()
    monkeypatch.chdir(built)
    result = invoke("build-engine", demo_model_path(), "--backend", "torch", "--out", ".")
    assert result.exit_code == 0, result.output
    assert (built / "manifest.json").exists()


# 2. Any byte string is a valid file name.


def test_file_names_that_are_not_utf8(images: Path, tmp_path: Path) -> None:
    odd = image(images / INVALID_UTF8, 9)
    out = tmp_path / "r.parquet"
    result = invoke("run", images, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    rows = {row["path_bytes"]: row for row in pq.read_table(out).to_pylist()}
    row = rows[os.fsencode(odd)]
    assert row["error"] is None and "\ufffd" in row["path"]
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"imgs/camera_\xff\xfe.png\n")  # a list that is not UTF-8 either
    listed = tmp_path / "listed.parquet"
    assert invoke("run", "--list", listing, "--out", listed, *FAST).exit_code == 0
    assert pq.read_table(listed).column("path_bytes").to_pylist() == [os.fsencode(odd)]
    assert pq.read_table(listed).column("error").to_pylist() == [None]


def test_resume_with_names_that_are_not_utf8(images: Path, tmp_path: Path) -> None:
    for i in range(10):
        image(images / os.fsdecode(b"x\xff%02d.png" % i), 20 + i)
    out = tmp_path / "r.parquet"
    interrupted_run(images, out)
    result = invoke("run", images, "--out", out, *FAST, "--batch-size", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == 16


def test_a_run_stopped_before_it_saved_a_row_is_started_again_plainly_or_by_resume(
    images: Path, tmp_path: Path
) -> None:
    """Killed, or stopped as it made OUT.parts (before its job record, written whole or
    not at all, was in it), a run that saved no row left a parts folder without parts:
    it was taken for an interrupted run's, which a plain run refused and --resume refused
    as an older psicbatch's or another job's. Nothing was saved, so either starts afresh."""
    from psicbatch.run.job import JobIdentity
    from psicbatch.run.output import parts_directory

    out = tmp_path / "r.parquet"
    another = JobIdentity(["elsewhere"], {}, {}, "all", "pil", {})
    for resume, record in (
        ([], None),
        (["--resume"], None),
        ([], another),
        (["--resume"], another),
    ):
        parts = parts_directory(out)
        parts.mkdir()
        (parts / "._job.json.tmp-99999").write_text('{"sources": [')  # a half-written record
        if record is not None:  # or a whole one: killed before its first part was saved
            record.write(parts)
        result = invoke("run", images, "--out", out, *FAST, *resume)
        assert result.exit_code == 0, result.output
        assert pq.read_table(out).num_rows == 6 and not parts.exists()
        out.unlink()
    parts.mkdir()
    (parts / "part-00000000.parquet").write_bytes(b"rows of a run without a record")
    result = invoke("run", images, "--out", out, *FAST, "--resume")
    assert result.exit_code == 1 and "without a job record" in result.output, result.output


# 3. A resume continues the same job or refuses.


@pytest.fixture(scope="module")
def interrupted_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One interrupted run shared by the refusal cases: a refused resume changes nothing,
    which each case checks, so they can all refuse the same job."""
    from psicbatch.checkpoint import load_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("job")
    folder = root / "imgs"
    folder.mkdir()
    for i in range(24):  # enough left after two saved parts for the kill to come first
        image(folder / f"part_{i:03d}.png", i)
    out = root / "r.parquet"
    checkpoint = load_checkpoint(demo_model_path())
    checkpoint.state_dict = PSICNet(checkpoint.model_config).state_dict()  # untrained
    save_checkpoint(checkpoint, root / "other.pt")
    (root / "other").mkdir()
    image(root / "other" / "o.png", 99)
    return {"images": folder, "out": out, "parts": interrupted_run(folder, out), "root": root}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--model", "OTHER_MODEL"], "the model or engine"),
        (["--threshold", "0.99"], "the thresholds and decision rule (--threshold, --decisions)"),
        (["--masks", "all"], "the mask mode (--masks; gated then, all now)"),
        (["--decoder", "dali"], "the decoder (--decoder; pil then, dali now)"),
        (["OTHER_SOURCE"], "the input sources"),
    ],
)
def test_resume_refuses_another_job(
    interrupted_job: dict[str, Path], change: list[str], named: str
) -> None:
    job = interrupted_job
    saved = sorted(p.name for p in job["parts"].iterdir())
    replacements = {"OTHER_MODEL": job["root"] / "other.pt", "OTHER_SOURCE": job["root"] / "other"}
    change = [str(replacements.get(c, c)) for c in change]
    result = invoke("run", job["images"], "--out", job["out"], *FAST, "--resume", *change)
    assert result.exit_code == 1, result.output
    assert named in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in job["parts"].iterdir()) == saved  # nothing mixed in


def test_resume_with_the_same_folder_spelled_differently_and_files_added_and_removed(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(6, 12):
        image(images / f"part_{i:03d}.png", i)
    out = tmp_path / "r.parquet"
    monkeypatch.chdir(tmp_path)
    interrupted_run(Path("imgs"), out)  # relative
    (images / "part_000.png").unlink()  # removed after the kill
    image(images / "part_0005a.png", 50)  # added, sorting in the middle
    result = invoke("run", images.resolve(), "--out", out, *FAST, "--batch-size", "2", "--resume")
    assert result.exit_code == 0, result.output
    names = [Path(p).name for p in pq.read_table(out).column("path").to_pylist()]
    expected = sorted(p.name for p in images.glob("*.png"))
    assert names == expected  # the current input order, each file once
    resumed = read_metadata(out)["resumed"]
    assert resumed["kept"] + resumed["recomputed"] <= len(expected)
    assert resumed["dropped"] in (0, 1)  # the removed file, when it had been saved


# 7. A failed start blocks nothing.


def test_a_failed_start_leaves_no_parts(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    result = invoke("run", images, "--out", out, *FAST, "--model", broken)
    assert result.exit_code == 1
    assert not out.with_name(out.name + ".parts").exists()
    assert invoke("run", images, "--out", out, *FAST).exit_code == 0


# 8. Impossible values are refused before anything is read.


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--threshold", "nan"),
        ("--threshold", "2"),
        ("--threshold", "inf"),
        ("--threshold", "-1"),
        ("--max-file-size", "nan"),
        ("--max-file-size", "inf"),
        ("--decode-timeout", "inf"),
        ("--batch-timeout", "inf"),
        ("--batch-timeout", "0"),
        ("--batch-size", "0"),
        ("--workers", "0"),
        ("--flush-every", "0"),
    ],
)
def test_impossible_run_options_are_usage_errors(tmp_path: Path, option: str, value: str) -> None:
    result = invoke("run", tmp_path / "no-such-folder", option, value, "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert not (tmp_path / "r.parts").exists()


def test_a_failed_write_is_one_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """A disk that fills up while an output is written: the message says which output and
    what is still there; neither the output nor its temporary file is left."""

    def fill_up(temporary: Path) -> None:
        temporary.write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "r.parquet"
    with pytest.raises(PsicbatchError) as raised:
        write_checked(out, RESULTS, fill_up, "; the parts are kept")
    said = f"{out}: cannot write the results file (No space left on device); the parts are kept"
    assert str(raised.value) == said
    assert list(tmp_path.iterdir()) == []


# 9. An output where nothing can be written is refused before any work.


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs at ``folder`` (root only; skips the test elsewhere)."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root and a kernel that allows it here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A folder that takes no new file: a read-only mount as root (whom permissions do
    not stop), a folder without write permission otherwise."""
    if os.geteuid() != 0:
        folder = tmp_path / "unwritable"
        folder.mkdir(mode=0o555)
        yield folder
        folder.chmod(0o755)
        return
    with mounted_tmpfs(tmp_path / "unwritable", "ro", "size=64k") as folder:
        yield folder


def test_outputs_that_cannot_be_written_are_refused_in_one_line_before_any_work(
    images: Path, unwritable: Path, tmp_path: Path
) -> None:
    """Found at the end, an unwritable output would cost what came before it: hours of
    training, an engine's build, a run's inference. Each command names it first, in one
    line, also where the folder is still to be made inside the unwritable one."""
    labelled = tmp_path / "labelled"
    generate(labelled, 4, (32, 32), defect_rate=0.5, seed=1)
    results = tmp_path / "r.parquet"
    assert invoke("run", images, "--out", results, *FAST).exit_code == 0
    model, tiny = demo_model_path(), ["--width", "0.125", "--input-size", "32x32"]
    reason = "Permission denied" if os.geteuid() else "Read-only file system"
    new = unwritable / "new"
    commands = [
        (["init", new / "m.pt", *tiny], "OUTPUT"),
        (["train", labelled, "--out", unwritable / "m.pt", *tiny], "--out"),
        (["build-engine", model, "--out", new / "engine"], "--out"),
        (["eval", model, labelled, "--out", unwritable / "eval"], "--out"),
        (["cv", labelled, "--folds", "2", "--out", new / "cv", *tiny], "--out"),
        (["calibrate", labelled, "--model", model, "--out", unwritable / "d.json"], "--out"),
        (["run", images, "--out", new / "r.parquet", *FAST], "--out"),
        (["run", "--watch", images, "--out", unwritable / "w", *FAST], "--out"),
        (["run", images, "--out", unwritable / "r.parquet", *FAST[:-1]], "--out"),  # a bar
        (["report", results, "--html", unwritable / "r.html"], "--html"),
        (["report", results, "--csv", unwritable / "r.csv"], "--csv"),
        (["report", results, "--mask-images", new / "masks"], "--mask-images"),
        (["synth", new / "synth", "--count", "2"], "OUT"),
        (["bench", "--out", unwritable / "bench", "--width", "0.125"], "--out"),
    ]
    for command, option in commands:
        output = next(part for part in command if str(part).startswith(str(unwritable)))
        result = invoke(*command)
        said = (
            f"Error: {output}: cannot be written ({unwritable}: {reason}); choose another {option}"
        )
        assert (result.exit_code, result.output.splitlines()) == (1, [said]), command
    assert list(unwritable.iterdir()) == []


def test_a_write_that_fails_on_a_read_only_file_system_says_why(unwritable: Path) -> None:
    """Removing the temporary file fails there too; that must not hide the write's error."""
    with pytest.raises(PsicbatchError, match=r"cannot write the report \((Read-only|Perm)"):
        write_checked(unwritable / "r.html", REPORT, lambda temporary: temporary.write_text("x"))


def test_a_checkpoint_the_disk_cannot_hold_is_one_line_naming_the_reason(tmp_path: Path) -> None:
    """torch's own writer would say only ``unexpected pos N vs M``."""
    with mounted_tmpfs(tmp_path / "small", "size=64k") as small:
        result = invoke("init", small / "m.pt", "--width", "0.25")
        said = f"Error: {small / 'm.pt'}: cannot be written (No space left on device)"
        assert (result.exit_code, result.output.splitlines()) == (1, [said])
        assert list(small.iterdir()) == []
        # An image library writing to an open file names none: the command is named.
        result = invoke("synth", small / "synth", "--count", "40", "--size", "128x128", "-q")
        said = "Error: No space left on device while psicbatch synth wrote its output"
        assert (result.exit_code, result.output.splitlines()) == (1, [said])


def test_a_file_the_system_refuses_unforeseen_is_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError that names a file, where no check foresaw it, is one line; one that
    names none is a bug and keeps its traceback."""
    import psicbatch.checkpoint

    def refuse(checkpoint: object, path: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(psicbatch.checkpoint, "save_checkpoint", refuse)
    result = invoke("init", tmp_path / "m.pt", "--width", "0.125")
    assert (result.exit_code, result.output.splitlines()) == (
        1,
        [f"Error: {tmp_path / 'm.pt'}: Input/output error"],
    )

    def fill(error: OSError) -> Callable[..., None]:
        def write(*_: object) -> None:
            raise error

        return write

    full = errno.ENOSPC, os.strerror(errno.ENOSPC)
    copied = OSError(*full, "model.pt", None, str(tmp_path / "engine" / "model.pt"))
    for error, said in (
        (OSError(*full), "No space left on device while psicbatch init wrote its output"),
        (copied, f"{tmp_path / 'engine' / 'model.pt'}: No space left on device"),  # the copy
    ):
        monkeypatch.setattr(psicbatch.checkpoint, "save_checkpoint", fill(error))
        result = invoke("init", tmp_path / "m.pt", "--width", "0.125")
        assert (result.exit_code, result.output.splitlines()) == (1, [f"Error: {said}"])
    monkeypatch.setattr(psicbatch.checkpoint, "save_checkpoint", lambda *_: os.close(-1))
    assert isinstance(invoke("init", tmp_path / "m.pt").exception, OSError)


def test_calibrating_into_an_engine_on_a_read_only_file_system_is_refused_first(
    tmp_path: Path,
) -> None:
    """calibrate --engine stores its decisions in the engine folder: a deployed engine on a
    read-only mount is named before the images are scored, and nothing is written."""
    labelled = tmp_path / "labelled"
    generate(labelled, 4, (32, 32), defect_rate=0.5, seed=1)
    with mounted_tmpfs(tmp_path / "deployed", "size=8m") as deployed:
        engine = deployed / "engine"
        build = ["build-engine", demo_model_path(), "--backend", "torch", "--precision", "fp32"]
        assert invoke(*build, "--out", engine).exit_code == 0
        remount = ["mount", "-o", "remount,ro", str(deployed)]
        subprocess.run(remount, check=True)
        result = invoke("calibrate", labelled, "--engine", engine, "--out", tmp_path / "d.json")
        said = (
            f"Error: {engine}: cannot be written ({engine}: Read-only file system); copy the "
            "engine folder where it can be, and give that"
        )
        assert (result.exit_code, result.output.splitlines()) == (1, [said])
    assert not (tmp_path / "d.json").exists()


# 10. One process at a time writes an output.


def test_a_second_training_or_cross_validation_of_one_output_is_refused(tmp_path: Path) -> None:
    """Both would save their epochs (or folds) over each other's, and a resume would go on
    from either; the second stops in one line and writes nothing."""
    labelled = tmp_path / "labelled"
    generate(labelled, 4, (32, 32), defect_rate=0.5, seed=1)
    tiny = ["--width", "0.125", "--input-size", "32x32", "-q"]
    for command, out in (("train", tmp_path / "m.pt"), ("cv", tmp_path / "cv")):
        with OutputLock(out, command):
            result = invoke(command, labelled, "--out", out, *tiny)
        assert (result.exit_code, result.output.splitlines()) == (1, [held(out, command)])
        assert [path.name for path in tmp_path.iterdir()] == ["labelled"]


def held(out: Path, holder: str) -> str:
    """The refusal of an output that ``holder`` (in this process) is writing."""
    return (
        f"Error: {out}: another psicbatch {holder} (process {os.getpid()}) is writing this "
        f"output (lock {out}.lock); wait for it or choose another --out"
    )


def test_a_second_build_into_one_engine_folder_is_refused(tmp_path: Path) -> None:
    """It would remove the first build's staging folder from under it."""
    engine = tmp_path / "engine"
    with OutputLock(engine, "build-engine"):
        result = invoke("build-engine", demo_model_path(), "--out", engine, "--backend", "torch")
    assert (result.exit_code, result.output.splitlines()) == (1, [held(engine, "build-engine")])
    assert list(tmp_path.iterdir()) == []


def test_reports_and_decisions_are_written_by_one_process_at_a_time(tmp_path: Path) -> None:
    """Two evaluations or benchmarks into one folder would mix their files (and two
    benchmarks at once would time each other); two calibrations would replace each other's
    decision file; a calibration storing its decisions in an engine folder that a build is
    replacing would lose them. The second refuses in one line, naming the first."""
    labelled = tmp_path / "labelled"
    generate(labelled, 4, (32, 32), defect_rate=0.5, seed=1)
    model = demo_model_path()
    engine = tmp_path / "engine"
    assert invoke("build-engine", model, "--backend", "torch", "--out", engine).exit_code == 0
    evaluation, bench, decisions = tmp_path / "eval", tmp_path / "bench", tmp_path / "d.json"
    attempts = [
        ("eval", evaluation, ["eval", model, labelled, "--out", evaluation]),
        ("bench", bench, ["bench", "--model", model, "--out", bench]),
        ("calibrate", decisions, ["calibrate", labelled, "--model", model, "--out", decisions]),
        ("build-engine", engine, ["calibrate", labelled, "--engine", engine, "--out", decisions]),
        ("calibrate", engine, ["build-engine", model, "--out", engine, "--overwrite"]),
    ]
    for holder, out, command in attempts:
        with OutputLock(out, holder):
            result = invoke(*command)
        assert (result.exit_code, result.output.splitlines()) == (1, [held(out, holder)])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["engine", "labelled"]


def test_an_output_lock_is_freed_at_the_end_and_skipped_where_there_are_no_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network mount without its lock service would refuse every output otherwise."""
    import fcntl

    out = tmp_path / "m.pt"
    with OutputLock(out, "train"):
        assert (tmp_path / "m.pt.lock").read_text() == f"{os.getpid()} train\n"
        with pytest.raises(
            PsicbatchError, match=r"another psicbatch train \(process [0-9]+\) is writing"
        ):
            OutputLock(out, "train").__enter__()
    assert list(tmp_path.iterdir()) == []
    with OutputLock(out, "train"):  # free again
        pass

    def no_locks(*_: object) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with OutputLock(out, "train"):
        pass
    assert list(tmp_path.iterdir()) == []
