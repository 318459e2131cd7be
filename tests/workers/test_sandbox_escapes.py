"""Escape attempts against the ``python`` tool, through the real path: a tools worker service
process (``python -m scaffolding_nats.services.worker --worker tools``) on a real nats-server,
tool calls sent as ``ToolCallTask`` by a ``RemoteWorker``. The worker holds a secret in its
environment and a secret file it can read. After every attempt the same worker process must
still answer a normal call, and no process of the attempt may be left running.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.proto import Subjects
from scaffolding_nats.proto.tasks import TaskStatus, ToolCallTask
from scaffolding_nats.transport import RemoteWorker
from scaffolding_nats.workers.tools.sandbox import find_bwrap

from ..procs import worker_argv
from .sandboxed import sandboxed_programs

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
LIMITS = {"wall_seconds": 4.0, "cpu_seconds": 2, "memory_bytes": 256 * 2**20, "max_output_bytes": 32768}


@dataclass
class ToolsService:
    proc: subprocess.Popen[bytes]
    remote: RemoteWorker
    secret: str
    secret_file: Path
    nats_port: int

    async def python(self, code: str, **args: str) -> ToolCallTask:
        task = ToolCallTask(tool_name="python", arguments=json.dumps({"code": code, **args}))
        await asyncio.wait_for(self.remote.run_task(task), 30)
        assert task.status is TaskStatus.SUCCESS, task.error
        return task


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ToolsService]:
    secret = "s3cret-" + secrets.token_hex(8)
    secret_file = tmp_path_factory.mktemp("secrets") / "token"
    secret_file.write_text(secret)
    secret_file.chmod(0o644)  # readable by anyone on the host: only the sandbox's view hides it
    prefix = "sbx" + secrets.token_hex(4)
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, stopped in the finally below
        worker_argv(nats_server.url, prefix, "tools", tags="tool_call", worker_args={"sandbox": LIMITS}),
        stdout=subprocess.PIPE,
        env={**os.environ, "SCAF_LOG_LEVEL": "WARNING", "WORKER_SECRET": secret, "SECRET_FILE": str(secret_file)},
    )
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=0)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == b"ready"
        remote = RemoteWorker(nc, subjects=Subjects(prefix), heartbeat=0.5)
        await remote.start()
        yield ToolsService(proc, remote, secret, secret_file, int(nats_server.url.rsplit(":", 1)[1]))
        await remote.stop()
    finally:
        await nc.close()
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


@pytest_asyncio.fixture(loop_scope="module")
async def contained(service: ToolsService) -> AsyncIterator[ToolsService]:
    """After the attempt: the worker process is alive and serving, nothing of the run is left."""
    pid = service.proc.pid
    yield service
    deadline = time.monotonic() + 10
    while sandboxed_programs() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls /proc
        await asyncio.sleep(0.05)
    assert sandboxed_programs() == []
    assert service.proc.poll() is None and service.proc.pid == pid
    after = await service.python("print(6 * 7)")
    assert after.result == "42" and not after.is_error


async def test_a_normal_program_returns_its_stdout(contained: ToolsService) -> None:
    task = await contained.python("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", stdin="1 2 3")
    assert task.result == "6" and task.stdout == "6\n" and task.exit_code == 0 and not task.is_error
    failed = await contained.python("raise SystemExit(3)")
    assert failed.is_error and failed.exit_code == 3
    crashed = await contained.python("1 / 0")
    assert crashed.is_error and crashed.exit_code == 1 and "ZeroDivisionError" in (crashed.stderr or "")


async def test_network_is_unreachable(contained: ToolsService) -> None:
    code = f"""
