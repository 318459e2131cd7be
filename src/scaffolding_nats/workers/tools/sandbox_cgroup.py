"""cgroup v2 limits for the sandbox: one cgroup for all runs (``memory.max`` = the total,
``pids.max`` = the total processes) and one per run slot below it, so that the sum over the
concurrent runs of every process's memory (tmpfs pages included) and of processes is bounded.

Detection: a ``cgroup2`` mount in ``/proc/self/mountinfo`` and the worker's own cgroup (the
``0::`` line of ``/proc/self/cgroup``) whose directory is writable and offers the ``memory`` and
``pids`` controllers. To give children those controllers, a cgroup v2 (other than the root) must
hold no processes itself: where the worker is the only process of its cgroup it moves into a
leaf ``scaf-worker`` first (a container's usual case); where other processes share it, give the
worker a delegated cgroup (the ``cgroup`` option). Any failure means no cgroup: the caller falls
back to rlimits (see ``sandbox_limits``) and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

_CONTROLLERS = ("memory", "pids")
_PREFIX = "scaf-sandbox-"
JOIN = """import os, sys
try:
    with open(sys.argv[1], "w") as f:
        f.write("0")
except OSError as exc:
    sys.exit(f"sandbox: cannot enter the run's cgroup ({exc.strerror})")
os.execv(sys.argv[2], sys.argv[3:])
"""
"""A few lines run as ``python -I -S -c`` before bwrap: they move the process into the run's
cgroup, then become bwrap, so that every process of the run starts inside it."""
_instances = itertools.count()


class CgroupUnavailable(Exception):
    """Why no cgroup can be used here (the message is logged with the fallback)."""


def own_cgroup_dir(mountinfo: str, proc_cgroup: str) -> Path:
    """The directory of this process's cgroup v2, from ``/proc/self/mountinfo`` and
    ``/proc/self/cgroup``; ``CgroupUnavailable`` where there is none."""
    relative = next((line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")), None)
    if relative is None:
        raise CgroupUnavailable("no cgroup v2 membership in /proc/self/cgroup")
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] != "cgroup2":
            continue
        fields = left.split()
        root, mount_point = fields[3], fields[4]
        relative = relative.strip()
        if relative == root or relative.startswith(root.rstrip("/") + "/"):
            inner = relative[len(root.rstrip("/")) :].lstrip("/")
            return Path(mount_point) / inner
    raise CgroupUnavailable("no cgroup2 file system mounted")


@dataclass(frozen=True)
class CgroupPlan:
    """The limits to write: the whole sandbox's and each run slot's."""

    total_memory: int
    total_pids: int
    run_memory: int
    run_pids: int
    slots: int


class SandboxCgroups:
    """The sandbox's cgroup and its per-slot children; ``create`` sets them up or raises
    ``CgroupUnavailable``."""

    def __init__(self, root: Path, plan: CgroupPlan, moved_to: Path | None) -> None:
        self.root = root
        self.plan = plan
        self.moved_to = moved_to  # the leaf the worker moved itself into, if it did

    @classmethod
    def create(cls, plan: CgroupPlan, base: str | None = None) -> SandboxCgroups:
        """Below ``base`` (a delegated cgroup directory), else below the worker's own cgroup."""
        try:
            if base is None:
                parent = own_cgroup_dir(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())
            else:
                parent = Path(base)
            moved = _enable_controllers(parent, may_move_self=base is None)
            _remove_stale(parent)
        except OSError as exc:
            raise CgroupUnavailable(f"{type(exc).__name__}: {exc}") from exc
        # One per Sandbox (a process may have several): named by the pid, for _remove_stale.
        root = parent / f"{_PREFIX}{os.getpid()}-{next(_instances)}"
        try:
            root.mkdir()
            _limit(root, plan.total_memory, plan.total_pids)
            _write(root / "cgroup.subtree_control", " ".join(f"+{c}" for c in _CONTROLLERS))
            for slot in range(plan.slots):
                run = root / f"run-{slot}"
                run.mkdir()
                _limit(run, plan.run_memory, plan.run_pids)
                with contextlib.suppress(OSError):  # Linux >= 4.19; else an OOM kills one process
                    _write(run / "memory.oom.group", "1")  # an OOM ends the whole run
        except OSError as exc:
            _remove(root)
            raise CgroupUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return cls(root, plan, moved)

    def procs_file(self, slot: int) -> str:
        return str(self.root / f"run-{slot}" / "cgroup.procs")

    def oom_kills(self, slot: int) -> int:
        """How many OOM kills the slot's cgroup has seen (``memory.events``)."""
        try:
            events = (self.root / f"run-{slot}" / "memory.events").read_text().split()
        except OSError:
            return 0
        counts = dict(zip(events[::2], events[1::2], strict=False))
        return int(counts.get("oom_kill", 0))

    async def empty(self, slot: int, wait: float) -> bool:
        """Kill whatever is left in the slot and wait (up to ``wait`` s) until it is empty."""
        run = self.root / f"run-{slot}"
        until = time.monotonic() + wait
        while _populated(run):
            _kill_all(run)
            if time.monotonic() >= until:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        """Remove the cgroups (best effort: a cgroup still holding processes stays)."""
        for slot in range(self.plan.slots):
            await self.empty(slot, 1.0)
        _remove(self.root)


