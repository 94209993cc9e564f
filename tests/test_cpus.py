"""CPUs a process may keep busy: affinity lowered to a cgroup's CPU quota, read from
cgroup v1 and v2 trees laid out as the kernel does (and, where this machine lets a test
make one, from a real cgroup)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from psicbatch import cpus
from psicbatch.cli import main


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text + "\n")


def test_v2_takes_the_least_quota_of_the_cgroup_and_those_above_it(tmp_path: Path) -> None:
    write(tmp_path, {"cpu.max": "max 100000"})
    write(tmp_path / "pod", {"cpu.max": "250000 100000"})  # 2.5 CPUs for the pod
    write(tmp_path / "pod" / "app", {"cpu.max": "max 100000"})
    assert cpus.cpu_quota(tmp_path, "0::/pod/app\n") == 2.5
    write(tmp_path / "pod" / "app", {"cpu.max": "600000 200000"})
    assert cpus.cpu_quota(tmp_path, "0::/pod/app\n") == 2.5  # 3 below 2.5: 2.5 holds
    write(tmp_path / "pod" / "app", {"cpu.max": "150000 100000"})
    assert cpus.cpu_quota(tmp_path, "0::/pod/app\n") == 1.5


def test_a_container_sees_its_own_cgroup_at_the_root(tmp_path: Path) -> None:
    """Inside a container the path named is the host's and does not exist there: the
    mount's own files are the container's."""
    write(tmp_path, {"cpu.max": "400000 100000"})
    assert cpus.cpu_quota(tmp_path, "0::/kubepods/burstable/pod1/abc\n") == 4.0


def test_v1_reads_the_cpu_controllers_quota_and_period(tmp_path: Path) -> None:
    mount = tmp_path / "cpu,cpuacct"
    write(mount, {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"})
    write(mount / "docker", {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"})
    membership = "12:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n0::/\n"
    assert cpus.cpu_quota(tmp_path, membership) is None  # -1: no quota anywhere
    write(mount / "docker" / "x", {"cpu.cfs_quota_us": "200000", "cpu.cfs_period_us": "100000"})
    assert cpus.cpu_quota(tmp_path, membership) == 2.0
    (tmp_path / "cpu").symlink_to(mount)  # the usual second name of the same mount
    assert cpus.cpu_quota(tmp_path, "4:cpu:/docker/x\n") == 2.0


@pytest.mark.parametrize(
    ("files", "membership"),
    [
        ({}, "0::/\n"),  # no controller files (cpu not delegated)
        ({"cpu.max": "max 100000"}, "0::/\n"),
        ({"cpu.max": "lots of cpu"}, "0::/\n"),  # unreadable: no limit rather than an error
        ({"cpu.max": "200000 0"}, "0::/\n"),
        ({"cpu.max": "200000 100000"}, ""),  # not in any cgroup
        ({"cpu.max": "200000 100000"}, "3:memory:/x\n"),  # v1 without the cpu controller
    ],
)
def test_no_quota_where_none_is_set_or_readable(
    tmp_path: Path, files: dict[str, str], membership: str
) -> None:
    write(tmp_path, files)
    assert cpus.cpu_quota(tmp_path, membership) is None


@pytest.mark.parametrize(
    ("quota", "expected"), [(None, 64), (4.0, 4), (1.5, 1), (3.9, 3), (0.2, 1), (100.0, 64)]
)
def test_available_cpus_are_the_affinity_lowered_to_the_quota(
    monkeypatch: pytest.MonkeyPatch, quota: float | None, expected: int
) -> None:
    monkeypatch.setattr(cpus, "_affinity", lambda: list(range(64)))
    monkeypatch.setattr(cpus, "cpu_quota", lambda: quota)
    assert cpus.available_cpus() == expected


def test_torch_threads_follow_a_quota_below_the_physical_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "-")  # restored, or removed, after the test
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(cpus, "physical_cores", lambda: 32)
    monkeypatch.setattr(cpus, "available_cpus", lambda: 32)
    cpus.limit_threads_to_quota()
    assert "OMP_NUM_THREADS" not in os.environ  # torch's own default holds
    monkeypatch.setattr(cpus, "available_cpus", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # the user's choice holds
    cpus.limit_threads_to_quota()
    assert os.environ["OMP_NUM_THREADS"] == "8"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert CliRunner().invoke(main, ["info"]).exit_code == 0  # before any command
    assert os.environ["OMP_NUM_THREADS"] == "4"


def test_info_names_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "cpu_quota", lambda: 0.5)
    said = CliRunner().invoke(main, ["info", "--json"]).output
    assert f'"1 available to psicbatch (a CPU quota of 0.5), of {os.cpu_count()}; torch' in said


def _cgroup_with_quota(quota_us: int) -> Path | None:
    """A real cgroup allowing ``quota_us`` per 100 ms, where this machine lets one be
    made (root, a writable hierarchy); None elsewhere."""
    name = f"psicbatch-test-{uuid.uuid4().hex[:8]}"
    try:
        if Path("/sys/fs/cgroup/cgroup.controllers").is_file():
            folder = Path("/sys/fs/cgroup") / name
            folder.mkdir()
            (folder / "cpu.max").write_text(f"{quota_us} 100000\n")
        else:
            folder = Path("/sys/fs/cgroup/cpu") / name
            folder.mkdir()
            (folder / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    except OSError:
        return None
    return folder


def test_a_process_in_a_cgroup_with_a_quota_sizes_its_threads_to_it() -> None:
    folder = _cgroup_with_quota(100000)  # one CPU
    if folder is None:
        pytest.skip("no writable cgroup hierarchy here")
    script = (  # every CPU (a test worker is pinned to some), then into the cgroup
        "import os, sys; os.sched_setaffinity(0, range(os.cpu_count()));"
        "open(sys.argv[1] + '/cgroup.procs', 'w').write(str(os.getpid()));"
        "from psicbatch.cli import entry; sys.argv = ['psicbatch', 'info', '--json']; entry()"
    )
    try:
        environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        said = subprocess.run(
            [sys.executable, "-c", script, str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
            env=environment,
        )
    finally:
        folder.rmdir()
    assert said.returncode == 0, said.stderr
    assert "1 available to psicbatch (a CPU quota of 1), of" in said.stdout
    assert '; torch runs 1 thread"' in said.stdout


def test_a_run_on_fewer_cpus_than_the_machine_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psicbatch.data.synth import generate

    generate(tmp_path / "data", 4, (48, 48), defect_rate=0.5, seed=1)
    out = tmp_path / "r.parquet"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # kept by the run, whatever the quota
    monkeypatch.setenv("COLUMNS", "200")  # the summary's rows on one line each
    monkeypatch.setattr(cpus, "cpu_quota", lambda: 1.0)
    said = CliRunner().invoke(main, ["run", str(tmp_path / "data" / "images"), "-o", str(out)])
    assert said.exit_code == 0, said.output
    assert "1 available to psicbatch (a CPU quota of 1), of" in said.output
    monkeypatch.setattr(cpus, "cpu_quota", lambda: None)
    monkeypatch.setattr(cpus, "_affinity", lambda: list(range(os.cpu_count() or 1)))
    again = ["run", str(tmp_path / "data" / "images"), "-o", str(out), "--overwrite"]
    said = CliRunner().invoke(main, again)
    assert said.exit_code == 0, said.output
    assert "available to psicbatch" not in said.output  # every CPU: no row
