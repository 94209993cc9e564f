"""Faults a long unattended run must survive: bad files, kills, full disks, locked outputs.

The bad-input corpus is generated here (nothing binary is committed). Each case has its
documented outcome: a result for valid variants of an image, an error row naming the
problem for everything else, and never a lost result for a good image.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import psicbatch.run.output as output_module
from psicbatch.cli import main

# file name -> None (a result is expected) or a fragment of the expected error message
CORPUS: dict[str, str | None] = {
    "good.png": None,
    "good.jpg": None,
    "sixteen_bit.png": None,
    "rgba.png": None,
    "palette.png": None,
    "cmyk.jpg": None,
    "exif_rotated.jpg": None,
    "exif_after_pixels.png": None,
    "one_pixel.png": None,
    "with space ü.png": None,
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "zero.png": "empty file (0 bytes)",
    "random_bytes.jpg": "not a readable image",
    "text.png": "not a readable image",
    "huge_header.png": "too large",
}
GOOD = [name for name, problem in CORPUS.items() if problem is None]


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny file whose header claims a huge image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * (width + 1))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )


def _png_with_exif_after_pixels(path: Path, image: Image.Image, exif: Image.Exif) -> None:
    """A PNG whose eXIf chunk follows its image data, where the PNG extension allows it."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    png = buffer.getvalue()
    end = png.rindex(b"IEND") - 4  # the IEND chunk's start
    payload = exif.tobytes()[len(b"Exif\0\0") :]  # the chunk holds the TIFF data alone
    path.write_bytes(png[:end] + _chunk(b"eXIf", payload) + png[end:])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (96, 80), dtype=np.uint8)
    Image.fromarray(base).save(root / "good.png")
    Image.fromarray(base).save(root / "good.jpg", quality=95)
    (root / "truncated.jpg").write_bytes((root / "good.jpg").read_bytes()[:400])
    (root / "truncated.png").write_bytes((root / "good.png").read_bytes()[:500])
    (root / "zero.png").write_bytes(b"")
    (root / "random_bytes.jpg").write_bytes(rng.bytes(5000))
    (root / "text.png").write_text("not an image\n")
    Image.fromarray(base.astype(np.uint16) * 257).save(root / "sixteen_bit.png")
    Image.fromarray(np.dstack([base] * 3 + [np.full_like(base, 200)]), "RGBA").save(
        root / "rgba.png"
    )
    Image.fromarray(base).convert("P").save(root / "palette.png")
    Image.fromarray(np.dstack([base] * 3)).convert("CMYK").save(root / "cmyk.jpg")
    rotated = Image.fromarray(np.ascontiguousarray(base.T))
    exif = rotated.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 80 wide, 96 high
    rotated.save(root / "exif_rotated.jpg", exif=exif)
    _png_with_exif_after_pixels(root / "exif_after_pixels.png", rotated, exif)
    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(root / "one_pixel.png")
    Image.fromarray(base).save(root / "with space ü.png")
    _png_header_only(root / "huge_header.png", 20000, 20000)
    (root / "loop").mkdir()
    os.symlink("..", root / "loop" / "back")  # a folder link back up: a loop if followed
    return root


