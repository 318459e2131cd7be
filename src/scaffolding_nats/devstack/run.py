"""The embedded default: the whole system as local processes, no Docker.

``python -m scaffolding_nats.devstack.run`` starts nats-server (JetStream data under
``.run/``; ``--cluster 3``: a 3-node cluster instead, every stream in 3 copies), a real small
model on the CPU behind llama.cpp's OpenAI-compatible server, the OpenAI-proxy, reward-judge
and tools workers, the controller and the gateway; waits until all are healthy; answers one
real request through the gateway; prints the URL and a request to copy; and on Ctrl-C stops
everything, leaving nothing running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..proto.subjects import Subjects
from ..security import Deployment
from ..security.api_keys import key_line, new_key, parse_key_lines
from ..security.secrets_file import write_env_file
from .model_server import ModelServer
from .nats_cluster import NatsCluster
from .nats_server import NatsServer


class Service:
    """A child process that prints ``ready`` once serving; its log goes to a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == b"ready":
                self._ready.set()
            self._log.write(line)
            self._log.flush()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n" + _tail(self.log_path)
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _http(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 60, key: str = ""
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait_ready(gateway: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = _http("GET", f"{gateway}/readyz", timeout=2)
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"gateway not ready after {timeout}s")


def local_api_key(path: Path) -> str:
    """The local tenant's API key: made on the first run, kept (0600) for the next ones. The
    file is the gateway's key file ("tenant key" lines, see services/gateway/auth.py)."""
    for line in parse_key_lines(path.read_text(), source=str(path)) if path.exists() else []:
        if line.tenant == "local":
            return line.key
    key = new_key()
    write_env_file(path, {})
    path.write_text(key_line("local", key) + "\n")
    return key


EXAMPLE = {
    "model": "majority_vote",
    "messages": [{"role": "user", "content": "What is 12 + 30? Answer with a number."}],
    "max_tokens": 48,
    "method_params": {"sample_num": 3},
}


def _tools_args() -> dict[str, object]:
    """The python tool needs the bwrap sandbox; where it cannot run here (no unprivileged user
    namespaces), the local stack serves the other tools and says why, instead of failing."""
    import asyncio

    from ..workers.errors import SandboxUnavailable
    from ..workers.tools.sandbox import Sandbox

    try:
        asyncio.run(Sandbox(cgroup="off").check())  # a probe: it makes no cgroups
    except SandboxUnavailable as exc:
        print(f"note: the python tool is off on this machine: {exc.message}", flush=True)
        return {"python": False}
    return {}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default=os.environ.get("SCAF_MODEL", "qwen-0.5b"),
        help="qwen-0.5b (default), qwen-1.5b (stronger, slower), smollm2 (fast, weak), or a .gguf path",
    )
    p.add_argument("--nats-port", type=int, default=4222, help="client port (of the first node of a cluster)")
    p.add_argument(
        "--cluster",
        type=int,
        default=int(os.environ.get("CLUSTER") or 1),
        help="NATS nodes: 1 (default) or a cluster of 3 with routes and replicated JetStream",
    )
    p.add_argument("--gateway-port", type=int, default=8000)
    p.add_argument("--model-port", type=int, default=8081)
    p.add_argument("--state-dir", default=".run", help="JetStream data and service logs")
    p.add_argument("--prefix", default="scaf")
    p.add_argument("--exit-after-request", action="store_true", help="stop after answering the first request")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = Path(args.state_dir).resolve()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ExitStack() as stack:
        secrets = state / "secrets"  # generated on the first run, never committed (.run/ is ignored)
        deployment = Deployment(subjects=Subjects(args.prefix))
        nats: NatsServer | NatsCluster
        if args.cluster > 1:
            print(
                f"starting a {args.cluster}-node NATS cluster on 127.0.0.1:{args.nats_port}.."
                f"{args.nats_port + args.cluster - 1} (JetStream in {state / 'nats-cluster'}) ...",
                flush=True,
            )
            nats = stack.enter_context(
                NatsCluster(
                    args.cluster,
                    store_dir=state / "nats-cluster",
                    base_port=args.nats_port,
                    deployment=deployment,
                    secrets_file=secrets / "nats.env",
                    auth_file=secrets / "nats-auth.conf",
                    pid_dir=state,
                )
            )
        else:
            print(
                f"starting nats-server on 127.0.0.1:{args.nats_port} (JetStream in {state / 'nats'}) ...",
                flush=True,
            )
            nats = stack.enter_context(
                NatsServer(
                    port=args.nats_port,
                    store_dir=state / "nats",
                    deployment=deployment,
                    secrets_file=secrets / "nats.env",
                    # add-identity rewrites this and signals the pid: `make add-client`
                    auth_file=secrets / "nats-auth.conf",
                    pid_file=state / "nats-server.pid",
                )
            )
        base = {**os.environ, "SCAF_PREFIX": args.prefix, "PYTHONUNBUFFERED": "1"}
        for name in (
            "SCAF_NATS_USER", "SCAF_NATS_PASSWORD", "SCAF_NATS_PASSWORD_FILE", "SCAF_NATS_CREDS",
            "SCAF_NATS_NKEY_SEED", "SCAF_NATS_NKEY_SEED_FILE",
        ):  # fmt: skip
            base.pop(name, None)

        def env_for(user: str) -> dict[str, str]:
            return {**base, **nats.env_for(user)}

        init = subprocess.run(
            [sys.executable, "-m", "scaffolding_nats.services.admin", "init"],
            env=env_for("admin"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if init.returncode != 0:
            print(f"provisioning JetStream failed:\n{init.stderr}", flush=True)
            return 1
        print(f"  {init.stdout.strip()} (as the NATS admin user)", flush=True)
        api_key = local_api_key(secrets / "api-keys")
        print(f"starting the model server ({args.model}) on 127.0.0.1:{args.model_port} ...", flush=True)
        model = stack.enter_context(ModelServer(args.model, port=args.model_port))
        backend = {"base_url": model.base_url, "model": model.model}
        specs = [  # each service logs in to NATS as its own user, with only its role's rights
            (
                "worker-openai",
                [
                    "scaffolding_nats.services.worker",
                    "--worker",
                    "openai",
                    "--tags",
                    "generation",
                    "--worker-args",
                    # As many requests in flight as the engine has slots (more wait in the task
                    # queue, where other replicas can take them); plain ones unstreamed (one
                    # response instead of an SSE event per token).
                    json.dumps({**backend, "max_concurrency": model.parallel, "stream_plain": False, "timeout": 600}),
                    "--name",
                    "worker-openai",
                ],
            ),
            (
                "worker-reward",
                [
                    "scaffolding_nats.services.worker",
                    "--worker",
                    "judge",
                    "--tags",
                    "reward",
                    "--worker-args",
                    json.dumps(backend),
                    "--name",
                    "worker-reward",
                ],
            ),
            (
                "worker-tools",
                [
                    "scaffolding_nats.services.worker",
                    "--worker",
                    "tools",
                    "--tags",
                    "tool_call",
                    "--worker-args",
                    json.dumps(_tools_args()),
                    "--name",
                    "worker-tools",
                ],
            ),
            ("controller", ["scaffolding_nats.services.controller"]),
        ]
        services = []
        for name, cmd in specs:
            service = Service(name, cmd, state / "logs", env_for(name))
            stack.callback(service.stop)
            services.append(service)
        for service in services:
            service.wait_ready(60)
        gateway = Service(
            "gateway",
            ["scaffolding_nats.services.gateway", "--port", str(args.gateway_port)],
            state / "logs",
            {**env_for("gateway"), "SCAF_API_KEYS_FILE": str(secrets / "api-keys")},
        )
        stack.callback(gateway.stop)
        url = f"http://127.0.0.1:{args.gateway_port}"
        _wait_ready(url, 60)
        print(f"all services healthy in {time.monotonic() - started:.1f}s; logs in {state / 'logs'}", flush=True)

        print("\nanswering a first request through the gateway ...", flush=True)
        t = time.monotonic()
        status, reply = _http("POST", f"{url}/v1/chat/completions", EXAMPLE, timeout=300, key=api_key)
        if status != 200:
            print(f"request failed with HTTP {status}: {json.dumps(reply)}", flush=True)
            return 1
        answer = reply["choices"][0]["message"]["content"]
        ext = reply.get("scaffolding", {})
        print(
            f"  model={EXAMPLE['model']} answer={ext.get('answer')!r} tokens={reply['usage']['total_tokens']} "
            f"tasks={ext.get('num_tasks')} in {time.monotonic() - t:.1f}s"
        )
        print(f"  text: {answer.strip()[:300]}")
        if args.exit_after_request:
            return 0
        stop = threading.Event()
        # Installed explicitly: a shell that starts us in the background ignores SIGINT.
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(
            f"""
Gateway: {url}   (OpenAPI docs: {url}/docs, methods: {url}/v1/models)
API key of the local tenant (kept in {secrets / "api-keys"}):

  export SCAF_API_KEY={api_key}

Try it:

  curl -s {url}/v1/chat/completions -H "Authorization: Bearer $SCAF_API_KEY" \\
    -H 'Content-Type: application/json' -d '{json.dumps(EXAMPLE)}'

A NATS login for a program of your own (it owns its jobs as "alice"; NKEY=1 for an nkey):

  make add-client NAME=alice     # credentials in {state / "identities"}/client-alice.env

Press Ctrl-C to stop everything.""",
            flush=True,
        )
        while not stop.wait(1):
            for service in [*services, gateway]:
                if service.proc.poll() is not None:
                    print(f"{service.name} exited ({service.proc.returncode}); stopping. Log: {service.log_path}")
                    return 1
        print("\nstopping ...", flush=True)
    print("stopped; nothing left running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
