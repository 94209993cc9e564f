"""A watch's scan: names every poll, a stat only where a file may need inspecting."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from psicbatch.run import folder_scan
from psicbatch.run.folder_scan import FULL_PASS_SECONDS, QUIET_NS, FolderScan, Ledger, version
from tests.refusals import refuse_listing


def counted(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """The first argument of every call of ``os.<name>`` from here on."""
    called: list[str] = []
    real = getattr(os, name)

    def counting(path: str, *args: object, **kwargs: object) -> object:
        called.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(folder_scan.os, name, counting)
    return called


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files (not folders) the scan stats, in order."""
    return counted(monkeypatch, "stat")


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folders the scan lists, in order."""
    return counted(monkeypatch, "scandir")


def quiet(folder: Path) -> None:
    """The folder last changed long ago, as a line's older folders did."""
    long_ago = time.time_ns() - 10 * QUIET_NS
    os.utime(folder, ns=(long_ago, long_ago))


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
    assert sorted(stats) == [str(tmp_path), *map(str, files)]
    stats.clear()
    assert sorted(scan.pending(now=0.5)) == files[25:]
    assert sorted(stats) == [str(tmp_path), *map(str, files[25:])]  # the 5 not yet inspected
    stats.clear()
    scan.pending(now=FULL_PASS_SECONDS)  # the next full pass
    assert len(stats) == 31


def test_a_quiet_folder_is_not_listed_again_until_it_changes(
    tmp_path: Path, listings: list[str]
) -> None:
    older = tmp_path / "2026-12-04"
    older.mkdir()
    inspected = [write(older / f"{index}.png") for index in range(5)]
    quiet(older)
    scan = FolderScan(tmp_path, tmp_path / "out", {version(p, p.stat()) for p in inspected})
    assert scan.pending(now=0.0) == {}
    listings.clear()
    assert scan.pending(now=0.5) == {}
    assert listings == [str(tmp_path)]  # changed just now (older was made in it): listed
    added = write(older / "late.png")  # the folder changes: listed again, the file found
    assert list(scan.pending(now=0.6)) == [added]
    assert listings[1:] == [str(tmp_path), str(older)]


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
    assert scan.inspected == {str(tmp_path): {"kept.png": kept.stat().st_ino}}


def test_images_in_subfolders_only_and_not_the_output(tmp_path: Path) -> None:
    (tmp_path / "cam1" / "day2").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "results").symlink_to(tmp_path / "out")  # the output by another path
    images = [write(tmp_path / name) for name in ("a.PNG", "cam1/day2/b.jpg", ".hidden.png")]
    for other in ("notes.txt", "a.png.done", "out/part.png", ".png"):
        write(tmp_path / other)  # ".png": a name with no stem, no suffix (as os.path.splitext)
    scan = FolderScan(tmp_path, tmp_path / "out", set())
    assert sorted(scan.pending(now=0.0)) == sorted(images)
    assert scan.notes == {}


def test_linked_folders_are_watched_each_once_and_keep_the_path_first_watched_under(
    tmp_path: Path,
) -> None:
    """A camera's folder linked into the line's (``ln -s /mnt/cam3 line/cam3``) is watched
    as if it were there. A folder reached by two paths is watched under one, and keeps it
    while it leads there: under a new path its files would be inspected again."""
    line, mounted = tmp_path / "line", tmp_path / "mnt" / "cam3"
    (line / "cam1").mkdir(parents=True)
    (mounted / "day1").mkdir(parents=True)
    a = write(line / "cam1" / "a.png")
    write(mounted / "day1" / "b.png")
    (line / "z_cam3").symlink_to(mounted)
    (line / "y_day1").symlink_to(mounted / "day1")  # first in name order: day1's path
    (line / "cam1" / "loop").symlink_to(line)
    (line / "cam1" / "again").symlink_to(line / "cam1")
    scan = FolderScan(line, line / "out", set())
    assert sorted(scan.pending(now=0.0)) == [a, line / "y_day1" / "b.png"]
    watched_as = "is the folder watched as {}: its images are inspected once, there"
    assert scan.notes == {
        str(line / "cam1" / "loop"): watched_as.format(line),
        str(line / "cam1" / "again"): watched_as.format(line / "cam1"),
        str(line / "z_cam3" / "day1"): watched_as.format(line / "y_day1"),
    }
    # A link added that comes first in name order: day1 keeps the path it is watched under.
    (line / "x_day1").symlink_to(mounted / "day1")
    write(mounted / "day1" / "c.png")
    assert sorted(scan.pending(now=scan.next_full_pass)) == [
        a,
        *(line / "y_day1" / n for n in ("b.png", "c.png")),
    ]
    assert scan.notes[str(line / "x_day1")] == watched_as.format(line / "y_day1")
    # Once that path leads elsewhere, the folder is watched under the next.
    (line / "y_day1").unlink()
    assert sorted(scan.pending(now=scan.next_full_pass)) == [
        a,
        *(line / "x_day1" / n for n in ("b.png", "c.png")),
    ]


