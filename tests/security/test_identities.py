"""An operator adds a client or worker identity to a running deployment (issue 17, item 8):
`add-identity` records it in the deployment's env file, rewrites the deployment's auth file and
reloads the server; the credentials it hands out log in to that same running server, and the
identity can do exactly its role. Each deployment's way is run against a real nats-server: the
`make run` stack (pid file), compose (server.conf + .compose/auth.conf, SIGHUP as `docker compose
kill -s HUP nats` sends it) and k8s (passwords from the Secret's environment, after a restart)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import NatsCluster, NatsServer
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Job, Subjects
from scaffolding_nats.security import Deployment, identities
from scaffolding_nats.security.__main__ import main as security
from scaffolding_nats.security.nkey import NkeyError, check_public, from_seed, new_user_key
from scaffolding_nats.security.secrets_file import read_env_file
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost, connect
from scaffolding_nats.transport.connect import credentials_from_env
from scaffolding_nats.transport.jetstream import provision
from scaffolding_nats.workers.synthetic import SyntheticWorker

from .checked_in import prepare, running

S = Subjects("idt")
TAGS = ["generation", "reward", "tool_call"]


class Login:
    """A connection made from handed-out settings, and the errors the server sent it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Client | None = None

    async def _on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    async def connect(self, url: str, env: dict[str, str]) -> Client:
        # transport.connect, as the client's program would: the user's inbox prefix comes with it.
        self.nc = await connect(url, name="identity-test", error_cb=self._on_error, allow_reconnect=False,
                                max_reconnect_attempts=0, **credentials_from_env(env))  # fmt: skip
        return self.nc

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    async def refused(self, action) -> str:
        before = len(self.errors)
        assert self.nc is not None
        await action(self.nc)
        await self.nc.flush()
        for _ in range(200):
            if len(self.errors) > before:
                return self.errors[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("the server did not refuse")


async def login(url: str, env: dict[str, str], timeout: float = 10) -> Login:
    """Log in, retrying while the server is still reloading its config (it does so after SIGHUP)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = Login()
        try:
            await conn.connect(url, env)
            return conn
        except (nats.errors.Error, ConnectionResetError) as exc:  # refused: the server may close first
            refused = isinstance(exc, ConnectionResetError) or "authorization violation" in str(exc).lower()
            if not refused or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def refused_login(url: str, env: dict[str, str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await Login().connect(url, env)
        except ConnectionResetError:
            return  # refused, and closed before the client read why
        except nats.errors.Error as exc:
            assert "authorization violation" in str(exc).lower(), exc
            return
        await conn.close()
        assert time.monotonic() < deadline, "the login still works"
        await asyncio.sleep(0.05)


# -- the `make run` stack: .run/secrets/nats.env, nats-auth.conf, reloaded through its pid file ---


@pytest.fixture
def local(tmp_path: Path):
    secrets = tmp_path / "secrets"
    with NatsServer(
        deployment=Deployment(subjects=S),
        secrets_file=secrets / "nats.env",
        auth_file=secrets / "nats-auth.conf",
        pid_file=tmp_path / "nats-server.pid",
    ) as server:
        yield server


def run_args(server: NatsServer, tmp_path: Path) -> list[str]:
    assert server.secrets_file is not None and server.auth_file is not None and server.pid_file is not None
    return ["--env-file", str(server.secrets_file), "--auth-file", str(server.auth_file), "--prefix", S.prefix,
            "--reload", str(server.pid_file)]  # fmt: skip


@pytest.fixture
async def services(local: NatsServer) -> AsyncIterator[None]:
    """A controller and a generation worker, each logged in as its own role."""
    admin = await local.connect("admin")
    await provision(admin.jetstream(), S, tags=TAGS)
    await admin.close()
    async with AsyncExitStack() as stack:
        for user in ("controller", "worker-openai"):
            nc = await local.connect(user)
            stack.push_async_callback(nc.close)
            if user == "controller":
                await stack.enter_async_context(ControllerService(nc, load_registry(), subjects=S, provision=False))
            else:
                await stack.enter_async_context(WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=S))
        yield


async def test_an_added_client_logs_in_to_the_running_server_and_owns_only_its_jobs(local, services, tmp_path):
    out = tmp_path / "identities"
    assert security(["add-identity", "client", "alice", *run_args(local, tmp_path), "--out", str(out),
                     "--url", local.bare_url]) == 0  # fmt: skip
    handed = out / "client-alice.env"
    assert handed.stat().st_mode & 0o777 == 0o600
    env = read_env_file(handed)
    assert set(env) == {"SCAF_NATS_URL", "SCAF_NATS_USER", "SCAF_NATS_PASSWORD"}
    assert env["SCAF_NATS_USER"] == "client-alice" and env["SCAF_NATS_URL"] == local.bare_url

    alice = await login(env["SCAF_NATS_URL"], env)  # the same server process, reloaded
    try:
        client = JobClient(alice.nc, subjects=S, owner="alice")
        result = await client.run(Job(method="native", prompt="a b"), timeout=20)
        assert result.text == "b a"
        # Exactly its role: another owner's jobs and events, tasks and the bucket are refused.
        for subject in (S.events("*", "bob"), S.tasks("generation")):
            err = await alice.refused(lambda nc, s=subject: nc.subscribe(s))
            assert err == f'nats: permissions violation for subscription to "{subject}"'.lower()
        for subject in (S.jobs("native", "bob"), S.tasks("generation"), f"$KV.{S.results_bucket}.x"):
            err = await alice.refused(lambda nc, s=subject: nc.publish(s, b""))
            assert err == f'nats: permissions violation for publish to "{subject}"'.lower()
    finally:
        await alice.close()
    # Removing it ends its logins at the next reload.
    assert security(["remove-identity", "client-alice", *run_args(local, tmp_path)]) == 0
    await refused_login(local.bare_url, env)


async def test_an_identity_added_while_the_stack_is_down_logs_in_when_it_starts(local, tmp_path):
    local.stop()
    out = tmp_path / "identities"
    assert security(["add-identity", "client", "alice", *run_args(local, tmp_path), "--out", str(out)]) == 0
    local.start()  # make run again: the auth file is made anew from the env file
    await (await login(local.bare_url, read_env_file(out / "client-alice.env"))).close()


async def test_an_added_worker_kind_serves_its_tags_only(local, services, tmp_path):
    out = tmp_path / "identities"
    assert security(["add-identity", "worker", "gpu", "--tags", "reward", *run_args(local, tmp_path),
                     "--out", str(out)]) == 0  # fmt: skip
    env = read_env_file(out / "worker-gpu.env")
    gpu = await login(local.bare_url, env)
    admin = await local.connect("admin")
    try:
        async with WorkerHost(gpu.nc, SyntheticWorker(), tags=["reward"], subjects=S):
            result = await JobClient(admin, subjects=S).run(Job(method="native", prompt="x y"), timeout=20)
            assert result.text == "y x"  # the controller and the generation worker still run
        subject = S.tasks("generation")
        err = await gpu.refused(lambda nc: nc.subscribe(subject, queue=S.task_queue_group("generation")))
        assert err.startswith("nats: permissions violation for subscription") and subject.lower() in err
        assert gpu.errors == [err]  # serving its own tag's queue raised nothing
    finally:
        await gpu.close()
        await admin.close()


async def test_make_run_cluster_3_reloads_every_node(tmp_path):
    secrets, out = tmp_path / "secrets", tmp_path / "identities"
    with NatsCluster(3, deployment=Deployment(subjects=S), secrets_file=secrets / "nats.env",
                     auth_file=secrets / "nats-auth.conf", pid_dir=tmp_path) as cluster:  # fmt: skip
        pids = sorted(tmp_path.glob("nats-server*.pid"))  # what `make add-client` passes
        assert [p.name for p in pids] == [f"nats-server-n{i}.pid" for i in range(3)]
        argv = ["--env-file", str(secrets / "nats.env"), "--auth-file", str(secrets / "nats-auth.conf"),
                "--prefix", S.prefix, "--out", str(out), *(a for p in pids for a in ("--reload", str(p)))]  # fmt: skip
        assert security(["add-identity", "client", "alice", *argv]) == 0
        env = read_env_file(out / "client-alice.env")
        for node in cluster.nodes:
            await (await login(node.bare_url, env)).close()


def test_bad_or_repeated_identities_are_refused_and_change_nothing(local, tmp_path, capsys):
    args = run_args(local, tmp_path)
    assert local.secrets_file is not None
    before = local.secrets_file.read_text()
    cases = [
        (["add-identity", "worker", "openai", "--tags", "generation"], "exists already"),  # the role table's
        (["add-identity", "client", "a.b"], "not a valid subject token"),
        (["add-identity", "worker", "gpu"], "needs its tags"),
        (["remove-identity", "controller"], "not an added identity"),
    ]
    for argv, message in cases:
        assert security([*argv, *args]) == 2, argv
        assert message in capsys.readouterr().err
    assert local.secrets_file.read_text() == before
    assert security(["add-identity", "client", "a-b", *args]) == 0
    assert security(["add-identity", "client", "a_b", *args]) == 2  # same SCAF_NATS_*_CLIENT_A_B names
    assert "share its settings' names" in capsys.readouterr().err


def test_a_stale_pid_file_signals_nothing(tmp_path):
    pid_file = tmp_path / "nats-server.pid"
    pid_file.write_text(str(os.getpid()))  # this pytest process: alive, and not a nats-server
    assert identities.signal_reload(pid_file) is None
    pid_file.write_text("0x")
    assert identities.signal_reload(pid_file) is None


# -- compose and k8s: the checked-in server.conf -------------------------------------------------


def default_env(env_file: Path) -> dict[str, str]:
    """What compose's nats `environment` passes: the role table's passwords, nothing added."""
    names = {r.password_env for r in Deployment().roles()}
    return {k: v for k, v in read_env_file(env_file).items() if k in names}


async def test_compose_adds_an_identity_to_the_running_server_with_a_sighup(tmp_path):
    layout, env_file = prepare(tmp_path), tmp_path / ".env"
    # make compose-secrets: .env and this deployment's auth file (mounted as /etc/nats/auth.conf)
    assert security(["secrets", str(env_file), "--auth-file", str(layout.auth_file)]) == 0
    with running(layout, default_env(env_file)) as proc:
        admin = read_env_file(env_file)["SCAF_NATS_PASSWORD_ADMIN"]
        await (await login(layout.url, {"SCAF_NATS_USER": "admin", "SCAF_NATS_PASSWORD": admin})).close()
        out = tmp_path / ".compose" / "identities"
        argv = ["--env-file", str(env_file), "--auth-file", str(layout.auth_file), "--out", str(out)]
        assert security(["add-identity", "client", "alice", *argv]) == 0
        env = read_env_file(out / "client-alice.env")
        await refused_login(layout.url, env, timeout=0)  # not before the reload
        proc.send_signal(signal.SIGHUP)  # docker compose kill -s HUP nats
        alice = await login(layout.url, env)
        await alice.close()


async def test_k8s_takes_an_identity_from_the_secret_after_a_restart(tmp_path):
    layout, env_file = prepare(tmp_path), tmp_path / "nats.env"
    assert security(["secrets", str(env_file)]) == 0
    out = tmp_path / "identities"
    argv = ["--env-file", str(env_file), "--auth-file", str(layout.auth_file), "--passwords-from-env"]
    assert security(["add-identity", "client", "alice", *argv, "--out", str(out)]) == 0
    text = layout.auth_file.read_text()
    assert "$SCAF_NATS_PASSWORD_CLIENT_ALICE" in text and read_env_file(out / "client-alice.env")[
        "SCAF_NATS_PASSWORD"
    ] not in text  # a ConfigMap: no secret in it
    # The pods' environment is the whole Secret (envFrom), made from the env file.
    with running(layout, read_env_file(env_file)):
        alice = await login(layout.url, read_env_file(out / "client-alice.env"))
        await alice.close()


# -- nkeys ---------------------------------------------------------------------------------------


def test_nkeys_round_trip_and_bad_ones_are_refused():
    key = new_user_key()
    assert key.public.startswith("U") and key.seed.startswith("SU") and len(key.public) == 56
    assert from_seed(key.seed) == key and check_public(key.public) == key.public
    assert key.seed not in repr(key)
    for bad in (key.seed[:-2] + "AA", key.public, "SAAA"):
        with pytest.raises(NkeyError):
            from_seed(bad)
    with pytest.raises(NkeyError):
        check_public(key.seed)


async def test_an_nkey_identity_is_a_public_key_on_the_server_and_a_seed_for_the_client(tmp_path):
    env_file, auth, out = tmp_path / "nats.env", tmp_path / "auth.conf", tmp_path / "out"
    argv = ["--env-file", str(env_file), "--auth-file", str(auth), "--out", str(out)]
    assert security(["add-identity", "client", "bob", "--nkey", *argv]) == 0
    handed = read_env_file(out / "client-bob.env")
    seed = (out / "client-bob.nk").read_text().strip()
    assert handed == {"SCAF_NATS_USER": "client-bob", "SCAF_NATS_NKEY_SEED": seed}
    public = from_seed(seed).public
    assert read_env_file(env_file)["SCAF_NATS_NKEY_CLIENT_BOB"] == public
    assert f'nkey: "{public}"' in auth.read_text()
    assert seed not in env_file.read_text() + auth.read_text()  # the deployment never keeps it
    # Python clients: nats-py signs with the nkeys package; without it, a clear error.
    options = credentials_from_env(handed)
    assert options == {"nkeys_seed_str": seed, "inbox_prefix": "_INBOX_client-bob"}
    try:
        import nkeys  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs the nkeys package"):
            await connect("nats://127.0.0.1:1", **options)
