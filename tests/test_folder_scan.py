"""A watch's scan: names every poll, a stat only where a file may need inspecting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from psicbatch.run import folder_scan
from psicbatch.run.folder_scan import FULL_PASS_SECONDS, FolderScan, version


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the scan stats, in order."""
    called: list[str] = []
    real = os.stat

    def counting(path: str, *args: object, **kwargs: object) -> os.stat_result:
        called.append(str(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(folder_scan.os, "stat", counting)
    return called


def write(path: Path, data: bytes = b"x") -> Path:
    path.write_bytes(data)
    return path


def test_inspected_files_are_not_stated_between_full_passes(
    tmp_path: Path, stats: list[str]
) -> None:
    files = [write(tmp_path / f"{index:02d}.png") for index in range(30)]
    done = {version(path, path.stat()) for path in files[:25]}
    scan = FolderScan(tmp_path, tmp_path / "out", done)
    stats.clear()
    assert sorted(scan.pending(now=0.0)) == files[25:]  # a full pass: every file stated
    assert len(stats) == 30
    stats.clear()
    assert sorted(scan.pending(now=0.5)) == files[25:]
    assert sorted(stats) == [str(path) for path in files[25:]]  # the 5 not yet inspected
    stats.clear()
    scan.pending(now=FULL_PASS_SECONDS)  # the next full pass
    assert len(stats) == 30


def test_a_file_replaced_by_a_rename_is_found_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "a.png")
    scan = FolderScan(tmp_path, tmp_path / "out", {version(path, path.stat())})
    assert scan.pending(now=0.0) == {}
    os.replace(write(tmp_path / "a.png.tmp", b"new version"), path)  # a new inode
    assert list(scan.pending(now=0.1)) == [path]


def test_a_file_rewritten_in_place_is_found_at_the_next_full_pass(tmp_path: Path) -> None:
    path = write(tmp_path / "a.png")
    scan = FolderScan(tmp_path, tmp_path / "out", {version(path, path.stat())})
    assert scan.pending(now=0.0) == {}
    write(path, b"new version")  # the same inode
    assert scan.pending(now=0.1) == {}
    assert list(scan.pending(now=scan.next_full_pass)) == [path]


def test_full_passes_forget_removed_files(tmp_path: Path) -> None:
    kept, removed = write(tmp_path / "kept.png"), write(tmp_path / "removed.png")
    scan = FolderScan(tmp_path, tmp_path / "out", {version(p, p.stat()) for p in (kept, removed)})
    scan.pending(now=0.0)
    removed.unlink()
    scan.pending(now=scan.next_full_pass)
    assert list(scan.inspected) == [str(kept)]


def test_images_in_subfolders_only_and_not_the_output(tmp_path: Path) -> None:
    (tmp_path / "cam1" / "day2").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere")  # not followed, as os.walk
    images = [write(tmp_path / "a.PNG"), write(tmp_path / "cam1" / "day2" / "b.jpg")]
    for other in ("notes.txt", "a.png.done", "out/part.png", "elsewhere/c.png"):
        write(tmp_path / other)
    found = FolderScan(tmp_path, tmp_path / "out", set()).pending(now=0.0)
    assert sorted(found) == sorted([images[0], images[1], tmp_path / "elsewhere" / "c.png"])