def test_images_up_to_the_pixel_limit_raise_no_warning_and_larger_are_one_line(
    tmp_path: Path,
) -> None:
    """psicbatch accepts up to 100 megapixels; PIL alone warns of a decompression bomb from
    89 megapixels on, a scary line for an image psicbatch reads. Above the limit every
    reader (training's, a run's header check, a region of interest) refuses the image
    from its header, in one line, before decoding it."""
    import warnings

    from psicbatch.data.images import file_bit_depth, read_image
    from psicbatch.errors import PsicbatchError
    from psicbatch.region_record import read_region
    from psicbatch.roi import RegionOfInterest
    from psicbatch.run.headers import header_size

    accepted, refused = tmp_path / "95mp.png", tmp_path / "120mp.png"
    _png_header_only(accepted, 10_000, 9_500)
    _png_header_only(refused, 12_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning fails the test
        assert file_bit_depth(accepted) == 8
        assert header_size(accepted, accepted.read_bytes(), 8) == (9_500, 10_000)
    message = (
        r"120mp.png: image is 12000x10000 \(120 megapixels\), above the 100 megapixel limit "
        r"\(set PSICBATCH_MAX_MEGAPIXELS to raise it\)$"
    )
    with warnings.catch_warnings():  # pytest resets the filter psicbatch sets on import
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(PsicbatchError, match=message):
            read_image(refused, 1)
        with pytest.raises(PsicbatchError, match=message):
            header_size(refused, refused.read_bytes(), 8)
        with pytest.raises(PsicbatchError, match=message):
            RegionOfInterest(read_region(refused))


def test_the_pixel_limit_is_raised_for_every_process_of_a_run(tmp_path: Path) -> None:
    """PSICBATCH_MAX_MEGAPIXELS moves the limit for the run and its worker processes: the
    120-megapixel image (its rows beyond the first left out of the file, so it stays
    small; PIL decodes them as zeros) is read. A value that is not a positive number is
    refused in one line before anything runs."""
    images = tmp_path / "images"
    images.mkdir()
    _png_header_only(images / "120mp.png", 12_000, 10_000)
    Image.new("L", (64, 48), 90).save(images / "small.png")
    out = tmp_path / "r.parquet"
    command = [sys.executable, "-m", "psicbatch", "run", str(images), "--out", str(out)]
    options = ["-q", "--device", "cpu", "--decoder", "pil", "--workers", "2", "--allow-errors"]
    environment = {**os.environ, "PSICBATCH_MAX_MEGAPIXELS": "150"}
    finished = subprocess.run([*command, *options], env=environment, capture_output=True)
    assert finished.returncode == 0, finished.stderr.decode()
    rows = {Path(row["path"]).name: row for row in pq.read_table(out).to_pylist()}
    assert rows["small.png"]["error"] is None and rows["120mp.png"]["error"] is None
    assert (rows["120mp.png"]["width"], rows["120mp.png"]["height"]) == (12_000, 10_000)
    for value in ("0", "many", "nan"):
        result = CliRunner().invoke(
            main, ["run", str(images), "--out", str(tmp_path / "x.parquet")],
            env={"PSICBATCH_MAX_MEGAPIXELS": value},
        )  # fmt: skip
        assert result.exit_code == 1, result.output
        assert result.output.strip() == (
            f"Error: PSICBATCH_MAX_MEGAPIXELS={value}: not a positive number of megapixels"
        )
    assert not (tmp_path / "x.parquet").exists()


def test_a_png_header_is_read_without_decoding_its_pixels(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file's header is checked (size, format, depth, EXIF orientation) before it
    is decoded; PIL itself would decode a PNG to look for EXIF after its pixels. Only a
    PNG that holds such a chunk is decoded for it (96 high, 80 wide as displayed)."""
    from PIL import PngImagePlugin

    from psicbatch.run.headers import read_bytes

    decoded: list[tuple[int, int]] = []
    load = PngImagePlugin.PngImageFile.load

    def counted(image: PngImagePlugin.PngImageFile) -> object:
        decoded.append(image.size)
        return load(image)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counted)
    assert read_bytes(corpus / "good.png", 2**20)[1] == (96, 80)
    assert decoded == []
    assert read_bytes(corpus / "exif_after_pixels.png", 2**20)[1] == (96, 80)
    assert len(decoded) == 1
    xmp = PngImagePlugin.PngInfo()  # an orientation PIL reads from XMP text
    xmp.add_itxt("XML:com.adobe.xmp", '<rdf:Description tiff:Orientation="6"/>')
    Image.new("L", (96, 80)).save(tmp_path / "xmp.png", pnginfo=xmp)
    assert read_bytes(tmp_path / "xmp.png", 2**20)[1] == (96, 80)


@pytest.mark.parametrize("decoder", ["dali", "pil"])
def test_bad_input_corpus(corpus: Path, tmp_path: Path, decoder: str) -> None:
    out = tmp_path / "corpus.parquet"
    result = CliRunner().invoke(
        main,
        ["run", str(corpus), "--out", str(out), "-q", "--decoder", decoder, "--batch-size", "4"],
    )
    assert result.exit_code == 3, result.output
    rows = {Path(row["path"]).name: row for row in pq.read_table(out).to_pylist()}
    assert sorted(rows) == sorted(CORPUS)  # every file once; the link loop was not followed
    lost = [name for name in GOOD if rows[name]["error"] or rows[name]["probability"] is None]
    print(f"good images lost: {len(lost)} of {len(GOOD)}")
    assert lost == []
    for name, problem in CORPUS.items():
        if problem is not None:
            assert problem in rows[name]["error"], (name, rows[name]["error"])
            assert rows[name]["probability"] is None
    for rotated in ("exif_rotated.jpg", "exif_after_pixels.png"):
        assert (rows[rotated]["width"], rows[rotated]["height"]) == (80, 96), rotated
    assert (rows["one_pixel.png"]["width"], rows["one_pixel.png"]["height"]) == (1, 1)
    assert rows["good.png"]["mask"]["size"] == [96, 80]


@pytest.mark.parametrize("decoder", ["dali", "pil"])
def test_unreadable_file(
    corpus: Path, tmp_path: Path, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("a.png", "locked.png", "b.png"):
        (folder / name).write_bytes((corpus / "good.png").read_bytes())
    locked = folder / "locked.png"
    if os.geteuid() == 0:
        # Root opens files whatever their permissions: let the open fail as the OS would.
        real_open = os.open

        def refuse(path: object, flags: int, *args: object) -> int:
            if Path(path) == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", refuse)
    else:
        locked.chmod(0)
    out = tmp_path / "locked.parquet"
    result = CliRunner().invoke(
        main, ["run", str(folder), "--out", str(out), "-q", "--decoder", decoder]
    )
    assert result.exit_code == 3, result.output
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    assert rows["locked.png"]["error"] == "permission denied"
    assert rows["a.png"]["error"] is None and rows["b.png"]["error"] is None


# --- interruption -------------------------------------------------------------------------

KILL_DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    point, target = sys.argv[1], int(sys.argv[2])
    calls = {"n": 0}

    def die_after(original, on_call=None):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if on_call is None and calls["n"] == target:
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if on_call is not None and on_call(*args) and calls["n"] >= target:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapped

    import psicbatch.run.decode as decode
    import psicbatch.engines.torch_engine as torch_engine
    import psicbatch.run.output as output
    if point == "decode":
        decode.PilDecoder.decode = die_after(decode.PilDecoder.decode)
    elif point == "inference":
        torch_engine.TorchEngine._run = die_after(torch_engine.TorchEngine._run)
    elif point == "row-group-write":  # the part's temporary file is written, not yet renamed
        output.pq.write_table = die_after(output.pq.write_table, on_call=lambda *a: True)
    elif point == "final-rename":  # the finished file is complete under its temporary name
        real_replace = os.replace
        def replace(source, destination):
            if str(destination).endswith("results.parquet"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(source, destination)
        os.replace = replace
    from psicbatch.cli import main
    main(sys.argv[3:])
    """
)


@pytest.fixture(scope="module")
def run_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    from psicbatch.data.synth import generate

    root = tmp_path_factory.mktemp("interrupt")
    generate(root, 40, (64, 64), defect_rate=0.3, seed=3)
    reference = root / "reference.parquet"
    result = CliRunner().invoke(
        main, ["run", str(root / "images"), "--out", str(reference), "-q", *RUN_ARGS]
    )
    assert result.exit_code == 0, result.output
    return root / "images", pq.read_table(reference).to_pylist()


RUN_ARGS = ["--decoder", "pil", "--batch-size", "4", "--flush-every", "4"]


@pytest.mark.parametrize(
    ("point", "target"),
    [("decode", 4), ("inference", 5), ("row-group-write", 3), ("final-rename", 1)],
)
def test_kill_at_any_point_then_resume(run_images, tmp_path: Path, point: str, target: int) -> None:
    images, reference = run_images
    out = tmp_path / "results.parquet"
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER)
    killed = subprocess.run(
        [sys.executable, driver, point, str(target), "run", images, "--out", out, "-q", *RUN_ARGS],
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not out.exists()  # a half-finished run never looks like a finished file
    result = CliRunner().invoke(
        main, ["run", str(images), "--out", str(out), "-q", "--resume", *RUN_ARGS]
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).to_pylist() == reference
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((".results", "results"))]
    assert leftovers == ["results.parquet"]