def _enable_controllers(parent: Path, *, may_move_self: bool) -> Path | None:
    available = _read(parent / "cgroup.controllers").split()
    missing = [c for c in _CONTROLLERS if c not in available]
    if missing:
        raise CgroupUnavailable(
            f"cgroup {parent} lacks the {' and '.join(missing)} controller (a cgroup v1 hierarchy holds it?)"
        )
    if not os.access(parent, os.W_OK):
        raise CgroupUnavailable(f"cgroup {parent} is not writable")
    enabled = _read(parent / "cgroup.subtree_control").split()
    if all(c in enabled for c in _CONTROLLERS):
        return None
    request = " ".join(f"+{c}" for c in _CONTROLLERS)
    try:
        _write(parent / "cgroup.subtree_control", request)
        return None
    except OSError as exc:
        if exc.errno != errno.EBUSY or not may_move_self:
            raise
    # EBUSY: the cgroup holds processes. Only ours? Then move into a leaf and try again.
    others = [p for p in _read(parent / "cgroup.procs").split() if int(p) != os.getpid()]
    if others:
        raise CgroupUnavailable(
            f"cgroup {parent} holds other processes ({len(others)}), so it cannot get child cgroups "
            "with the memory and pids controllers; give the worker a delegated cgroup (cgroup option)"
        )
    leaf = parent / "scaf-worker"
    with contextlib.suppress(FileExistsError):
        leaf.mkdir()
    _write(leaf / "cgroup.procs", str(os.getpid()))
    _write(parent / "cgroup.subtree_control", request)
    return leaf


def _limit(cgroup: Path, memory: int, pids: int) -> None:
    _write(cgroup / "memory.max", str(memory))
    _write(cgroup / "pids.max", str(pids))
    if (cgroup / "memory.swap.max").exists():
        _write(cgroup / "memory.swap.max", "0")  # swap would let a run exceed its memory in RAM + swap


def _populated(cgroup: Path) -> bool:
    try:
        return "populated 1" in _read(cgroup / "cgroup.events")
    except OSError:
        return False


def _kill_all(cgroup: Path) -> None:
    try:
        _write(cgroup / "cgroup.kill", "1")  # Linux >= 5.14
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        for pid in _read(cgroup / "cgroup.procs").split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), 9)


def _remove_stale(parent: Path) -> None:
    """Empty sandbox cgroups left by workers that died (named by their pid)."""
    for stale in parent.glob(f"{_PREFIX}*"):
        pid = stale.name[len(_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(stale)


def _remove(root: Path) -> None:
    """rmdir a sandbox cgroup and its slots (best effort: one still holding processes stays)."""
    for child in root.glob("run-*"):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
