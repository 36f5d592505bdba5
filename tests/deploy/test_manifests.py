"""The Kubernetes manifests, checked offline: every object against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors), the kustomization against the
files, and the references between objects and the code (Secrets, selectors, ports)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml

from gateway.settings import Settings
from sandbox_net.addressing import LINK_POOL

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


def test_the_sandbox_egress_policy_lets_pods_reach_only_sandgate_links() -> None:
    (policy,) = by_kind("NetworkPolicy")
    assert policy["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": str(LINK_POOL)}}]}]
    assert policy["spec"]["ingress"] == []


def test_runtime_classes_for_gvisor_kata_and_sandgate() -> None:
    handlers = {r["metadata"]["name"]: r["handler"] for r in by_kind("RuntimeClass")}
    assert handlers == {"gvisor": "runsc", "kata": "kata", "sandgate": "sandgate"}
    node = tomllib.loads((KUBE / "node" / "containerd-sandgate.toml").read_text())
    runtime = node["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["sandgate"]
    assert runtime["runtime_type"] == "io.containerd.runc.v2"
    assert runtime["options"]["BinaryName"] == "/opt/sandgate/bin/runsc-sandgate"
    assert runtime["cni_conf_dir"] == "/etc/cni/net.d-sandgate"


def test_the_conflist_names_the_plugin_and_the_daemonsets_control_socket() -> None:
    (configmap,) = by_kind("ConfigMap")
    conflist = json.loads(configmap["data"]["10-sandgate.conflist"])
    (plugin,) = conflist["plugins"]
    assert (conflist["cniVersion"], plugin["type"]) == ("1.0.0", "sandgate-cni")
    assert plugin["capabilities"] == {"io.kubernetes.cri.pod-annotations": True}
    (daemonset,) = by_kind("DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    home = next(e["value"] for e in spec["containers"][0]["env"] if e["name"] == "SANDGATE_HOME")
    assert plugin["socket"] == str(Settings(home=Path(home)).control_socket)
    (install,) = spec["initContainers"]
    mounted = {m["mountPath"] for m in install["volumeMounts"]}
    assert {"/config", "/host/opt/cni/bin", "/host/etc/cni/net.d-sandgate"} <= mounted
    script = configmap["data"]["install.sh"]
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert "exec /opt/sandgate/cni/bin/python3 -m gateway.cni" in script


def admits(pod_spec: dict[str, Any]) -> bool:
    """Whether the admission policy lets a pod with this spec be created, its CEL
    evaluated here as the API server evaluates it."""
    (policy,) = by_kind("ValidatingAdmissionPolicy")
    env = celpy.Environment()
    pod = celpy.json_to_cel({"apiVersion": "v1", "kind": "Pod", "spec": pod_spec})
    return all(env.program(env.compile(v["expression"])).evaluate({"object": pod})
               for v in policy["spec"]["validations"])


def test_the_admission_policy_forbids_host_network_for_sandgate_pods() -> None:
    container = {"name": "c", "image": "x"}
    assert not admits({"runtimeClassName": "sandgate", "hostNetwork": True,
                       "containers": [container]})
    for allowed in ({"runtimeClassName": "sandgate", "containers": [container]},
                    {"runtimeClassName": "sandgate", "hostNetwork": False,
                     "containers": [container]},
                    {"hostNetwork": True, "containers": [container]},     # the gateway's own
                    {"runtimeClassName": "gvisor", "hostNetwork": True,
                     "containers": [container]}):
        assert admits(allowed), allowed
    (policy,) = by_kind("ValidatingAdmissionPolicy")
    (binding,) = by_kind("ValidatingAdmissionPolicyBinding")
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert {"CREATE", "UPDATE"} <= set(
        policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"])
    assert binding["spec"] == {"policyName": policy["metadata"]["name"],
                               "validationActions": ["Deny"]}
    # the class it names is the one whose handler is the sandgate runtime
    assert "'sandgate'" in policy["spec"]["validations"][0]["expression"]
    assert {r["metadata"]["name"]: r["handler"] for r in by_kind("RuntimeClass")}[
        "sandgate"] == "sandgate"


def test_the_node_gets_the_wrapper_that_refuses_host_network() -> None:
    (configmap,) = by_kind("ConfigMap")
    script = configmap["data"]["install.sh"]
    assert "exec /opt/sandgate/cni/bin/python3 -P -m gateway.runsc_sandgate" in script
    assert "exec runsc" not in script
