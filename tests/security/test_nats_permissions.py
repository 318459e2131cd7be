"""The attacks of issue 9 against a real nats-server running the generated config: each is
refused by the server itself, and the allowed flow (client -> controller -> worker -> events,
record, gateway replay) still works with every service logged in as its own role."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client

from scaffolding_nats.client import JobClient, NoController
from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Job, JobEventType, JobState, Subjects, pack
from scaffolding_nats.security import Deployment
from scaffolding_nats.security.natsconf import Tls
from scaffolding_nats.security.permissions import DEFAULT_WORKERS
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost, connect
from scaffolding_nats.transport.discovery import worker_infos
from scaffolding_nats.transport.finals import KeptFinals, ask_peers
from scaffolding_nats.transport.jetstream import NotProvisioned, provision
from scaffolding_nats.workers.synthetic import SyntheticWorker

SUBJECTS = Subjects("sec")
DEPLOYMENT = Deployment(
    subjects=SUBJECTS,
    workers={"openai": ["generation"], "tools": ["tool_call"]},
    clients=["alice", "mallory"],
)
S = SUBJECTS
TAGS = sorted({t for tags in DEFAULT_WORKERS.values() for t in tags})  # what `admin init` provisions


def pub(subject: str) -> str:
    """The server's refusal of a publish, as nats-py reports it (lower-cased)."""
    return f'nats: permissions violation for publish to "{subject}"'.lower()


def sub(subject: str, queue: str | None = None) -> str:
    in_queue = f' using queue "{queue}"' if queue else ""
    return f'nats: permissions violation for subscription to "{subject}"{in_queue}'.lower()


@dataclass
class Conn:
    """A connection as one role, and the errors the server sent it."""

    nc: Client
    errors: list[str] = field(default_factory=list)

    async def refused(self, action: Callable[[Client], Awaitable[object]]) -> str:
        """Run ``action`` and return the server's refusal; fail if none comes."""
        before = len(self.errors)
        await action(self.nc)
        await self.nc.flush()
        for _ in range(200):
            if len(self.errors) > before:
                return self.errors[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("the server did not refuse")


@dataclass
class Bus:
    server: NatsServer
    conns: dict[str, Conn]
    controller: ControllerService
    alice: JobClient


@pytest.fixture(scope="module")
def server() -> NatsServer:
    with NatsServer(deployment=DEPLOYMENT) as srv:
        yield srv


async def _connect(server: NatsServer, user: str) -> Conn:
    conn = Conn(nc=None)  # type: ignore[arg-type]

    async def on_error(exc: Exception) -> None:
        conn.errors.append(str(exc))

    conn.nc = await server.connect(user, error_cb=on_error)
    return conn


@pytest_asyncio.fixture
async def bus(server: NatsServer) -> AsyncIterator[Bus]:
    users = ["admin", "gateway", "controller", "worker-openai", "worker-tools", "client-alice", "client-mallory"]
    conns = {u.split("-")[-1]: await _connect(server, u) for u in users}
    await provision(conns["admin"].nc.jetstream(), SUBJECTS, tags=TAGS)
    try:
        async with AsyncExitStack() as stack:
            worker = conns["openai"].nc
            await stack.enter_async_context(
                WorkerHost(worker, SyntheticWorker(latency_s=0.3), tags=["generation"], subjects=S)
            )
            controller = await stack.enter_async_context(
                ControllerService(
                    conns["controller"].nc, load_registry(), subjects=S, provision=False, health_interval=0.1
                )
            )
            yield Bus(server, conns, controller, JobClient(conns["alice"].nc, subjects=S, owner="alice"))
    finally:
        for conn in conns.values():
            await conn.nc.close()


def _job() -> Job:
    return Job(method="majority_vote", prompt="one two 7", params={"sample_num": 2})


async def test_the_allowed_flow_passes_with_every_role_least_privileged(bus: Bus):
    assert bus.conns["controller"].errors == [] and bus.conns["openai"].errors == []
    job = _job()
    events = [e async for e in bus.alice.events(job, timeout=20)]
    assert events[-1].type is JobEventType.RESULT and events[-1].result is not None
    assert events[-1].result.answer == "7"
    # The gateway role submits for a tenant (its queued record first), replays events (no
    # consumer made) and reads records.
    gateway = JobClient(bus.conns["gateway"].nc, subjects=S)
    job2 = _job()
    assert await gateway.submit_once(job2, owner="acme") is None
    replayed = [e async for e in gateway.replay(job2.id, owner="acme", timeout=20)]
    assert [e.seq for e in replayed] == list(range(len(replayed))) and replayed[-1].type is JobEventType.RESULT
    record = await gateway.record(job2.id, owner="acme")
    assert record is not None and record.owner == "acme"
    again = await gateway.submit_once(job2, owner="acme")  # the id is the tenant's idempotency key
    assert again is not None and again.state is JobState.SUCCEEDED
    # The gateway asks every worker replica which backend models it serves; the worker answers.
    (info,) = await worker_infos(bus.conns["gateway"].nc, S)
    assert info.models == ("synthetic",) and info.tags == ("generation",)
    for role in ("controller", "openai", "alice", "gateway"):
        assert bus.conns[role].errors == [], role


async def test_anonymous_and_wrong_password_connections_are_refused(bus: Bus):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(bus.server.bare_url, max_reconnect_attempts=0, allow_reconnect=False)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            bus.server.bare_url, user="admin", password="guess", max_reconnect_attempts=0, allow_reconnect=False
        )


