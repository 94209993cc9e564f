"""The Python API: the same results as psicbatch run, for files and in-memory images."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import psicbatch
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    generate(root, 10, (150, 190), defect_rate=0.5, seed=3)
    return root / "images"


def test_inspecting_files_gives_the_rows_of_psicbatch_run(images: Path, tmp_path: Path) -> None:
    files = sorted(images.glob("*.png"))
    out = tmp_path / "r.parquet"
    args = ["run", *map(str, files), "-o", str(out), "--decoder", "pil", "--precision", "fp32"]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "-q", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    rows = {row["path"]: row for row in pq.read_table(out).to_pylist()}
    with psicbatch.Inspector(device="cpu", precision="fp32", decoder="pil", batch_size=4) as it:
        results = list(it.inspect(files))
    assert [r.index for r in results] == list(range(len(files)))
    for found in results:
        row = rows[found.path]
        assert found.probability == pytest.approx(row["probability"])
        assert found.is_defect == row["is_defect"] and found.mask_rle == row["mask"]
        assert found.mask().sum() == found.mask_area == row["mask_area"]
        assert found.size == (150, 190) and found.error is None
    assert any(found.is_defect for found in results)


def test_an_inspect_under_way_holds_another_back_instead_of_mixing_their_images(
    images: Path,
) -> None:
    """Two inspections of arrays at once (two threads, or two loops interleaved) share
    the worker and its store of arrays: the first's later results were the second's
    images' (30 arrays in batches of 2, interleaved after one result), and the second
    failed on a KeyError. Another thread's call now waits until the first has inspected
    all its images (its results need not all be taken) or its loop is left, and then
    gives its own results; one from the same thread, which could never see the first
    end, is refused. The first's results are unchanged."""
    frames = [np.asarray(Image.open(path)) for path in sorted(images.glob("*.png"))[:5]]
    with psicbatch.Inspector(device="cpu", precision="fp32", batch_size=2) as inspector:
        alone = [result.probability for result in inspector.inspect(frames)]
        first = inspector.inspect(frames)
        taken = [next(first).probability]
        with pytest.raises(PsicbatchError, match="inspecting other images in this thread"):
            list(inspector.inspect(frames[::-1]))
        other: list[float | None] = []
        waiting = threading.Thread(
            target=lambda: other.extend(r.probability for r in inspector.inspect(frames[::-1]))
        )
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive() and other == []  # its turn comes after the first's
        assert taken + [result.probability for result in first] == alone
        waiting.join(60)
        assert other == pytest.approx(alone[::-1], abs=1e-5)  # batched otherwise
        for _ in inspector.inspect(frames):
            break  # a loop left early ends its inspection
        again = [result.probability for result in inspector.inspect(frames[::-1])]
        assert again == pytest.approx(alone[::-1], abs=1e-5)
        assert inspector.arrays.arrays == {}  # no array kept once its inspection ended
        kept = inspector.inspect(frames[:2])
        next(kept)  # one batch: all its images are inspected, though its results are not all taken
        assert [result.probability for result in inspector.inspect(frames)] == alone


def test_a_call_from_another_thread_waits_at_most_the_batch_timeout(images: Path) -> None:
    """A loop neither finished nor left would hold another thread's call for ever."""
    frames = [np.asarray(Image.open(path)) for path in sorted(images.glob("*.png"))[:3]]
    with psicbatch.Inspector(device="cpu", batch_size=1, batch_timeout=0.5) as inspector:
        held = inspector.inspect(frames)
        next(held)
        errors = _refusal(inspector, frames)
        assert errors == [
            "this Inspector waited 0.5 s for another thread's inspection to end (a loop "
            "neither finished nor left?)"
        ]
        assert len(list(held)) == 2


def test_an_inspect_after_a_loop_left_early_waits_for_its_batches_in_flight() -> None:
    """The batches a loop left early had in flight went on through the worker: the next
    inspect's arrays were taken by them (a KeyError in 10 of 10 tries with 30 arrays in
    batches of 2)."""
    darker = [np.full((96, 96), 250 - 8 * i, np.uint8) for i in range(30)]
    lighter = [np.full((96, 96), 8 * i, np.uint8) for i in range(30)]
    with psicbatch.Inspector(device="cpu", precision="fp32", batch_size=2) as inspector:
        alone = [result.probability for result in inspector.inspect(lighter)]
        for _ in range(3):
            for _ in inspector.inspect(darker):
                break
            assert inspector.pipeline  # its threads, which the next inspect waits for
            assert [result.probability for result in inspector.inspect(lighter)] == alone
            assert inspector.pipeline == []  # a whole inspection leaves nothing to wait for


