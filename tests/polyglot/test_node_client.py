"""The contract from another language: the Node.js examples in proto/examples talk to the Python
services through nothing but NATS and MessagePack, against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import msgpack
import nats
import pytest

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import NatsServer, free_port
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import (
    ErrorCode,
    GenerationTask,
    Job,
    JobEventType,
    JobState,
    Subjects,
    TaskStatus,
)
from scaffolding_nats.proto.codec import peek_id
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import RemoteWorker, WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

from ..core.proxy import CuttableProxy

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the Node.js examples cannot run")


@pytest.fixture(scope="session")
def node_examples() -> Path:
    """proto/examples with its npm packages, installed from the lock file only when missing."""
    needed = [EXAMPLES / "node_modules" / "nats", EXAMPLES / "node_modules" / "@msgpack" / "msgpack"]
    if not all(p.is_dir() for p in needed):
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot install the Node.js examples' packages")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLES, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"npm ci failed in {EXAMPLES}:\n{done.stdout}\n{done.stderr}"
    return EXAMPLES


@pytest.fixture
def subjects(prefix: str) -> Subjects:
    return Subjects(prefix)


async def run_node(
    script: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, list[dict], str]:
    """Run a Node script to its end (bounded): exit status, stdout JSON lines, stderr."""
    proc = await asyncio.create_subprocess_exec(
        NODE, str(script), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{script.name} {' '.join(args)} did not exit within {timeout}s") from None
    assert proc.returncode is not None
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return proc.returncode, lines, err.decode()


def publish_job(
    examples: Path,
    url: str,
    prefix: str,
    method: str,
    prompt: str,
    params: dict | None = None,
    *extra: str,
    timeout: float = 60,
    env: dict[str, str] | None = None,
):
    return run_node(
        examples / "publish_job.mjs",
        url,
        prefix,
        method,
        prompt,
        json.dumps(params or {}),
        *extra,
        timeout=timeout,
        env=env,
    )


def assert_well_ordered(events: list[dict]) -> None:
    """The contract's event order: seq from 0 without gaps, accepted first, one terminal last."""
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "accepted"
    assert events[-1]["type"] in ("result", "error")
    assert all(e["type"] in ("partial", "progress") for e in events[1:-1])
    assert all(e["v"] == 1 and e["job_id"] == events[0]["job_id"] for e in events)


# -- the Node client against the Python controller and worker ---------------------------------


async def test_node_client_publishes_a_job_and_prints_its_events(node_examples, nats_server, nc, subjects):
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        rc, events, err = await publish_job(
            node_examples, nats_server.url, subjects.prefix, "majority_vote", "one two 7", {"sample_num": 3}
        )
        assert rc == 0, err
        assert_well_ordered(events)
        assert [e["type"] for e in events] == ["accepted", "progress", "result"]
        assert events[0]["progress"]["method"] == "majority_vote"
        result = events[-1]["result"]
        assert result["text"] == "7 two one" and result["answer"] == "7" and result["num_tasks"] == 3
        # The job went through JetStream: the controller kept its record in the results bucket.
        record = await JobClient(nc, subjects=subjects).record(events[0]["job_id"])
        assert record is not None and record.state is JobState.SUCCEEDED and record.result is not None
        assert record.result.text == "7 two one"


async def test_node_client_job_id_deduplicates_a_repeated_publish(node_examples, nats_server, nc, subjects):
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        args = (node_examples, nats_server.url, subjects.prefix, "native", "a b", {})
        rc, events, err = await publish_job(*args, "--id", "dedup-job-1")
        assert rc == 0 and events[-1]["result"]["text"] == "b a", err
        # Same Nats-Msg-Id within the duplicate window: stored once, so it never runs again.
        rc, events, err = await publish_job(*args, "--id", "dedup-job-1", "--timeout", "1.5")
        assert rc == 2 and events == [], err
        assert "duplicate" in err