async def test_a_client_cannot_read_another_clients_events_or_records(bus: Bus):
    mallory = bus.conns["mallory"]
    for subject in (S.events("*", "alice"), S.events_all, S.events("x")):
        err = await mallory.refused(lambda nc, s=subject: nc.subscribe(s))
        assert err == sub(subject)
    kv_get = f"$JS.API.DIRECT.GET.KV_{S.results_bucket}.$KV.{S.results_bucket}.job1"
    err = await mallory.refused(lambda nc: nc.publish(kv_get, b""))
    assert err == pub(kv_get)
    info = f"$JS.API.STREAM.MSG.GET.{S.events_stream}"
    err = await mallory.refused(lambda nc: nc.publish(info, b'{"last_by_subj": "sec.events.alice.x"}'))
    assert err == pub(info)


async def test_nobody_but_the_controller_and_the_gateway_writes_records(bus: Bus):
    for role in ("mallory", "alice", "openai"):
        subject = f"$KV.{S.results_bucket}.victim"
        err = await bus.conns[role].refused(lambda nc, s=subject: nc.publish(s, b"forged"))
        assert err == pub(subject), role


async def test_tasks_cannot_be_eavesdropped_or_answered_by_others(bus: Bus):
    tasks = S.tasks("generation")
    group = S.task_queue_group("generation")
    # A client, or a worker of another kind (even in the right queue group), cannot take tasks.
    for role in ("mallory", "tools", "gateway"):
        err = await bus.conns[role].refused(lambda nc: nc.subscribe(tasks, queue=group))
        assert err == sub(tasks, group), role
    # The right worker may not listen outside its queue group (it would get every task).
    err = await bus.conns["openai"].refused(lambda nc: nc.subscribe(tasks))
    assert err == sub(tasks)
    # Nobody sniffs replies: inboxes are private per role.
    for subject in ("_INBOX.>", "_INBOX_controller.>", ">"):
        err = await bus.conns["mallory"].refused(lambda nc, s=subject: nc.subscribe(s))
        assert err == sub(subject)
    # A worker answers the requests it received and sends queued tasks' frames to controllers'
    # inboxes (each task's inbox is a random name only the worker that pulled it learns); no
    # frame into any other role's inbox.
    for inbox in ("_INBOX_gateway.abc.def", "_INBOX_client-alice.abc.def"):
        err = await bus.conns["tools"].refused(lambda nc, s=inbox: nc.publish(s, b"frame"))
        assert err == pub(inbox)
    # Nor may a worker pull another kind's tasks.
    pull = f"$JS.API.CONSUMER.MSG.NEXT.{S.tasks_stream}.{S.task_consumer('generation')}"
    err = await bus.conns["tools"].refused(lambda nc: nc.publish(pull, b'{"batch": 1}'))
    assert err == pub(pull)


async def test_kept_final_frames_are_asked_for_only_by_controllers_and_the_tags_own_workers(bus: Bus):
    """A controller (and a replica of the tag, for a redelivered task) asks for a final frame
    lost in an outage and gets it from the replica that kept it; other roles can neither ask
    nor listen for the questions of another tag."""
    worker = await _connect(bus.server, "worker-openai")
    try:
        kept = KeptFinals()
        inbox = "_INBOX_controller.abc.def"
        kept.keep(inbox, "t1", b"final frame")
        await worker.nc.subscribe(S.task_final("generation", "*"), cb=kept.answer)
        await worker.nc.flush()
        lookup = S.task_final("generation", "t1")
        for role in ("controller", "openai"):  # the answer goes to the asker's private inbox
            reply = await bus.conns[role].nc.request(lookup, inbox.encode(), timeout=5)
            assert reply.data == b"final frame", role
        assert await ask_peers(bus.conns["openai"].nc, lookup, inbox, 5) == b"final frame"
        assert worker.errors == [] and bus.conns["controller"].errors == []
    finally:
        await worker.nc.close()
    for role in ("mallory", "tools", "gateway"):
        err = await bus.conns[role].refused(lambda nc: nc.publish(lookup, inbox.encode()))
        assert err == pub(lookup), role
    err = await bus.conns["tools"].refused(lambda nc: nc.subscribe(S.task_final("generation", "*")))
    assert err == sub(S.task_final("generation", "*"))