def _refusal(inspector: psicbatch.Inspector, frames: list[np.ndarray]) -> list[str]:
    """What ``inspect`` refused with, called from another thread."""
    errors: list[str] = []

    def call() -> None:
        try:
            list(inspector.inspect(frames))
        except PsicbatchError as error:
            errors.append(str(error))

    other = threading.Thread(target=call)
    other.start()
    other.join(60)
    return errors


def test_arrays_give_what_their_files_give_and_bad_ones_only_an_error(images: Path) -> None:
    files = sorted(images.glob("*.png"))[:3]
    arrays = [np.asarray(Image.open(path)) for path in files]
    with psicbatch.Inspector(device="cpu", precision="fp32", decoder="pil") as inspector:
        from_files = list(inspector.inspect(files))
        bad = [np.zeros((0, 5), np.uint8), np.zeros((5, 5), np.float32)]
        from_arrays = list(inspector.inspect([*arrays, *bad]))
        with pytest.raises(psicbatch.errors.PsicbatchError, match="files or arrays"):
            list(inspector.inspect([files[0], arrays[0]]))
        with pytest.raises(psicbatch.errors.PsicbatchError, match="image 1: give a path or a"):
            list(inspector.inspect([files[0], [[1, 2], [3, 4]]]))
    for a, b in zip(from_files, from_arrays, strict=False):
        assert b.path.startswith("<array ")
        assert (a.probability, a.mask_rle, a.mask_area) == (b.probability, b.mask_rle, b.mask_area)
    assert from_arrays[-2].error == "an empty image array (shape (0, 5))"
    assert from_arrays[-1].error == "not a uint8 or uint16 image array (float32)"
    assert from_arrays[-1].probability is None and from_arrays[-2].probability is None


def test_one_path_is_one_image_and_one_array_is_refused(images: Path) -> None:
    """A path given alone was taken character by character: 17 results of 'no such file'
    or 'is a directory' for one image; an array alone, row by row."""
    file = sorted(images.glob("*.png"))[0]
    frame = np.asarray(Image.open(file))
    with psicbatch.Inspector(device="cpu", precision="fp32", decoder="pil") as inspector:
        listed = list(inspector.inspect([file]))
        for alone in (str(file), file):
            assert list(inspector.inspect(alone)) == listed
        for bare in (frame, str(file).encode()):
            with pytest.raises(PsicbatchError, match=r"give a list of images, not one "):
                list(inspector.inspect(bare))
        (from_frame,) = inspector.inspect([frame])
        assert from_frame.probability == listed[0].probability
    assert len(listed) == 1 and listed[0].error is None


