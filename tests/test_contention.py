"""What else used the CPUs during a benchmark: other processes and the hypervisor's steal
time, read from /proc/stat over this process's CPUs, less its own CPU time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from psicbatch.contention import CpuTimes, contention, contention_line, cpu_times

TICK = os.sysconf("SC_CLK_TCK")
SPIN = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"


def stat_line(name: str, user: int, system: int, idle: int, steal: int) -> str:
    # user nice system idle iowait irq softirq steal guest guest_nice, in ticks
    return f"{name} {user} 0 {system} {idle} 0 0 0 {steal} 0 0"


def test_only_this_processs_cpus_count(tmp_path: Path) -> None:
    """A container pinned to a few CPUs of a large host is contended on those only."""
    mine = sorted(os.sched_getaffinity(0))
    lines = ["cpu 99999 0 99999 0 0 0 0 99999 0 0"]  # the whole machine: not read
    lines += [stat_line(f"cpu{cpu}", 3 * TICK, TICK, 50 * TICK, TICK // 2) for cpu in mine]
    lines += [stat_line(f"cpu{max(mine) + 1}", 90 * TICK, 0, 0, 9 * TICK)]  # not ours
    stat = tmp_path / "stat"
    stat.write_text("\n".join([*lines, "intr 1 2 3", "ctxt 5"]) + "\n")
    times = cpu_times(stat)
    assert times is not None and times.cpus == len(mine)
    assert times.busy == 4.0 * len(mine) and times.steal == 0.5 * len(mine)
    assert cpu_times(tmp_path / "absent") is None


def test_others_are_the_busy_time_less_this_processs_own() -> None:
    start = CpuTimes(cpus=2, busy=10.0, steal=1.0, own=4.0, clock=100.0)
    end = CpuTimes(cpus=2, busy=16.0, steal=1.5, own=8.0, clock=104.0)
    measured = contention(start, end)
    assert measured is not None
    assert (measured["other_processes_cpus"], measured["steal_cpus"]) == (0.5, 0.125)
    assert measured["notable"] and "every figure here is lower" in contention_line(measured)
    assert "during the run (4 s): " in contention_line(measured, "the run", "its rate is")
    quiet = contention(start, CpuTimes(cpus=2, busy=14.1, steal=1.0, own=8.0, clock=104.0))
    assert quiet is not None and not quiet["notable"]
    # Two 10 ms ticks of another process in 50 ms are no sign of a busy machine.
    brief = contention(start, CpuTimes(cpus=2, busy=10.04, steal=1.0, own=4.02, clock=100.05))
    assert brief is not None and brief["other_processes_cpus"] > 0.2 and not brief["notable"]
    assert "lower" not in contention_line(quiet)
    assert contention(None, end) is None and "not recorded" in contention_line(None)


def test_a_process_spinning_on_the_same_cpus_is_counted_and_this_ones_work_is_not() -> None:
    def burn(seconds: float) -> tuple[CpuTimes | None, CpuTimes | None]:
        start, until = cpu_times(), time.monotonic() + seconds
        while time.monotonic() < until:
            pass
        return start, cpu_times()

    alone = contention(*burn(1.0))
    assert alone is not None and alone["other_processes_cpus"] < 0.5, alone
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])  # inherits this CPU set
    try:
        time.sleep(0.5)  # started
        start = cpu_times()
        time.sleep(1.5)  # this process idle: the spinner has a CPU to itself
        shared = contention(start, cpu_times())
    finally:
        spinner.kill()
        spinner.wait()
    assert shared is not None and shared["other_processes_cpus"] > 0.6, shared


def test_a_run_records_the_contention_and_its_summary_says_when_it_was_notable(
    tmp_path: Path,
) -> None:
    """A run's images/s then say less about the engine than about the machine's load."""
    import io

    from rich.console import Console

    from psicbatch.assets import demo_model_path
    from psicbatch.commands.run import _print_summary
    from psicbatch.data.synth import generate
    from psicbatch.engines.spec import EngineSpec
    from psicbatch.run.executors import local_results
    from psicbatch.run.runner import RunOptions, run

    images = generate(tmp_path / "data", 4, (48, 48), defect_rate=0.5, seed=3)
    spec = EngineSpec(checkpoint=demo_model_path(), precision="fp32")
    options = RunOptions(out=tmp_path / "r.parquet", decoder="pil", devices=("cpu",))
    summary = run(images, spec, options)
    assert summary.contention is not None and summary.contention["seconds"] > 0
    elsewhere = RunOptions(out=tmp_path / "e.parquet", decoder="pil", devices=("cpu",))
    # An executor of its own (a Ray cluster's) runs workers that are not this process's.
    assert run(images, spec, elsewhere, executor=local_results).contention is None
    for notable in (True, False):
        measured = {"seconds": 3.0, "cpus": 2, "other_processes_cpus": 0.9, "steal_cpus": 0.0}
        summary.contention = {**measured, "notable": notable}
        shown = io.StringIO()
        _print_summary(Console(file=shown, width=300), summary, options.out)
        said = "CPU contention during the run (3 s): other processes kept 0.90 of this"
        assert (said in shown.getvalue()) == notable, shown.getvalue()