async def test_results_cannot_be_forged_and_jobs_cannot_be_cancelled_by_others(bus: Bus):
    mallory = bus.conns["mallory"]
    job = _job()
    for subject in (S.events(job.id, "alice"), S.events(job.id), S.cancel_job(job.id), S.cancel_job(job.id, "alice")):
        err = await mallory.refused(lambda nc, s=subject: nc.publish(s, pack({"v": 1})))
        assert err == pub(subject)
    err = await bus.conns["openai"].refused(lambda nc: nc.publish(S.events(job.id, "alice"), b"forged"))
    assert err == pub(S.events(job.id, "alice"))
    # Mallory may cancel her own jobs only: a cancel under her name for Alice's job changes nothing.
    seen = []
    async for event in bus.alice.events(job, timeout=20):
        seen.append(event)
        if event.type is JobEventType.ACCEPTED:
            await mallory.nc.publish(S.cancel_job(job.id, "mallory"), b"")
    assert seen[-1].type is JobEventType.RESULT
    # And she cannot submit as Alice.
    err = await mallory.refused(lambda nc: nc.publish(S.jobs("native", "alice"), b""))
    assert err == pub(S.jobs("native", "alice"))


async def test_only_admin_creates_or_deletes_streams_and_consumers(bus: Bus):
    delete = f"$JS.API.CONSUMER.DELETE.{S.jobs_stream}.{S.jobs_consumer}"
    create = f"$JS.API.STREAM.CREATE.{S.jobs_stream}"
    ephemeral = f"$JS.API.CONSUMER.CREATE.{S.events_stream}"
    for role in ("mallory", "gateway", "controller", "openai"):
        for subject in (delete, create, ephemeral, f"$JS.API.STREAM.DELETE.{S.events_stream}"):
            err = await bus.conns[role].refused(lambda nc, s=subject: nc.publish(s, b"{}"))
            assert err == pub(subject), role
    info = await bus.conns["admin"].nc.jetstream().consumer_info(S.jobs_stream, S.jobs_consumer)
    assert info.name == S.jobs_consumer


async def _admin_check(server: NatsServer, user: str) -> tuple[int, str]:
    """``services.admin check`` as ``user`` (k8s's readiness probe of the controller)."""
    env = {**os.environ, **server.env_for(user), "SCAF_PREFIX": S.prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scaffolding_nats.services.admin", "check", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, (out + err).decode()


async def test_readiness_follows_the_consumer_and_services_fail_clearly_without_streams(bus: Bus):
    assert await _admin_check(bus.server, "controller") == (0, "provisioned\n")
    admin = bus.conns["admin"].nc.jetstream()
    await admin.delete_consumer(S.jobs_stream, S.jobs_consumer)
    rc, out = await _admin_check(bus.server, "controller")
    assert rc == 1 and "missing SEC_JOBS/SEC_CONTROLLERS" in out
    for _ in range(100):
        if not bus.controller.ready:
            break
        await asyncio.sleep(0.05)
    with pytest.raises(NoController, match="not ready: jobs consumer"):
        await bus.alice.methods()
    await provision(admin, S, tags=TAGS)
    for _ in range(100):
        if bus.controller.ready:
            break
        await asyncio.sleep(0.05)
    assert await bus.alice.methods()
    # A controller that may not create streams names what is missing and how to create it.
    await admin.delete_stream(S.events_stream)
    with pytest.raises(
        NotProvisioned, match=r"missing SEC_EVENTS\. Run `python -m scaffolding_nats.services.admin init`"
    ):
        async with ControllerService(bus.conns["controller"].nc, load_registry(), subjects=S, provision=False):
            pass


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
async def test_tls_is_optional_and_services_connect_with_the_ca_from_the_environment(tmp_path, monkeypatch):
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    made = await asyncio.to_thread(
        subprocess.run,
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    with NatsServer(deployment=DEPLOYMENT, jetstream=False, tls=Tls(str(cert), str(key))) as srv:
        monkeypatch.setenv("SCAF_NATS_TLS_CA", str(cert))
        nc = await connect(srv.bare_url, user="client-alice", password=srv.passwords["client-alice"])
        try:
            assert nc.is_connected and nc.connected_url is not None and nc.connected_url.scheme == "tls"
        finally:
            await nc.close()
        monkeypatch.delenv("SCAF_NATS_TLS_CA")
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        # Without the CA the certificate does not verify: nats-py reports it and never connects.
        with pytest.raises((TimeoutError, OSError, nats.errors.Error)):
            await asyncio.wait_for(
                connect(srv.bare_url, user="client-alice", password=srv.passwords["client-alice"], error_cb=on_error),
                5,
            )
        assert any("CERTIFICATE_VERIFY_FAILED" in str(e) for e in errors)