import socket
for host, port in [("127.0.0.1", {contained.nats_port}), ("10.0.0.1", 80), ("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=1).close()
        print("connected", host)
    except OSError as exc:
        print("blocked", host, type(exc).__name__)
try:
    socket.getaddrinfo("example.com", 80)
    print("resolved")
except OSError:
    print("no dns")
print(sorted(n for _, n in socket.if_nameindex()))
"""
    task = await contained.python(code)
    assert "connected" not in task.stdout and "resolved" not in task.stdout, task.stdout
    assert task.stdout.count("blocked") == 3 and "no dns" in task.stdout
    assert task.stdout.strip().endswith("['lo']")  # a network namespace of its own


async def test_writes_outside_tmp_fail_and_tmp_is_private(contained: ToolsService, tmp_path: Path) -> None:
    target = tmp_path / "escaped"
    code = f"""
import os
paths = ["/escaped", "/usr/escaped", "/etc/escaped", "/dev/escaped", "/sandbox/main.py", "{target}",
         "/proc/sys/kernel/hostname"]
for path in paths:
    try:
        with open(path, "w") as f:
            f.write("x")
        print("wrote", path)
    except OSError as exc:
        print("refused", path, exc.errno)
try:  # /tmp and /dev/shm are bounded tmpfs mounts
    for i in range(100):
        with open(f"/dev/shm/fill{{i}}", "wb") as f:
            f.write(b"x" * 2**20)
    print("filled")
except OSError as exc:
    print("full", exc.errno)
open("/tmp/mine", "w").write("ok")
print(sorted(os.listdir("/tmp")))
"""
    task = await contained.python(code)
    assert "wrote" not in task.stdout, task.stdout
    assert task.stdout.count("refused") == 7 and "full 28" in task.stdout  # ENOSPC
    assert task.stdout.strip().endswith("['mine']")  # nothing of the host's /tmp
    assert not target.exists()
    again = await contained.python("import os; print(os.listdir('/tmp'))")
    assert again.result == "[]"  # every run starts with an empty /tmp


async def test_the_worker_secrets_are_invisible(contained: ToolsService) -> None:
    code = f"""
import os
print(dict(os.environ))
for path in ["{contained.secret_file}", "/proc/1/environ", "/proc/self/environ"]:
    try:
        print(path, open(path, "rb").read())
    except OSError as exc:
        print(path, "unreadable", exc.errno)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        print(pid, open(f"/proc/{{pid}}/cmdline", "rb").read())
print(os.getuid(), os.listdir("/"))
"""
    task = await contained.python(code)
    seen = task.stdout + (task.stderr or "")
    assert contained.secret not in seen
    assert "WORKER_SECRET" not in seen and "SCAF_" not in seen and "NATS" not in seen
    assert f"{contained.secret_file} unreadable 2" in task.stdout  # no such file in the sandbox
    assert "services.worker" not in seen  # the worker process is not even listed
    uid_line = task.stdout.strip().splitlines()[-1]
    assert not uid_line.startswith("0 ")  # never root inside


async def test_fork_bomb_is_capped(contained: ToolsService) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    task = await contained.python(code)
    assert task.is_error and "limit exceeded" in (task.stderr or "")
    assert time.monotonic() - started < LIMITS["wall_seconds"] + 20  # bounded, even on a loaded machine


async def test_memory_bomb_fails_inside_the_sandbox(contained: ToolsService) -> None:
    task = await contained.python("x = bytearray(2 * 2**30)")
    assert task.is_error and "MemoryError" in (task.stderr or "")
    task = await contained.python("chunks = []\nwhile True:\n    chunks.append(bytearray(2**20))")
    assert task.is_error and "MemoryError" in (task.stderr or "")


async def test_endless_loops_hit_the_cpu_and_wall_limits(contained: ToolsService) -> None:
    busy = await contained.python("while True:\n    pass")
    # CPU time (2 s) ends it on an idle machine, wall time (4 s) on a loaded one; see
    # test_sandbox.py for the CPU limit on its own.
    assert busy.is_error and ("cpu time" in (busy.stderr or "") or "wall time" in (busy.stderr or ""))
    idle = await contained.python("import time\nprint('start', flush=True)\ntime.sleep(600)")
    assert idle.is_error and "wall time" in (idle.stderr or "") and idle.result == "start"


async def test_huge_output_is_cut_and_stops_the_run(contained: ToolsService) -> None:
    task = await contained.python("while True:\n    print('x' * 1000)")
    assert task.is_error and "output" in (task.stderr or "")
    assert len(task.stdout) <= LIMITS["max_output_bytes"]
    task = await contained.python("import sys\nsys.stderr.write('e' * 10**7)")
    assert task.is_error and len(task.stderr or "") < LIMITS["max_output_bytes"] + 200


async def test_signals_cannot_reach_the_worker(contained: ToolsService) -> None:
    worker_pid = contained.proc.pid
    code = f"""
import os, signal
print("ppid", os.getppid())
for target in [os.getppid(), {worker_pid}, -1, 1]:
    try:
        os.kill(target, signal.SIGKILL)
        print("sent", target)
    except OSError as exc:
        print("refused", target, type(exc).__name__)
"""
    task = await contained.python(code)
    assert f"sent {worker_pid}" not in task.stdout
    assert contained.proc.poll() is None


async def test_calls_run_concurrently_and_independently(contained: ToolsService) -> None:
    """A bomb next to normal calls: the normal ones still answer correctly."""
    bomb = asyncio.create_task(contained.python("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"))
    normal = await asyncio.gather(*(contained.python(f"print({i} * {i})") for i in range(3)))
    assert [t.result for t in normal] == ["0", "1", "4"]
    assert (await bomb).is_error


async def test_no_user_namespace_can_be_made(contained: ToolsService) -> None:
    """Not in either mode (this service runs in the mode of the test's user: root mode as
    root): a user namespace would give the program every capability inside it."""
    code = """
import ctypes, os, shutil, struct, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
uid = os.getuid()
r = libc.unshare(CLONE_NEWUSER)
print("unshare", "made" if r == 0 else "refused")
nr = {"x86_64": 56, "aarch64": 220}[os.uname().machine]
r = libc.syscall(nr, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
if r == 0:
    os._exit(0)  # the child of a clone that worked
print("clone", "made" if r > 0 else "refused")
args = ctypes.create_string_buffer(struct.pack("=8Q", CLONE_NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0), 64)
r = libc.syscall(435, args, 64)
if r == 0:
    os._exit(0)
print("clone3", "made" if r > 0 else "refused", os.strerror(ctypes.get_errno()))
if hasattr(os, "unshare"):
    try:
        os.unshare(os.CLONE_NEWUSER)
        print("os.unshare made")
    except OSError:
        print("os.unshare refused")
if shutil.which("unshare"):
    done = subprocess.run(["unshare", "--user", "true"], capture_output=True)
    print("unshare(1)", "made" if done.returncode == 0 else "refused")
t = threading.Thread(target=print, args=("thread ok",))
t.start()
t.join()
print("uid kept", os.getuid() == uid)
"""
    task = await contained.python(code)
    out = task.stdout
    assert "made" not in out and out.count("refused") >= 3, (out, task.stderr)
    assert "clone3 refused" in out and "thread ok" in out and "uid kept True" in out, out


async def test_no_host_path_shows_inside(contained: ToolsService) -> None:
    """Command lines (bwrap's is pid 1's) and mounts show no path of the host's checkout,
    venv or bwrap; the interpreter's own directory is the one host path a program sees."""
    code = """
import os
print(repr(open("/proc/1/cmdline", "rb").read()))
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    print(pid, open(f"/proc/{pid}/cmdline", "rb").read())
print(open("/proc/self/mountinfo").read())
print(sorted(os.listdir("/proc/self/fd")))
"""
    task = await contained.python(code)
    first = task.stdout.splitlines()[0]
    args = ast.literal_eval(first).split(b"\0")
    assert args[0] == b"bwrap" and all(a.startswith(b"/sandbox/") for a in args if a.startswith(b"/")), args
    bwrap = find_bwrap()
    assert bwrap is not None
    for host_path in [str(REPO), sys.prefix, bwrap, str(contained.secret_file.parent)]:
        assert host_path and host_path not in task.stdout, host_path
    assert task.stdout.strip().endswith("['0', '1', '2', '3']")  # stdio and listdir's own
