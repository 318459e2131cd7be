"""compose.yaml, k8s/ and services/ are consistent with each other and with the code: they parse,
every command names a real entry point, every image has its Dockerfile, and each image installs
the extras its service needs and no others. (No Docker here: this is what can be checked offline.)"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Subjects
from scaffolding_nats.services.worker.__main__ import BUILTIN

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
SERVICE_NAMES = {
    "controller", "gateway", "worker-openai", "worker-tools", "worker-reward", "model-server", "worker-trtllm",
}  # fmt: skip
COMPOSE_SERVICES = SERVICE_NAMES - {"worker-trtllm"} | {"nats"}
# Worker classes that are allowed not to be importable here (they need their engine's image).
ENGINE_WORKERS = {"scaffolding_nats.workers.trtllm_worker:TrtLlmWorker"}
EXTRAS = {
    "controller": {"controller", "telemetry"},
    "gateway": {"gateway", "telemetry"},
    "worker-openai": {"openai-worker", "telemetry"},
    "worker-reward": {"openai-worker", "telemetry"},
    "worker-tools": {"tools-worker", "telemetry"},
    "model-server": {"model"},
    "worker-trtllm": {"trtllm-worker", "telemetry"},
}


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def k8s_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted((ROOT / "k8s").rglob("*.yaml")):
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def dockerfile(service: str) -> str:
    return (SERVICES / service / "Dockerfile").read_text()


def entrypoint(service: str) -> list[str]:
    match = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile(service), flags=re.MULTILINE)
    assert match, f"{service}: no exec-form ENTRYPOINT"
    return json.loads(match.group(1))


def check_command(argv: list[str], where: str) -> None:
    """``python -m MODULE ...``: MODULE exists; a ``--worker`` names a builtin or an importable class."""
    assert argv[:2] == ["python", "-m"], f"{where}: {argv}"
    module = argv[2]
    assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
    if "--worker" in argv:
        check_worker(argv[argv.index("--worker") + 1], where)


def check_worker(spec: str, where: str) -> None:
    if spec in BUILTIN:
        spec = BUILTIN[spec]
    module, _, cls = spec.partition(":")
    assert module and cls, f"{where}: worker {spec!r} is not MODULE:CLASS"
    if spec in ENGINE_WORKERS:
        return
    assert importlib.util.find_spec(module) is not None, f"{where}: no worker module {module}"


def env_of(value) -> dict[str, str]:
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return dict(value or {})


# -- services/ --------------------------------------------------------------------------------


def test_every_service_folder_has_a_dockerfile_and_is_documented():
    assert {p.name for p in SERVICES.iterdir() if p.is_dir()} == SERVICE_NAMES
    readme = (SERVICES / "README.md").read_text()
    for name in SERVICE_NAMES:
        assert (SERVICES / name / "Dockerfile").is_file(), name
        assert (SERVICES / name / "Dockerfile.dockerignore").is_file(), name
        assert f"`{name}/`" in readme, name


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_each_image_installs_exactly_its_extras(service):
    text = dockerfile(service)
    installs = re.findall(r'pip (?:install|wheel)[^\n]*?"[^"\[]*\[([a-z,-]+)\]"', text)
    assert installs, f"{service}: does not pip-install the project with extras"
    extras = {e for group in installs for e in group.split(",")}
    assert extras == EXTRAS[service]
    if service == "gateway":
        instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "llama" not in instructions.lower() and "model]" not in instructions
    if service == "worker-trtllm":
        assert re.search(r"^ARG TRTLLM_IMAGE=nvcr\.io/nvidia/tensorrt-llm/release:", text, flags=re.MULTILINE)
        assert "FROM ${TRTLLM_IMAGE}" in text


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_each_image_entrypoint_is_a_real_module(service):
    argv = entrypoint(service)
    check_command(argv, f"services/{service}/Dockerfile")
    worker = re.search(r"SCAF_WORKER=(\S+)", dockerfile(service))
    if worker:
        check_worker(worker.group(1), f"services/{service}/Dockerfile SCAF_WORKER")
    for args in re.findall(r"SCAF_WORKER_ARGS='([^']*)'", dockerfile(service)):
        assert isinstance(json.loads(args), dict)


def test_controller_methods_config_loads_and_k8s_carries_the_same_copy():
    path = SERVICES / "controller" / "methods.yaml"
    registry = load_registry(path)
    for name in yaml.safe_load(path.read_text())["methods"]:
        registry.build(name, {})
    config_maps = {doc["metadata"]["name"]: doc for _, doc in k8s_docs() if doc["kind"] == "ConfigMap"}
    assert config_maps["controller-methods"]["data"]["methods.yaml"] == path.read_text()


# -- compose.yaml -----------------------------------------------------------------------------


def test_compose_services_healthchecks_and_dependencies():
    services = compose()["services"]
    assert set(services) == COMPOSE_SERVICES
    assert "-js" in services["nats"]["command"] and services["nats"]["image"].startswith("nats:")
    assert "8000:8000" in services["gateway"]["ports"]
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond == {"condition": "service_healthy"}, name
        if name not in ("nats", "model-server"):  # the model server does not use the bus
            assert "nats" in svc["depends_on"], f"{name} must wait for nats"
    assert services["gateway"]["depends_on"].keys() >= {"nats", "controller"}


@pytest.mark.parametrize("service", sorted(COMPOSE_SERVICES - {"nats"}))
def test_compose_builds_each_service_from_its_folder_and_runs_a_real_entry_point(service):
    svc = compose()["services"][service]
    assert svc["build"] == {"context": ".", "dockerfile": f"services/{service}/Dockerfile"}
    assert svc["image"] == f"scaffolding-nats/{service}:0.1.0"
    command = svc.get("command", [])
    command = shlex.split(command) if isinstance(command, str) else command
    check_command(entrypoint(service) + command, f"compose.yaml {service}")
    env = env_of(svc.get("environment"))
    if "SCAF_WORKER_ARGS" in env:
        assert isinstance(json.loads(env["SCAF_WORKER_ARGS"]), dict)
    if env.get("SCAF_NATS_URL"):
        assert env["SCAF_NATS_URL"] == "nats://nats:4222"


# -- k8s/ -------------------------------------------------------------------------------------


def test_k8s_manifests_parse_and_are_well_formed():
    docs = k8s_docs()
    assert docs
    for path, doc in docs:
        if doc.get("kind") == "Kustomization":
            continue
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
        assert doc["metadata"].get("name"), path
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "scaffolding", (path, doc["metadata"]["name"])


def test_k8s_kustomization_lists_the_core_files():
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    top_level = {p.name for p in (ROOT / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == top_level
    assert all((ROOT / "k8s" / name).is_file() for name in listed)


def test_k8s_deployments_run_real_entry_points_and_have_services():
    docs = [doc for _, doc in k8s_docs()]
    services = [d for d in docs if d["kind"] == "Service"]
    deployments = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    names = {d["metadata"]["name"] for d in deployments}
    assert names == SERVICE_NAMES | {"nats"}
    for dep in deployments:
        name = dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert any(s["spec"]["selector"].items() <= labels.items() for s in services), f"{name}: no Service"
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        if name == "nats":
            assert "-js" in container["args"]
            continue
        assert container["image"] == f"scaffolding-nats/{name}:0.1.0"
        argv = container["command"] + container.get("args", [])
        check_command(argv, f"k8s {name}")
        assert argv[:3] == entrypoint(name)[:3], f"k8s {name} runs another module than its image"
        for env in container.get("env", []):
            if env["name"] == "SCAF_WORKER_ARGS":
                assert isinstance(json.loads(env["value"]), dict)


def test_k8s_scaling_workers_by_hpa_and_controllers_by_keda():
    docs = [doc for _, doc in k8s_docs()]
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert {"worker-openai", "worker-reward", "worker-tools"} <= hpas and "controller" not in hpas
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    # KEDA: controllers on the jobs backlog, each worker Deployment on its own tag's task backlog.
    subjects = Subjects()
    expected = {
        "controller": (subjects.jobs_stream, subjects.jobs_consumer),
        "worker-openai": (subjects.tasks_stream, subjects.task_consumer("generation")),
        "worker-reward": (subjects.tasks_stream, subjects.task_consumer("reward")),
        "worker-tools": (subjects.tasks_stream, subjects.task_consumer("tool_call")),
    }
    assert set(scaled) == set(expected)
    for name, (stream, consumer) in expected.items():
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream", name
        assert (trigger["metadata"]["stream"], trigger["metadata"]["consumer"]) == (stream, consumer), name
    # `kubectl apply -k k8s/keda/` replaces the workers' CPU HPAs (KEDA and an HPA must not share a target).
    keda = yaml.safe_load((ROOT / "k8s" / "keda" / "kustomization.yaml").read_text())
    assert "../" in keda["resources"]
    assert {f"{name}-scaledobject.yaml" for name in expected} <= set(keda["resources"])
    deleted = {yaml.safe_load(p["patch"])["metadata"]["name"] for p in keda["patches"]}
    assert deleted == {"worker-openai", "worker-reward", "worker-tools"}