async def test_node_client_owner_scopes_its_job_id(node_examples, nats_server, nc, subjects):
    """PROTOCOL.md 4.6 from Node: as owner alice, the id another owner used first is still hers."""
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        squat = await JobClient(nc, subjects=subjects, owner="mallory").run(
            Job(id="shared-id", method="native", prompt="m n"), timeout=20
        )
        assert squat.text == "n m"
        args = (node_examples, nats_server.url, subjects.prefix, "native", "a b", {})
        rc, events, err = await publish_job(*args, "--id", "shared-id", "--owner", "alice")
        assert rc == 0 and events[-1]["result"]["text"] == "b a", err
        record = await JobClient(nc, subjects=subjects, owner="alice").record("shared-id")
        assert record is not None and record.owner == "alice" and record.result is not None
        assert record.result.text == "b a"


async def test_node_client_prints_streamed_partial_text(node_examples, nats_server, nc, subjects):
    words = " ".join(f"w{i}" for i in range(12))
    async with (
        WorkerHost(nc, SyntheticWorker(token_latency_s=0.02), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        rc, events, err = await publish_job(
            node_examples, nats_server.url, subjects.prefix, "stream", words, {"streaming_step": 2}
        )
    assert rc == 0, err
    assert_well_ordered(events)
    partials = [e["text"] for e in events if e["type"] == "partial"]
    assert len(partials) >= 2  # it really streamed
    assert "".join(partials) == events[-1]["result"]["text"] == " ".join(reversed(words.split()))


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [("teleport", {}, "unknown_method"), ("native", {"temperature": -1}, "invalid")],
)
async def test_node_client_exits_non_zero_on_an_error_event(
    node_examples, nats_server, nc, subjects, method, params, code
):
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        rc, events, err = await publish_job(node_examples, nats_server.url, subjects.prefix, method, "x", params)
    assert rc == 1, err
    # A job the controller cannot run fails before it is accepted: one error event, seq 0.
    assert [(e["type"], e["seq"]) for e in events] == [("error", 0)]
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == code
    assert code in err


async def test_node_client_gives_up_at_its_deadline(node_examples, nats_server, nc, subjects):
    async with ControllerService(nc, load_registry(), subjects=subjects):
        pass  # leaves the durable jobs stream behind, with no controller consuming it
    rc, events, err = await publish_job(
        node_examples, nats_server.url, subjects.prefix, "native", "x", {}, "--timeout", "1"
    )
    assert rc == 2 and events == [] and "timeout" in err


async def test_node_client_without_a_jobs_stream_fails_fast(node_examples, nats_server, subjects):
    rc, events, err = await publish_job(node_examples, nats_server.url, subjects.prefix, "native", "x", timeout=30)
    assert rc == 4 and events == [] and "not stored" in err


async def test_node_client_rejects_bad_arguments(node_examples):
    rc, _, err = await run_node(node_examples / "publish_job.mjs", "nats://127.0.0.1:1", "scaf", "native", "x", "[1]")
    assert rc == 3 and "JSON object" in err


async def add_identity(server: NatsServer, argv: list[str]) -> None:
    """`security add-identity ARGV` against ``server`` (with monitoring on loopback), returning
    once the server has reloaded its config: nats.js cannot be told to wait for that."""
    from scaffolding_nats.security.__main__ import main as security

    def load_time() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/varz", timeout=5) as resp:
            return str(json.loads(resp.read())["config_load_time"])

    before = await asyncio.to_thread(load_time)
    assert server.secrets_file is not None and server.auth_file is not None and server.pid_file is not None
    assert security(["add-identity", *argv, "--env-file", str(server.secrets_file), "--auth-file",
                     str(server.auth_file), "--reload", str(server.pid_file)]) == 0  # fmt: skip
    for _ in range(200):  # 10 s at most
        if await asyncio.to_thread(load_time) != before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("nats-server did not reload its config")


def identity_server(tmp_path: Path, subjects: Subjects) -> NatsServer:
    from scaffolding_nats.security import Deployment

    secrets = tmp_path / "secrets"
    return NatsServer(deployment=Deployment(subjects=subjects), secrets_file=secrets / "nats.env",
                      auth_file=secrets / "nats-auth.conf", pid_file=tmp_path / "nats.pid",
                      http_port=free_port())  # fmt: skip


# -- an identity added by the operator, logging in with its nkey -------------------------------


async def test_node_client_logs_in_with_an_nkey_identity_added_to_the_running_server(node_examples, tmp_path, subjects):
    """PROTOCOL.md 10.1: `add-identity --nkey` hands over <user>.env and <user>.nk; the example
    logs in with either, as its owner only, to the server that was running before it was added."""
    from scaffolding_nats.security.secrets_file import read_env_file

    secrets, out = tmp_path / "secrets", tmp_path / "identities"
    with identity_server(tmp_path, subjects) as server:
        nc = await server.connect("admin")
        try:
            async with (
                WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
                ControllerService(nc, load_registry(), subjects=subjects),
            ):
                await add_identity(server, ["client", "alice", "--nkey", "--prefix", subjects.prefix,
                                            "--out", str(out), "--url", server.bare_url])  # fmt: skip
                handed = read_env_file(out / "client-alice.env")
                # nats.js reads our seed as the same key pair: the public key the server holds.
                script = tmp_path / "public_key.cjs"
                script.write_text(
                    "const { nkeys } = require('nats');\n"
                    "console.log(nkeys.fromSeed(Buffer.from(process.env.SEED)).getPublicKey());\n"
                )
                proc = await asyncio.create_subprocess_exec(
                    NODE, str(script), cwd=node_examples, stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "NODE_PATH": str(node_examples / "node_modules"),
                         "SEED": handed["SCAF_NATS_NKEY_SEED"]},
                )  # fmt: skip
                public, _ = await asyncio.wait_for(proc.communicate(), 30)
                assert public.decode().strip() == read_env_file(secrets / "nats.env")["SCAF_NATS_NKEY_CLIENT_ALICE"]
                seed_file = {"SCAF_NATS_USER": "client-alice",
                             "SCAF_NATS_NKEY_SEED_FILE": str(out / "client-alice.nk")}  # fmt: skip
                for env in (handed, seed_file):
                    rc, events, err = await publish_job(
                        node_examples, handed["SCAF_NATS_URL"], subjects.prefix, "native", "a b", {},
                        "--owner", "alice", env=env,
                    )  # fmt: skip
                    assert rc == 0 and events[-1]["result"]["text"] == "b a", err
                # Another owner's name is refused by the server: the job is never stored.
                rc, events, err = await publish_job(
                    node_examples, server.bare_url, subjects.prefix, "native", "a b", {},
                    "--owner", "bob", "--timeout", "5", env=handed,
                )  # fmt: skip
                assert rc == 4 and events == [] and "not stored" in err, err
        finally:
            await nc.close()


