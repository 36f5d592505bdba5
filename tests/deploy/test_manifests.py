"""The Kubernetes manifests, checked offline: every object against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors), the kustomization against the
files, and the references between objects and the code (Secrets, selectors, ports)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.settings import Settings

KUBE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSION = "1.30.0"


def objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_objects() -> list[dict[str, Any]]:
    return [o for p in sorted(KUBE.glob("*.yaml")) if p.name != "kustomization.yaml"
            for o in objects(p)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in all_objects() if o["kind"] == kind]


@pytest.mark.parametrize("path", sorted(p.name for p in KUBE.glob("*.yaml")
                                        if p.name != "kustomization.yaml"))
def test_every_object_validates_against_the_kubernetes_schema(path: str) -> None:
    for obj in objects(KUBE / path):
        kubernetes_validate.validate(obj, VERSION, strict=True)


def test_the_validator_catches_a_mistake() -> None:
    (daemonset,) = by_kind("DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_example_secrets() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secrets.example.yaml"}
    kubectl = shutil.which("kubectl")
    if kubectl:   # where kubectl exists, it must also render the kustomization
        rendered = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True,
                                  text=True, timeout=60)
        assert rendered.returncode == 0, rendered.stderr
        kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d)
        assert kinds == sorted(o["kind"] for name in listed for o in objects(KUBE / name))


def test_secret_references_resolve_to_the_example_secrets() -> None:
    secrets = {s["metadata"]["name"]: set(s["stringData"]) for s in by_kind("Secret")}
    assert set(secrets) == {"sandgate-database", "sandgate-master-key"}
    for workload in by_kind("DaemonSet") + by_kind("Deployment"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"]
                    if "secretKeyRef" in e.get("valueFrom", {})]
            assert {r["name"] for r in refs} == set(secrets)
            assert all(r["key"] in secrets[r["name"]] for r in refs)


def test_the_gateway_runs_on_the_nodes_network_and_the_api_does_not() -> None:
    (daemonset,) = by_kind("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["containers"][0]["args"] == ["serve"]
    (deployment,) = by_kind("Deployment")
    api = deployment["spec"]["template"]["spec"]
    assert "hostNetwork" not in api and api["securityContext"]["runAsNonRoot"] is True
    assert api["containers"][0]["args"] == ["api"]
    assert api["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_service_selects_the_api_pods() -> None:
    (service,) = by_kind("Service")
    (deployment,) = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_sandbox_egress_policy_opens_exactly_the_gateway_ports() -> None:
    (policy,) = by_kind("NetworkPolicy")
    defaults = Settings(home=Path("/nonexistent"))
    ports = {(p["protocol"], p["port"]) for rule in policy["spec"]["egress"]
             for p in rule["ports"]}
    assert ports == {("TCP", defaults.transparent_port), ("UDP", defaults.dns_port),
                     ("TCP", defaults.dns_port)}
    assert policy["spec"]["ingress"] == []


def test_runtime_classes_for_gvisor_and_kata() -> None:
    handlers = {r["metadata"]["name"]: r["handler"] for r in by_kind("RuntimeClass")}
    assert handlers == {"gvisor": "runsc", "kata": "kata"}
