"""The sandbox's limits, and what each run gets from the totals.

A per-process limit alone does not bound a run (it may fork), nor a worker (runs go in
parallel): the totals ``total_memory_bytes`` and ``total_processes`` bound every concurrent run
together. Each of the ``max_parallel`` run slots gets an equal share, so one run can never take
memory or processes from another:

- cgroup v2 (``sandbox_cgroup``): the run's cgroup has ``memory.max`` = the share (all its
  processes and its tmpfs pages together) and ``pids.max`` = its processes; the sandbox's cgroup
  has the totals.
- fallback, rlimits only: a process may map ``memory_bytes`` (at most the share less the two
  tmpfs mounts), and the run may have only as many processes as fit in its share at that size,
  so ``processes x RLIMIT_AS + 2 x tmp_bytes`` <= share, and the sum over slots <= the total.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

MIN_ADDRESS_SPACE = 32 * 2**20
"""Below this a Python interpreter cannot start."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of the sandbox. Defaults suit short model-written computations (program-aided
    answers) with four runs at once in 4 GiB."""

    wall_seconds: float = 10.0  # from the program's start (the wait for a slot is queue_seconds)
    cpu_seconds: int = 5
    memory_bytes: int = 256 * 2**20  # address space of each process (RLIMIT_AS)
    max_processes: int = 16  # processes and threads of one run, counting the launcher
    total_memory_bytes: int = 4 * 2**30  # all concurrent runs together (each gets 1/max_parallel)
    total_processes: int = 64  # processes and threads of all concurrent runs together
    queue_seconds: float = 30.0  # longest wait for a free run slot; then SandboxBusy
    max_output_bytes: int = 64 * 2**10  # stdout and stderr each; more kills the run
    max_file_bytes: int = 8 * 2**20  # any one file written (RLIMIT_FSIZE)
    tmp_bytes: int = 16 * 2**20  # size of the private /tmp (and of /dev/shm)
    max_open_files: int = 64
    max_code_bytes: int = 256 * 2**10
    max_stdin_bytes: int = 256 * 2**10

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"sandbox limit {f.name} must be positive, not {getattr(self, f.name)!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SandboxLimits:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown sandbox limits {sorted(unknown)} (known: {sorted(known)})")
        return cls(**values)


Mode = Literal["cgroup", "rlimit"]


@dataclass(frozen=True)
class RunLimits:
    """What one run gets. ``memory`` bounds the run's memory (all processes and tmpfs)."""

    mode: Mode
    address_space: int  # RLIMIT_AS of each process
    processes: int  # RLIMIT_NPROC of the run (and, with cgroups, its pids.max less bwrap's)
    memory: int
    why: str = ""  # why the mode (the reason cgroups are not used, for the fallback)

    def describe(self) -> str:
        mib = 2**20
        processes = f"{self.processes} process" + ("es" if self.processes != 1 else "")
        text = (
            f"{self.mode} limits per run: {self.memory // mib} MiB, {processes} "
            f"of at most {self.address_space // mib} MiB address space each"
        )
        return f"{text} ({self.why})" if self.why else text


def run_limits(limits: SandboxLimits, slots: int, mode: Mode, why: str = "") -> RunLimits:
    """One slot's share of the totals; ``ValueError`` where the totals leave a run too little."""
    share = limits.total_memory_bytes // slots
    processes = min(limits.max_processes, limits.total_processes // slots)
    if processes < 1:
        raise ValueError(f"total_processes ({limits.total_processes}) is below max_parallel ({slots})")
    if mode == "cgroup":
        space = min(limits.memory_bytes, share)
        if space < MIN_ADDRESS_SPACE:
            raise ValueError(_too_little(limits, slots, share))
        return RunLimits(mode, space, processes, share, why)
    room = share - 2 * limits.tmp_bytes
    if room < MIN_ADDRESS_SPACE:
        raise ValueError(_too_little(limits, slots, room))
    space = min(limits.memory_bytes, room)
    processes = max(1, min(processes, room // space))
    return RunLimits(mode, space, processes, processes * space + 2 * limits.tmp_bytes, why)


def _too_little(limits: SandboxLimits, slots: int, room: int) -> str:
    return (
        f"total_memory_bytes ({limits.total_memory_bytes}) over max_parallel ({slots}) leaves a run "
        f"{room} bytes besides its tmpfs mounts; a Python process needs {MIN_ADDRESS_SPACE}"
    )