def test_disk_full_is_a_clear_error_and_resumable(
    run_images: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, reference = run_images
    out = tmp_path / "results.parquet"
    real_write, writes = output_module.pq.write_table, []

    def fill_disk_after_two(table: object, where: Path, **kwargs: object) -> None:
        writes.append(where)
        if len(writes) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(table, where, **kwargs)

    monkeypatch.setattr(output_module.pq, "write_table", fill_disk_after_two)
    result = CliRunner().invoke(main, ["run", str(images), "--out", str(out), "-q", *RUN_ARGS])
    assert result.exit_code == 1
    message = result.output.strip()
    assert "No space left on device" in message and "--resume" in message
    assert len(message.splitlines()) == 1
    monkeypatch.undo()
    result = CliRunner().invoke(
        main, ["run", str(images), "--out", str(out), "-q", "--resume", *RUN_ARGS]
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).to_pylist() == reference


def test_unwritable_output_location(run_images, tmp_path: Path) -> None:
    images, _ = run_images
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    result = CliRunner().invoke(
        main, ["run", str(images), "--out", str(blocker / "r.parquet"), "-q", *RUN_ARGS]
    )
    assert result.exit_code == 1
    assert "not-a-folder" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_stop_right_after_rows_are_handed_over_saves_them_once(tmp_path: Path) -> None:
    """A signal raises wherever the main thread is. Stopped the instant after a flush has
    handed rows to the writer, a run must not hand them over again on its way out: they
    would be in the results twice after --resume."""
    from psicbatch.run.options import RunOptions
    from psicbatch.run.runner import RunSummary, _save_results

    def rows(*indices: int) -> list[dict]:
        return [
            {"input_index": i, "path": str(i), "error": None, "is_defect": False} for i in indices
        ]

    class StoppedAtSecondFlush:
        def __init__(self) -> None:
            self.saved: list[int] = []
            self.stopped = False

        def write(self, handed: list[dict], *told: object, patient: bool = True) -> None:
            self.saved += [row["input_index"] for row in handed]
            if len(self.saved) == 4 and not self.stopped:
                self.stopped = True
                raise KeyboardInterrupt  # as a SIGINT arriving just after the hand-over

    output = StoppedAtSecondFlush()
    batches = iter([(rows(0, 1), {}), (rows(2, 3), {}), (rows(4, 5), {})])
    options = RunOptions(out=tmp_path / "r.parquet", part_rows=2)
    keys = [str(i).encode() for i in range(6)]
    with pytest.raises(KeyboardInterrupt):
        _save_results(batches, keys, output, RunSummary(), options, lambda _: None, None)  # type: ignore[arg-type]
    assert output.saved == [0, 1, 2, 3]
