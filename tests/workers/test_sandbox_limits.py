"""The arithmetic behind the sandbox's limits over all runs, the fair slot queue, and cgroup v2
detection: pure logic. The limits themselves are tested on real runs in
``test_sandbox_totals.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scaffolding_nats.workers.tools.fair_slots import FairSlots
from scaffolding_nats.workers.tools.sandbox import Sandbox
from scaffolding_nats.workers.tools.sandbox_cgroup import CgroupUnavailable, own_cgroup_dir
from scaffolding_nats.workers.tools.sandbox_limits import MIN_ADDRESS_SPACE, SandboxLimits, run_limits
from scaffolding_nats.workers.tools.sandbox_seccomp import no_userns_filter

MiB = 2**20


@pytest.mark.parametrize("slots", [1, 3, 4, 7])
@pytest.mark.parametrize("memory", [32 * MiB, 100 * MiB, 256 * MiB, 2048 * MiB])
def test_the_fallback_bounds_the_sum_over_all_slots(slots: int, memory: int) -> None:
    limits = SandboxLimits(memory_bytes=memory, total_memory_bytes=1024 * MiB, total_processes=40)
    run = run_limits(limits, slots, "rlimit")
    assert run.memory == run.processes * run.address_space + 2 * limits.tmp_bytes
    assert slots * run.memory <= limits.total_memory_bytes
    assert slots * run.processes <= limits.total_processes
    assert MIN_ADDRESS_SPACE <= run.address_space <= memory and 1 <= run.processes <= limits.max_processes


def test_with_cgroups_each_slot_gets_its_share() -> None:
    limits = SandboxLimits(memory_bytes=512 * MiB, total_memory_bytes=1024 * MiB, total_processes=40)
    run = run_limits(limits, 4, "cgroup")
    assert (run.memory, run.processes, run.address_space) == (256 * MiB, 10, 256 * MiB)


def test_defaults_give_each_run_a_few_processes_even_without_cgroups() -> None:
    run = run_limits(SandboxLimits(), 4, "rlimit")
    assert run.processes == 3 and run.address_space == 256 * MiB and 4 * run.memory <= 4 * 2**30


def test_totals_too_small_for_the_runs_are_refused() -> None:
    with pytest.raises(ValueError, match="total_memory_bytes"):
        Sandbox(SandboxLimits(total_memory_bytes=100 * MiB), max_parallel=4)
    with pytest.raises(ValueError, match="total_processes"):
        Sandbox(SandboxLimits(total_processes=3), max_parallel=4)
    with pytest.raises(ValueError, match="must be positive"):
        SandboxLimits(queue_seconds=0)
    with pytest.raises(ValueError, match="cgroup"):
        Sandbox(cgroup="relative/path")


MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
HYBRID = """\
35 30 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
36 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""


def test_the_workers_cgroup_is_found_from_proc() -> None:
    found = own_cgroup_dir(MOUNTINFO, "0::/system.slice/worker.service\n")
    assert found == Path("/sys/fs/cgroup/system.slice/worker.service")
    assert str(own_cgroup_dir(HYBRID, "4:memory:/x\n0::/\n")) == "/sys/fs/cgroup/unified"
    with pytest.raises(CgroupUnavailable, match="no cgroup v2"):
        own_cgroup_dir(MOUNTINFO, "4:memory:/x\n")
    with pytest.raises(CgroupUnavailable, match="no cgroup2"):
        own_cgroup_dir("22 1 0:21 / /proc rw - proc proc rw\n", "0::/\n")


def test_the_seccomp_filter_is_known_for_the_usual_machines() -> None:
    for machine in ("x86_64", "aarch64"):
        program = no_userns_filter(machine)
        assert program is not None and len(program) % 8 == 0 and len(program) // 8 < 32
    assert no_userns_filter("riscv64") is None


# -- fair slots ---------------------------------------------------------------------------


async def _holders(slots: FairSlots, job: str, n: int) -> list[int]:
    return [await slots.acquire(job) for _ in range(n)]