def test_a_folder_that_cannot_be_read_is_named_and_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder an operator made with the wrong owner stopped the whole watch; now it
    holds back its own images only."""
    (tmp_path / "cam1").mkdir()
    (tmp_path / "cam2").mkdir()
    a, b = write(tmp_path / "cam1" / "a.png"), write(tmp_path / "cam2" / "b.png")
    refused = [tmp_path / "cam2"]
    refuse_listing(monkeypatch, refused)
    scan = FolderScan(tmp_path, tmp_path / "out", set())
    assert list(scan.pending(now=0.0)) == [a]
    said = "cannot be read (Permission denied): its images wait until it can"
    assert scan.notes == {str(tmp_path / "cam2"): said}
    refused.clear()  # its owner mended
    assert sorted(scan.pending(now=0.5)) == [a, b]


def test_a_folder_changed_within_its_clock_tick_is_listed_again(tmp_path: Path) -> None:
    """A file created in the same tick of the folder's clock as the listing leaves the
    folder's modification time as it was: a folder changed that recently is not trusted."""
    folder = tmp_path / "camera"
    folder.mkdir()
    scan = FolderScan(tmp_path, tmp_path / "out", set())
    assert scan.pending(now=0.0) == {}
    tick = os.stat(folder).st_mtime_ns
    late = write(folder / "late.png")
    os.utime(folder, ns=(tick, tick))  # as if in the same tick
    assert list(scan.pending(now=0.5)) == [late]


def test_a_folder_that_stops_answering_does_not_lengthen_the_wait_before_the_next_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan waits ten times its length before the next (a scan's share of the time);
    one that waited 0.8 s on a share that did not answer (silent after 0.3 s here) would
    have had the watch wait 8 s once the share answered again, its images unseen."""
    (tmp_path / "a.png").write_bytes(b"x")
    scanner = FolderScan(tmp_path, tmp_path / "out", set())
    scanner.pending(now=0.0)  # the full pass
    (tmp_path / "b.png").write_bytes(b"x")
    monkeypatch.setattr(folder_scan, "SILENT_SECONDS", 0.3)
    real_stat = os.stat
    heard: list[float | None] = []

    def stalled(path: str, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).endswith("b.png"):
            time.sleep(0.6)
            heard.append(scanner.silent_for())  # what the watch reads meanwhile
            time.sleep(0.2)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(folder_scan.os, "stat", stalled)
    assert set(scanner.pending(now=0.5)) == {tmp_path / "a.png", tmp_path / "b.png"}
    assert heard[0] is not None and heard[0] >= 0.6
    assert scanner.silent_for() is None and scanner.wait_seconds < 1.0


def test_the_ledger_knows_a_version_by_path_size_and_time() -> None:
    ledger = Ledger([(b"/line/a.png", 10, 5)])
    ledger.add((b"/line/b.png", 10, 5))
    assert (b"/line/a.png", 10, 5) in ledger and (b"/line/b.png", 10, 5) in ledger
    for other in ((b"/line/a.png", 11, 5), (b"/line/a.png", 10, 6), (b"/line/c.png", 10, 5)):
        assert other not in ledger
    assert len(ledger) == 2


def test_versions_added_one_by_one_are_sorted_in_each_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Ledger, "RECENT_LIMIT", 4)
    versions = [(f"/line/{i}.png".encode(), i, 2**62 + i) for i in range(11)]
    ledger = Ledger(versions[:3])
    for file_version in versions + versions[5:]:  # each again, some after a sort-in
        ledger.add(file_version)
    ledger.update(versions)  # all again at once
    assert len(ledger) == 11 and all(v in ledger for v in versions)
    assert (b"/line/11.png", 11, 2**62 + 11) not in ledger


def test_the_ledger_takes_a_tenth_of_the_memory_of_its_versions() -> None:
    """It grows with every version a watch inspects, for the life of the process."""
    versions = [(f"/line/camera1/2026-12-05/{i:08d}.png".encode(), 2_000_000 + i,
                 1_764_900_000_000_000_000 + i) for i in range(20_000)]  # fmt: skip

    def allocated(make: object) -> int:
        tracemalloc.start()
        held = make()  # type: ignore[operator]
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del held
        return size

    as_tuples = allocated(lambda: {(bytes(p), s + 2**40, t + 1) for p, s, t in versions})
    as_ledger = allocated(lambda: Ledger(versions))
    assert as_ledger < as_tuples / 10, (as_ledger, as_tuples)


@pytest.mark.parametrize("shared_high", [False, True])
def test_the_ledger_answers_many_questions_at_once_as_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch, shared_high: bool
) -> None:
    """Sorted in by a merge, looked up together; also where digests share their high half
    (forced here: a chance collision, or a digest added again), both halves decide."""
    if shared_high:
        digest = Ledger._digest
        monkeypatch.setattr(
            Ledger, "_digest", staticmethod(lambda version: bytes(8) + digest(version)[8:])
        )
    monkeypatch.setattr(Ledger, "RECENT_LIMIT", 5)
    versions = [(f"/line/{i}.png".encode(), i, 7) for i in range(40)]
    ledger = Ledger(versions[:23])
    ledger.update(versions[10:30:2])  # some again, some new, across sort-ins
    ledger.add(versions[31])  # still among the recent ones
    held = {*versions[:23], *versions[10:30:2], versions[31]}
    asked = [*versions, (b"/line/0.png", 0, 8)]
    assert ledger.holds_each(asked) == [version in held for version in asked]
    assert ledger.holds_each(asked) == [version in ledger for version in asked]
    assert len(ledger) == len(held) and Ledger().holds_each(asked[:2]) == [False, False]
