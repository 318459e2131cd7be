"""k8s/ runs NATS as a 3-node JetStream cluster and tells every service to keep 3 copies."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_k8s_nats_is_a_3_node_jetstream_cluster_with_3_replicas():
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "nats.yaml").read_text()))
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 3
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:3] == ["nats-server", "-c", "/etc/nats/server.conf"] and args[args.index("-n") + 1] == "$(POD_NAME)"
    routes = args[args.index("--routes") + 1].split(",")
    assert routes == [f"nats://nats-{i}.nats-headless:6222" for i in range(3)]
    (headless,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "nats-headless"]
    assert sts["spec"]["serviceName"] == "nats-headless" and headless["spec"]["publishNotReadyAddresses"]
    assert {"name": "cluster", "port": 6222, "targetPort": "cluster"} in headless["spec"]["ports"]
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    (policy,) = [
        d
        for d in yaml.safe_load_all((ROOT / "k8s" / "networkpolicies.yaml").read_text())
        if d["metadata"]["name"] == "nats-routes"
    ]
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6222}]
    env = yaml.safe_load((ROOT / "k8s" / "config.yaml").read_text())["data"]
    assert env["SCAF_JS_REPLICAS"] == "3"