def test_an_engine_s_stored_decisions_apply_as_in_psicbatch_run(
    images: Path, tmp_path: Path
) -> None:
    """Decisions calibrated into an engine folder decide for the Inspector as they do for
    ``run --engine``; decisions chosen on another engine's probabilities are refused."""
    from psicbatch.assets import demo_model_path
    from psicbatch.decisions import Decisions, Rule, scoring_engine
    from psicbatch.engines.build import BuildOptions, build_engine
    from psicbatch.engines.manifest import read_manifest
    from psicbatch.engines.revisions import set_decisions

    engine, _ = build_engine(
        demo_model_path(),
        BuildOptions(backend="torch", precision="fp32", max_batch=4, out=tmp_path / "engine"),
    )
    files = sorted(images.glob("*.png"))
    fast = ["--decoder", "pil", "--device", "cpu", "-q", "--masks", "all"]
    plain = tmp_path / "plain.parquet"
    run = ["run", *map(str, files), "--engine", str(engine)]
    assert CliRunner().invoke(main, [*run, "-o", str(plain), *fast]).exit_code == 0
    model_decided = pq.read_table(plain).to_pylist()
    probabilities = sorted(row["probability"] for row in model_decided)
    threshold = probabilities[len(probabilities) // 2]  # not the model's: half are defects
    scored_by = scoring_engine(vars(read_manifest(engine)))
    chosen = Decisions(threshold, Rule("both", 5), {}, scored_by=scored_by)
    set_decisions(engine, chosen, tmp_path / "decisions.json")
    decided = tmp_path / "decided.parquet"
    assert CliRunner().invoke(main, [*run, "-o", str(decided), *fast]).exit_code == 0
    rows = pq.read_table(decided).to_pylist()
    assert [row["is_defect"] for row in rows] != [row["is_defect"] for row in model_decided]
    with psicbatch.Inspector(engine, device="cpu", decoder="pil", masks="all") as inspector:
        found = list(inspector.inspect(files))
    assert [r.is_defect for r in found] == [row["is_defect"] for row in rows]
    assert [r.mask_area for r in found] == [row["mask_area"] for row in rows]
    models = read_manifest(engine).thresholds["classification"]  # what decided model_decided
    own = psicbatch.Inspector(engine, device="cpu", decoder="pil", masks="all", threshold=models)
    with own:  # a threshold of one's own replaces the stored decisions, as --threshold
        mine = [r.is_defect for r in own.inspect(files)]
    assert mine == [row["is_defect"] for row in model_decided]
    with pytest.raises(psicbatch.errors.PsicbatchError, match="threshold or decisions, not"):
        psicbatch.Inspector(engine, decisions=tmp_path / "d.json", threshold=0.5)
    other = Decisions(threshold, Rule("both", 5), {}, scored_by={**scored_by, "precision": "bf16"})
    set_decisions(engine, other, tmp_path / "other.json")
    with pytest.raises(psicbatch.errors.PsicbatchError, match="another engine's probabilities"):
        psicbatch.Inspector(engine, device="cpu", decoder="pil")


@pytest.mark.timeout(60, method="thread")  # without the timeout, inspect waits for ever
def test_a_hung_engine_raises_instead_of_holding_the_caller(
    images: Path, hung_engine: None
) -> None:
    """Line software calling inspect would have waited on a hung engine for ever."""
    from psicbatch.run.stages import StageTimeout

    path = next(images.glob("*.png"))
    said = "no batch result and no progress within 1 s"
    with (
        psicbatch.Inspector(device="cpu", precision="fp32", batch_timeout=1) as inspector,
        pytest.raises(StageTimeout, match=said),
    ):
        list(inspector.inspect([path]))
    with pytest.raises(PsicbatchError, match="batch_timeout must be positive"):
        psicbatch.Inspector(batch_timeout=0)


def test_a_decoder_that_does_not_exist_is_refused() -> None:
    """It was taken for PIL without a word, as any name but dali was."""
    with pytest.raises(PsicbatchError, match="--decoder must be one of auto, dali, pil"):
        psicbatch.Inspector(device="cpu", decoder="nvjpeg")


def test_arguments_a_caller_got_wrong_are_refused_in_a_line(tmp_path: Path) -> None:
    """A batch size of 2.5 was taken; a decision file or region that is not there said
    '([Errno 2] No such file or directory: 'PATH')' after its path."""
    with pytest.raises(PsicbatchError, match=r"--batch-size, .* must be whole numbers"):
        psicbatch.Inspector(device="cpu", batch_size=2.5)  # type: ignore[arg-type]
    absent = tmp_path / "absent"
    for argument, kind in (("decisions", "decision file"), ("roi", "region-of-interest image")):
        with pytest.raises(PsicbatchError) as refused:
            psicbatch.Inspector(device="cpu", **{argument: absent})
        assert str(refused.value) == f"{absent}: not a readable {kind} (No such file or directory)"


def test_the_file_limits_of_a_run_apply(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose read stalls (a share that stopped answering) or that is too large
    gets a result with its error, the others theirs, as in psicbatch run; the Inspector
    had only the run's defaults (60 s, 256 MiB)."""
    import psicbatch.run.decode as decode

    files = sorted(images.glob("*.png"))[:3]
    real = decode.read_image

    def stall(path: Path, *args: object) -> np.ndarray:
        if path == files[1]:
            time.sleep(3)
        return real(path, *args)

    monkeypatch.setattr(decode, "read_image", stall)
    options = {"device": "cpu", "decoder": "pil", "precision": "fp32"}
    with psicbatch.Inspector(**options, decode_timeout=0.5) as inspector:
        errors = [result.error for result in inspector.inspect(files)]
    assert errors == [None, "decoding took longer than 0.5 s (--decode-timeout)", None]
    small = tmp_path / "small.png"
    Image.new("L", (64, 48), 90).save(small)  # a few hundred bytes; the others, kilobytes
    limit = (small.stat().st_size + 1) / 2**20
    with psicbatch.Inspector(**options, max_file_size=limit) as inspector:
        small_error, *large_errors = (result.error for result in inspector.inspect([small, *files]))
    assert small_error is None and all(" MiB, above the " in error for error in large_errors)
    with pytest.raises(PsicbatchError, match="max_file_size must be a positive and finite"):
        psicbatch.Inspector(max_file_size=float("nan"))


def test_an_inspector_chooses_its_batch_as_a_run_does(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    assert CliRunner().invoke(main, ["init", str(model), "--width", "0.125"]).exit_code == 0
    with psicbatch.Inspector(model, device="cpu") as chosen:
        assert chosen.batch_size == 1  # 512x512 inputs on a CPU
    with psicbatch.Inspector(model, device="cpu", batch_size=3) as given:
        assert given.batch_size == 3