# -- the Node worker serving the Python controller --------------------------------------------


@contextlib.asynccontextmanager
async def node_worker(examples: Path, url: str, prefix: str, *extra: str, env: dict[str, str] | None = None):
    proc = await asyncio.create_subprocess_exec(
        NODE, str(examples / "worker.mjs"), url, prefix, "generation", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"ready", (line, await proc.stderr.read())
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_node_worker_serves_the_python_controller(node_examples, nats_server, nc, subjects):
    client = JobClient(nc, subjects=subjects)
    async with (
        node_worker(node_examples, nats_server.url, subjects.prefix, "--latency", "0.01"),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        result = await client.run(Job(method="majority_vote", prompt="one two 7", params={"sample_num": 3}), timeout=20)
        assert result.text == "7 two one" and result.answer == "7" and result.num_tasks == 3
        job = Job(method="stream", prompt="a b c d e f", params={"streaming_step": 2})
        events = [e async for e in client.events(job, timeout=20)]
        partials = [e.text for e in events if e.type is JobEventType.PARTIAL]
        assert len(partials) >= 2 and "".join(partials) == events[-1].result.text == "f e d c b a"
        # A task kind the Node worker does not handle comes back as a typed failure.
        with pytest.raises(Exception) as info:
            await client.run(Job(method="chat", prompt="hi"), timeout=20)
        assert getattr(info.value, "code", None) is ErrorCode.NOT_SUPPORTED, info.value


async def test_node_worker_heartbeats_keep_a_long_task_alive(node_examples, nats_server, nc, subjects):
    # 8 words at 0.25 s each take 2 s, far past the caller's idle timeout of 3 * 0.2 + 0.5 s.
    remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.2, timeout=20)
    await remote.start()
    try:
        async with node_worker(node_examples, nats_server.url, subjects.prefix, "--latency", "0.25"):
            task = GenerationTask(input_str="1 2 3 4 5 6 7 8")
            assert await remote.run_task(task) is TaskStatus.SUCCESS, task.error
            assert task.output_str == "8 7 6 5 4 3 2 1" and task.usage and task.usage.completion_tokens == 8
    finally:
        await remote.stop()


async def test_a_final_frame_lost_from_a_node_worker_reruns_the_task_at_once(node_examples, nats_server, nc, subjects):
    """The Node worker keeps no final frames (``transport.finals`` is a Python optimisation):
    when its final frame is lost while the caller is cut off, the caller's lookup gets "no
    responders" and queues the task again at once, not after ``final_wait``."""
    frames = await nc.subscribe("_INBOX.>")  # the caller's frames (it logs in as admin, too)
    async with CuttableProxy(nats_server.port) as proxy:
        url = nats_server.url.replace(f":{nats_server.port}", f":{proxy.port}")
        caller_nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        remote = RemoteWorker(caller_nc, subjects=subjects, heartbeat=0.2, timeout=30, final_wait=20)
        await remote.start()
        try:
            async with node_worker(node_examples, nats_server.url, subjects.prefix, "--latency", "0.25"):
                task = GenerationTask(input_str="1 2")  # 0.5 s
                running = asyncio.create_task(remote.run_task(task))
                async with asyncio.timeout(10):
                    while peek_id((await frames.next_msg(timeout=10)).data, "task_id") != task.id:
                        pass  # until the worker's "started" heartbeat (PubAcks and the like are JSON)
                proxy.cut(1.5)  # the task ends meanwhile; its final frame has nowhere to go
                cut = time.monotonic()
                assert await asyncio.wait_for(running, 15) is TaskStatus.SUCCESS, task.error
                assert task.output_str == "2 1"
                assert time.monotonic() - cut < 10, "waited for final_wait: the lookup's no-responders was missed"
        finally:
            await remote.stop()
            await caller_nc.close()


async def test_node_worker_answers_bad_requests_with_typed_errors(node_examples, nats_server, nc, subjects):
    async with node_worker(node_examples, nats_server.url, subjects.prefix):
        cases = [
            (b"\xc1", "malformed", "400"),
            (
                msgpack.packb({"v": 9, "kind": "generation", "task": {"id": "t1"}}),
                "unsupported_version",
                "400",
            ),
            (msgpack.packb({"v": 1, "kind": "teleport", "task": {"id": "t2"}}), "unknown_task_type", "400"),
            (msgpack.packb({"v": 1, "kind": "reward", "task": {"id": "t3"}}), "not_supported", None),
        ]
        for payload, code, http in cases:
            msg = await nc.request(subjects.tasks("generation"), payload, timeout=5)
            reply = msgpack.unpackb(msg.data)
            assert reply["frame"] == "final" and reply["error"]["code"] == code, reply
            if http is not None:
                assert msg.headers and msg.headers["Nats-Service-Error-Code"] == http


async def test_node_worker_serves_as_a_worker_kind_added_to_the_running_server(node_examples, tmp_path, subjects):
    """A worker in another language gets its own worker-<kind> user (an nkey here): it pulls its
    tag's queued tasks with only that role's rights."""
    from scaffolding_nats.security.secrets_file import read_env_file
    from scaffolding_nats.transport.jetstream import provision

    out = tmp_path / "identities"
    with identity_server(tmp_path, subjects) as server:
        admin = await server.connect("admin")
        controller = await server.connect("controller")
        try:
            await provision(admin.jetstream(), subjects, tags=["generation"])
            await add_identity(server, ["worker", "node", "--tags", "generation", "--nkey",
                                        "--prefix", subjects.prefix, "--out", str(out)])  # fmt: skip
            env = read_env_file(out / "worker-node.env")
            async with (
                node_worker(node_examples, server.bare_url, subjects.prefix, "--latency", "0.01", env=env),
                ControllerService(controller, load_registry(), subjects=subjects, provision=False),
            ):
                job = Job(method="majority_vote", prompt="one two 7", params={"sample_num": 3})
                result = await JobClient(admin, subjects=subjects).run(job, timeout=20)
                assert result.text == "7 two one" and result.num_tasks == 3
        finally:
            await controller.close()
            await admin.close()
