"""The sandbox refuses to start where it cannot isolate, and its unprivileged mode (the one the
images use: a non-root worker, bwrap creating a user namespace) holds the same limits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from nats.aio.client import Client

from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.proto import Subjects
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.errors import SandboxUnavailable
from scaffolding_nats.workers.tools.sandbox import Sandbox, SandboxLimits
from scaffolding_nats.workers.tools_worker import ToolsWorker

from ..procs import worker_argv
from .sandboxed import sandboxed_programs

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("bwrap", ["/nonexistent/bwrap", "/bin/false"])
async def test_worker_refuses_to_serve_without_a_working_sandbox(nc: Client, prefix: str, bwrap: str) -> None:
    worker = ToolsWorker(sandbox={"bwrap": bwrap})
    with pytest.raises(SandboxUnavailable) as info:
        async with WorkerHost(nc, worker, tags=["tool_call"], subjects=Subjects(prefix)):
            pytest.fail("served without a sandbox")
    message = info.value.message
    assert bwrap in message and ("will not run code unsandboxed" in message or "cannot start" in message)


async def test_without_the_python_tool_no_sandbox_is_needed(nc: Client, prefix: str) -> None:
    worker = ToolsWorker(python=False, sandbox={"bwrap": "/nonexistent/bwrap"})
    async with WorkerHost(nc, worker, tags=["tool_call"], subjects=Subjects(prefix)):
        assert sorted(worker.tools) == ["calculator"]


async def test_the_service_exits_with_a_clear_error(nats_server: NatsServer, prefix: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *worker_argv(
            nats_server.url, prefix, "tools", tags="tool_call", worker_args={"sandbox": {"bwrap": "/bin/false"}}
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and b"ready" not in out
    assert b"SandboxUnavailable" in err and b"will not run code unsandboxed" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="root mode: unprivileged bwrap adds --disable-userns of its own")
async def test_the_probe_refuses_a_sandbox_whose_programs_could_make_user_namespaces() -> None:
    """As on an architecture the seccomp filter does not know: no filter, and the start-up
    probe (the real path) finds that a program can make a user namespace."""
    from scaffolding_nats.workers.tools.sandbox import _PROBE

    sandbox = Sandbox()
    sandbox._seccomp = None
    if "no-userns" in (await sandbox.run(_PROBE)).stdout:
        pytest.skip("this kernel lets no unprivileged process make a user namespace")
    with pytest.raises(SandboxUnavailable, match="can create a user namespace") as info:
        await sandbox.check()
    assert info.value.details["reason"] == "userns"
    await Sandbox().check()  # with the filter


async def test_a_busy_loop_ends_at_the_cpu_limit() -> None:
    """RLIMIT_CPU: SIGXCPU after 1 s of CPU, however long that takes on a loaded machine."""
    run = await Sandbox(SandboxLimits(cpu_seconds=1, wall_seconds=120)).run("while True:\n    pass")
    assert run.limit == "cpu time (1s)" and not run.ok


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown sandbox settings"):
        Sandbox.from_config({"wall_secs": 3})
    sandbox = Sandbox.from_config({"wall_seconds": 3, "max_parallel": 2})
    assert sandbox.limits == SandboxLimits(wall_seconds=3)


async def test_code_and_stdin_sizes_are_bounded() -> None:
    sandbox = Sandbox(SandboxLimits(max_code_bytes=10, max_stdin_bytes=10))
    with pytest.raises(ValueError, match="code longer"):
        await sandbox.run("print(1)  # " + "x" * 20)
    with pytest.raises(ValueError, match="stdin longer"):
        await sandbox.run("print(1)", "y" * 20)


UNPRIVILEGED_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from scaffolding_nats.workers.tools.sandbox import Sandbox, SandboxLimits

    async def main():
        sandbox = Sandbox(SandboxLimits(wall_seconds=4, cpu_seconds=2), python=sys.executable)
        cpu_bound = Sandbox(SandboxLimits(wall_seconds=120, cpu_seconds=1), python=sys.executable)
        await sandbox.check()
        programs = {
            "uid": "import os; print(os.getuid())",
            "net": "import socket\\ntry:\\n socket.create_connection(('127.0.0.1', 22), timeout=1); print('open')\\n"
                   "except OSError: print('blocked')",
            "write": "try:\\n open('/usr/x', 'w'); print('wrote')\\nexcept OSError: print('refused')",
            "fork": "import os\\nwhile True:\\n try: os.fork()\\n except OSError: pass",
            "cpu": "while True: pass",
        }
        out = {}
        for name, code in programs.items():
            run = await (cpu_bound if name == "cpu" else sandbox).run(code)
            out[name] = [run.stdout.strip(), run.exit_code, run.limit]
        print(json.dumps({"as_root": sandbox.as_root, **out}))

    asyncio.run(main())
    """
)