async def test_a_freed_slot_goes_to_the_job_holding_fewest() -> None:
    slots = FairSlots(4)
    held = await _holders(slots, "a", 4)
    waiting_a = [asyncio.ensure_future(slots.acquire("a")) for _ in range(8)]
    await asyncio.sleep(0)
    b = asyncio.ensure_future(slots.acquire("b"))
    await asyncio.sleep(0)
    slots.release("a", held.pop())
    await asyncio.sleep(0)
    assert b.done() and not any(w.done() for w in waiting_a)  # b came last but holds nothing
    for w in waiting_a:
        w.cancel()
    await asyncio.gather(*waiting_a, return_exceptions=True)


async def test_jobs_that_wait_take_turns() -> None:
    slots = FairSlots(1)
    first = await slots.acquire("a")
    order: list[str] = []

    async def one(job: str) -> None:
        number = await slots.acquire(job)
        order.append(job)
        await asyncio.sleep(0)
        slots.release(job, number)

    calls = [asyncio.ensure_future(one(j)) for j in ["a", "a", "a", "b", "b", "c"]]
    await asyncio.sleep(0)
    slots.release("a", first)
    await asyncio.gather(*calls)
    assert order == ["b", "c", "a", "b", "a", "a"]  # round-robin while several wait


async def test_a_cancelled_wait_gives_up_its_place_and_any_slot_it_got() -> None:
    slots = FairSlots(1)
    first = await slots.acquire("a")
    late = asyncio.ensure_future(slots.acquire("b"))
    await asyncio.sleep(0)
    slots.release("a", first)  # granted to b ...
    late.cancel()  # ... which was cancelled before it resumed: the slot must come back
    with pytest.raises(asyncio.CancelledError):
        await late
    assert await asyncio.wait_for(slots.acquire("c"), 1) == 0
    assert slots.waiting() == 0 and slots.held("b") == 0


def _delegated_tree(path: Path) -> None:
    (path / "cgroup.controllers").write_text("cpu memory pids\n")
    (path / "cgroup.subtree_control").write_text("")


def _written(path: Path) -> dict[str, str]:
    """Every limit file below ``path`` and what it holds."""
    return {str(f.relative_to(path)).split("/", 1)[-1]: f.read_text() for f in sorted(path.glob("scaf-*/**/*.max"))}


async def test_cgroup_setup_writes_the_totals_and_each_run_enters_its_slot(tmp_path: Path) -> None:
    """On a directory laid out like a delegated cgroup v2 (plain files: the kernel's side is
    only tested where a real one is writable, in test_sandbox_totals.py): what is written where,
    and that a run really passes through the step that enters its slot's cgroup."""
    _delegated_tree(tmp_path)
    limits = SandboxLimits(total_memory_bytes=1024 * MiB, total_processes=40)
    sandbox = Sandbox(limits, max_parallel=2, cgroup=str(tmp_path))
    per_run = sandbox.resources()
    assert (per_run.mode, per_run.memory, per_run.processes) == ("cgroup", 512 * MiB, 16)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert _written(tmp_path) == {
        "memory.max": str(1024 * MiB),
        "pids.max": str(40 + 2 * 2),  # bwrap's two processes per slot
        "run-0/memory.max": str(512 * MiB),
        "run-0/pids.max": str(16 + 2),
        "run-1/memory.max": str(512 * MiB),
        "run-1/pids.max": str(16 + 2),
    }
    run = await sandbox.run("print(6 * 7)")
    assert run.ok and run.stdout == "42\n", run
    assert _written_procs(tmp_path) == ["0"]  # written by the run itself, before it became bwrap
    await sandbox.close()


def _written_procs(path: Path) -> list[str]:
    return [f.read_text() for f in path.glob("scaf-*/run-0/cgroup.procs")]


def test_a_cgroup_that_cannot_be_used_is_refused_when_asked_for(tmp_path: Path) -> None:
    from scaffolding_nats.workers.errors import SandboxUnavailable

    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    with pytest.raises(SandboxUnavailable, match="lacks the memory and pids controller"):
        Sandbox(cgroup=str(tmp_path)).resources()
    assert Sandbox(cgroup="off").resources().mode == "rlimit"
