"""The sandbox's limits over all concurrent runs, measured from outside: the memory (summed
proportional set sizes) and the threads of every sandboxed program together stay under the
configured totals while several runs fan out at once. A sampler stops the runs as soon as a
total is exceeded, so a broken limit fails fast instead of taking the machine's memory."""

from __future__ import annotations

import asyncio
import os

import pytest

from scaffolding_nats.workers.tools.sandbox import Sandbox, SandboxLimits, SandboxRun

from .sandboxed import sandboxed_usage

MiB = 2**20

FAN_OUT = """
import os, time
children = []
for _ in range(8):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            block = b"x" * {size}
            time.sleep(1.5)
        except MemoryError:
            os._exit(3)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print(len(children), "children")
"""

FORKS = """
import os, time
n = 0
for _ in range(64):
    try:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
    except OSError:
        break
print(n, "children", flush=True)
time.sleep(1)
"""


async def _watched(
    sandbox: Sandbox, code: str, runs: int, memory: int, tasks: int
) -> tuple[list[SandboxRun], int, int]:
    """Start ``runs`` runs at once; sample the totals until they end. Returns the runs and the
    peaks; over a total, every run is stopped and the test fails."""
    started = [asyncio.ensure_future(sandbox.run(code)) for _ in range(runs)]
    peak_memory = peak_tasks = 0
    try:
        while not all(r.done() for r in started):
            used, threads = await asyncio.to_thread(sandboxed_usage, os.getpid())
            peak_memory, peak_tasks = max(peak_memory, used), max(peak_tasks, threads)
            if used > memory or threads > tasks:
                pytest.fail(f"over the totals: {used / MiB:.0f} MiB of {memory / MiB:.0f}, {threads} tasks of {tasks}")
            await asyncio.sleep(0.01)
        return [r.result() for r in started], peak_memory, peak_tasks
    finally:
        for r in started:
            r.cancel()
        await asyncio.gather(*started, return_exceptions=True)


@pytest.mark.parametrize("size", [400_000_000, 40_000_000], ids=["8x400MB", "8x40MB"])
async def test_a_fan_out_memory_bomb_in_parallel_runs_stays_under_the_total(size: int) -> None:
    """8 forks of 400 MB each (over any one process's limit) and of 40 MB each (under it, but
    not under the run's share together), in 3 runs at once."""
    total = 256 * MiB
    sandbox = Sandbox(
        SandboxLimits(total_memory_bytes=total, tmp_bytes=MiB, wall_seconds=15, cpu_seconds=10), max_parallel=4
    )
    runs, peak, _ = await _watched(sandbox, FAN_OUT.format(size=size), 3, total, 10**6)
    assert peak <= total
    per_run = sandbox.resources()
    for run in runs:
        assert run.limit is None or run.limit.startswith("memory"), run
        if per_run.mode == "cgroup" and size < per_run.address_space:
            assert run.limit is not None and run.limit.startswith("memory")  # the run's share ends it
    await sandbox.close()


async def test_fork_bombs_in_parallel_runs_stay_under_the_total_processes() -> None:
    sandbox = Sandbox(SandboxLimits(total_processes=8, wall_seconds=6, cpu_seconds=3), max_parallel=4)
    runs, _, peak = await _watched(sandbox, FORKS, 4, 10**12, 8)
    assert peak <= 8
    assert all(run.ok and run.stdout.endswith("children\n") for run in runs), runs
    await sandbox.close()


async def test_with_cgroup_v2_a_run_over_its_share_is_ended_as_a_whole() -> None:
    """Only where the worker may create cgroups (a delegated cgroup v2): the run's cgroup, not
    one process's rlimit, is what stops a run whose processes together use too much."""
    sandbox = Sandbox(SandboxLimits(total_memory_bytes=512 * MiB, memory_bytes=64 * MiB), max_parallel=4)
    if sandbox.resources().mode != "cgroup":
        pytest.skip(f"no cgroup v2 limits here: {sandbox.resources().why}")
    try:
        run = await sandbox.run(FAN_OUT.format(size=40_000_000))
        assert run.limit == f"memory ({128 * MiB} bytes for the run)"
        after = await sandbox.run("print(6 * 7)")
        assert after.ok and after.stdout == "42\n"  # the slot's cgroup is usable again
    finally:
        await sandbox.close()