def _system_python() -> str | None:
    candidate = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    return candidate if os.access(candidate, os.X_OK) else None


def _reachable_by_others(path: Path) -> bool:
    """uid 65534 can read ``path``: every directory on the way is world-searchable."""
    import stat

    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _site_packages() -> Path:
    return Path(next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
@pytest.mark.skipif(
    not (_reachable_by_others(SRC) and _reachable_by_others(_site_packages())),
    reason="the checkout is not readable by uid 65534",
)
@pytest.mark.skipif(_system_python() is None, reason="needs a system python of this version for uid 65534")
def test_unprivileged_worker_mode_uses_a_user_namespace_and_holds_the_limits() -> None:
    """As uid 65534 (like the images' uid 10001), bwrap makes a user namespace itself."""
    site = _site_packages()
    python = _system_python()
    assert python is not None
    proc = subprocess.run(
        [python, "-c", UNPRIVILEGED_SCRIPT],
        capture_output=True,
        timeout=90,
        user=65534,
        group=65534,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{SRC}:{site}"},
        cwd="/",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result["as_root"] is False
    assert result["uid"][0] == "65534"
    assert result["net"][0] == "blocked"
    assert result["write"][0] == "refused"
    assert result["fork"][2] is not None  # a limit ended it
    assert result["cpu"][2] == "cpu time (1s)"


def test_the_tool_agent_python_method_offers_the_workers_definitions() -> None:
    """The method config repeats the tool definitions the model sees; they must match the
    tools worker's, or the model would be told about arguments the worker does not take."""
    from scaffolding_nats.methods.registry import load_registry
    from scaffolding_nats.methods.tool_agent import ToolAgentController

    agent = load_registry().build("tool_agent_python")
    assert isinstance(agent, ToolAgentController)
    offered = {t.name: t.model_dump() for t in agent.tools}
    served = {d.name: d.model_dump() for d in ToolsWorker().definitions()}
    assert offered == served == {n: served[n] for n in ("calculator", "python")}


async def test_a_killed_worker_takes_its_sandboxed_runs_with_it(
    nats_server: NatsServer, nc: Client, prefix: str
) -> None:
    """kill -9 of the worker mid-run: bwrap's --die-with-parent ends the program too."""
    from scaffolding_nats.proto.tasks import ToolCallTask
    from scaffolding_nats.transport import RemoteWorker

    proc = await asyncio.create_subprocess_exec(
        *worker_argv(nats_server.url, prefix, "tools", tags="tool_call"),
        stdout=asyncio.subprocess.PIPE,
    )
    # One attempt: a silent worker fails the task at once (by default the queued task would wait
    # for JetStream to redeliver it to another replica of the tag, and there is none here).
    remote = RemoteWorker(nc, subjects=Subjects(prefix), heartbeat=0.2, max_attempts=1)
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        await remote.start()
        code = "import os, time\nos.fork()\nprint('up', flush=True)\ntime.sleep(600)"
        task = ToolCallTask(tool_name="python", arguments=json.dumps({"code": code}))
        running = asyncio.create_task(remote.run_task(task))
        for _ in range(200):  # up to 10 s for both processes of the run to exist
            if len(await asyncio.to_thread(sandboxed_programs)) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(await asyncio.to_thread(sandboxed_programs)) == 2
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)
        for _ in range(200):
            if not await asyncio.to_thread(sandboxed_programs):
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(sandboxed_programs) == []
        await asyncio.wait_for(running, 10)
        assert not task.ok  # the caller learns the worker died (no heartbeats)
    finally:
        await remote.stop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_runs_are_counted_by_outcome() -> None:
    from scaffolding_nats import metrics

    def count(outcome: str) -> float:
        return metrics.SANDBOX_RUNS.labels(outcome)._value.get()

    before = {o: count(o) for o in ("ok", "exit", "output")}
    sandbox = Sandbox(SandboxLimits(max_output_bytes=100))
    await sandbox.run("print(1)")
    await sandbox.run("raise SystemExit(2)")
    await sandbox.run("print('x' * 1000)")
    assert {o: count(o) - before[o] for o in before} == {"ok": 1, "exit": 1, "output": 1}


async def test_the_sandbox_runs_without_its_own_proc_where_a_container_masks_it() -> None:
    sandbox = Sandbox(mount_proc=False)
    await sandbox.check()
    run = await sandbox.run("import os\nprint(os.path.exists('/proc/self'), 6 * 7)")
    assert run.ok and run.stdout.split() == ["False", "42"]
