"""The node's half of Kubernetes, for real: Debian's containerd runs gVisor pods (the runc
shim, runsc through a wrapper) and `ctr run --cni` calls sandgate-cni exactly as the CRI
calls a cluster's network plugin. The plugin has the node's gateway attach each pod like a
sandbox: from inside the pod, an allowed HTTPS call works with its placeholder swapped for
the secret, a name the policy does not allow is NXDOMAIN, an IP literal is refused, and
every audit row names the pod. DEL (repeated, after a gateway restart) leaves nothing; a
missing gateway or an unknown policy fails ADD, so the pod never starts.

One gateway, one containerd and one long-lived pod serve the checks that do not interfere;
the restart and missing-gateway checks come last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import default_cache_dir
from sandbox_net import firewall
from sandbox_net.images.store import ImageStore
from tests.conftest import force_clean, leftovers, new_prefix
from tests.containerd import Containerd
from tests.harness import REAL_SECRETS, Gateway, wait_for
from tests.topology import DNS_IP, HTTPS_IP, Topology
from vault.placeholders import new_placeholder

pytestmark = pytest.mark.integration

TOKEN = "pod-token-" + uuid.uuid4().hex
REAL_SECRETS.append(TOKEN)
POD_NAMESPACE = "team-a"


def start(gw: Gateway) -> None:
    gw.launch()
    gw.wait_until(gw.healthy, timeout=240)   # six test runs may share this machine's cores


@dataclass(frozen=True)
class Pod:
    name: str
    uid: str
    container_id: str        # CNI_CONTAINERID
    netns: str
    placeholder: str


@pytest.fixture(scope="module")
def node_gateway(tmp_path_factory: pytest.TempPathFactory,
                 topology: Topology) -> Iterator[Gateway]:
    prefix = new_prefix()
    gw = Gateway(prefix, tmp_path_factory.mktemp("cni-gateway"), topology)
    try:
        start(gw)
        gw.set_secret("API_TOKEN", TOKEN)
        # only pods of POD_NAMESPACE may use the policy and bind the secret
        with gw.client() as c:
            assert c.put("/v1/secrets/API_TOKEN/kubernetes",
                         json={"namespaces": [POD_NAMESPACE]}).status_code == 200
        gw.policy("pods", [
            {"id": "api", "hosts": ["secure.upstream.test"], "ports": [443],
             "inject": [{"secret": "API_TOKEN", "as": "bearer"}]},
        ], kubernetes={"namespaces": [POD_NAMESPACE]})
        yield gw
    finally:
        gw.stop()
        remaining = leftovers(prefix)
        force_clean(prefix)
        assert not remaining, f"gateway left {remaining} behind"


@pytest.fixture(scope="module")
def containerd(node_gateway: Gateway) -> Iterator[Containerd]:
    base = Path(f"/tmp/sgctd-{node_gateway.prefix}")   # short: unix socket paths are capped
    node = Containerd(base, f"sg{node_gateway.prefix}")
    try:
        node.start()
        yield node
    finally:
        killed = node.stop()
        assert not base.exists()
        assert not killed, f"processes left behind: {killed}"


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    """The host's `base` image (python3, curl), held so that no rebuild removes it."""
    store = ImageStore(default_cache_dir() / "images")
    image = store.find("base")
    assert image is not None, "no base image: run scripts/bootstrap.sh"
    hold = store.hold(image)
    try:
        yield image.rootfs
    finally:
        hold.release()


@pytest.fixture(scope="module")
def mounts(node_gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What a kubelet mounts into a pod: a resolv.conf (any server: the rules send every
    query to the gateway) and, from the node, the gateway's CA bundle."""
    resolv = tmp_path_factory.mktemp("pod") / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_IP}\n")
    return {"/etc/resolv.conf": resolv,
            "/etc/ssl/certs/ca-certificates.crt": node_gateway.home / "ca" / "sandbox-bundle.pem"}


def conflist(gw: Gateway, name: str, uid: str, annotations: dict[str, str],
             namespace: str = POD_NAMESPACE) -> dict[str, Any]:
    """The node's configuration as the DaemonSet installs it, plus what the CRI would add
    for this pod (ctr has no CRI: identity in args.cni, annotations in runtimeConfig)."""
    return {"cniVersion": "1.0.0", "name": "sandgate", "plugins": [{
        "type": "sandgate-cni", "socket": str(gw.home / "control.sock"),
        "capabilities": {"io.kubernetes.cri.pod-annotations": True},
        "runtimeConfig": {"io.kubernetes.cri.pod-annotations": annotations},
        "args": {"cni": {"K8S_POD_NAMESPACE": namespace, "K8S_POD_NAME": name,
                         "K8S_POD_UID": uid}},
    }]}


def start_pod(node: Containerd, gw: Gateway, rootfs: Path, mounts: dict[str, Path], name: str,
              policy: str = "pods", namespace: str = POD_NAMESPACE,
              ) -> tuple[Pod, subprocess.CompletedProcess[str]]:
    uid, placeholder = str(uuid.uuid4()), new_placeholder()
    notes = {"sandgate.dev/policy": policy, "sandgate.dev/secrets": f"API_TOKEN={placeholder}"}
    result = node.run(name, rootfs, conflist(gw, name, uid, notes, namespace), "sleep", "600",
                      detach=True, mounts=mounts)
    netns = f"/proc/{node.task_pid(name)}/ns/net" if result.returncode == 0 else ""
    return Pod(name, uid, node.full_id(name), netns, placeholder), result


def plugin(node: Containerd, gw: Gateway, command: str, pod: Pod,
           prev: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """sandgate-cni called as a runtime calls it (for CHECK and DEL, which ctr does not
    send for a detached container)."""
    config = {"cniVersion": "1.0.0", "name": "sandgate", "type": "sandgate-cni",
              "socket": str(gw.home / "control.sock"),
              **({"prevResult": prev} if prev else {})}
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": pod.container_id,
           "CNI_NETNS": pod.netns, "CNI_IFNAME": "eth0", "CNI_PATH": str(node.plugins)}
    return subprocess.run([str(node.plugins / "sandgate-cni")], input=json.dumps(config),
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def nothing_left(gw: Gateway, pod: Pod) -> None:
    """No link, pin, registration or live record of the pod remains."""
    assert [e for e in leftovers(gw.prefix) if not e.startswith("table")] == []
    assert firewall.pinned(gw_firewall(gw)) == set()
    with gw.client() as c:
        assert c.get(f"/v1/pods/{pod.container_id}").status_code == 404
        assert c.get("/v1/sandboxes").json() == []
    links = subprocess.run(["nsenter", f"--net={pod.netns}", "ip", "-br", "link"],
                           capture_output=True, text=True, check=False).stdout \
        if pod.netns and Path(pod.netns).exists() else ""
    assert "eth0" not in links


def gw_firewall(gw: Gateway) -> firewall.FirewallSpec:
    return firewall.FirewallSpec(f"sandgate_{gw.prefix}", f"{gw.prefix}h-*",
                                 gw.transparent_port, gw.dns_port, 2)


@pytest.fixture(scope="module")
def web(containerd: Containerd, node_gateway: Gateway, rootfs: Path,
        mounts: dict[str, Path]) -> Iterator[Pod]:
    pod, result = start_pod(containerd, node_gateway, rootfs, mounts, "web")
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield pod
    finally:
        containerd.remove(pod.name)
        plugin(containerd, node_gateway, "DEL", pod)


def audit(gw: Gateway, since: int = 0, **filters: str) -> list[dict[str, Any]]:
    """Audit rows after id `since`, through the control socket (the CLI's start-up costs
    seconds on a loaded machine)."""
    with gw.client() as c:
        page = c.get("/v1/audit", params={"cursor": since, "limit": 1000, **filters}).json()
    rows: list[dict[str, Any]] = page["rows"]
    return rows


def last_id(gw: Gateway) -> int:
    with gw.client() as c:
        rows = c.get("/v1/audit", params={"latest": "true", "limit": 1}).json()["rows"]
    return int(rows[-1]["id"]) if rows else 0


def curl(node: Containerd, pod: Pod, *args: str) -> subprocess.CompletedProcess[str]:
    return node.exec(pod.name, "curl", "-sS", "--max-time", "10", *args)


def test_version_prints_the_cni_versions() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway.cni"],
                            env={**os.environ, "CNI_COMMAND": "VERSION"}, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}


def test_allowed_https_call_gets_the_secret_injected(
        containerd: Containerd, node_gateway: Gateway, topology: Topology, web: Pod) -> None:
    mark, last = topology.mark(), last_id(node_gateway)
    result = curl(containerd, web, "-H", f"Authorization: Bearer {web.placeholder}",
                  "https://secure.upstream.test/hello")
    assert result.returncode == 0, result.stdout + result.stderr
    seen = topology.events(mark, "http")
    assert [(e["sni"], e["headers"]["authorization"]) for e in seen] == \
        [("secure.upstream.test", f"Bearer {TOKEN}")]
    # the echo coming back is scrubbed: the pod sees its placeholder, never the value
    assert json.loads(result.stdout)["headers"]["authorization"] == f"Bearer {web.placeholder}"
    rows = audit(node_gateway, last)
    assert [(r["protocol"], r["host"], r["decision"]) for r in rows][-1][1:] == \
        ("secure.upstream.test", "allow")
    assert rows[-1]["secrets"] == "API_TOKEN"
    assert {(r["pod"], r["pod_uid"]) for r in rows} == {(f"{POD_NAMESPACE}/web", web.uid)}
    assert TOKEN not in result.stdout + result.stderr


def test_name_outside_the_policy_is_nxdomain(
        containerd: Containerd, node_gateway: Gateway, topology: Topology, web: Pod) -> None:
    mark, last = topology.mark(), last_id(node_gateway)
    result = curl(containerd, web, "https://other.upstream.test/")
    assert result.returncode == 6, result.stdout + result.stderr   # could not resolve host
    assert topology.events(mark) == []
    rows = audit(node_gateway, last)
    assert {(r["protocol"], r["host"], r["decision"], r["reason"]) for r in rows} == \
        {("dns", "other.upstream.test", "deny", "no_matching_rule")}
    assert {r["pod"] for r in rows} == {f"{POD_NAMESPACE}/web"}
    assert audit(node_gateway, last, pod=f"{POD_NAMESPACE}/other") == []
    # the CLI's filter
    assert node_gateway.audit_rows(last, pod=f"{POD_NAMESPACE}/web") == rows


def test_ip_literal_is_refused(containerd: Containerd, node_gateway: Gateway,
                               topology: Topology, web: Pod) -> None:
    mark, last = topology.mark(), last_id(node_gateway)
    result = curl(containerd, web, "-k", "-w", "\n%{http_code}", f"https://{HTTPS_IP}/")
    assert result.returncode == 0, result.stdout + result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert (status, json.loads(body)["reason"]) == ("403", "not_from_gateway_dns")
    assert topology.events(mark, "http") == []
    rows = audit(node_gateway, last)
    assert [(r["host"], r["decision"], r["reason"]) for r in rows] == \
        [(HTTPS_IP, "deny", "not_from_gateway_dns")]
    assert {r["pod"] for r in rows} == {f"{POD_NAMESPACE}/web"}


def test_check_verifies_link_rules_and_registration(
        containerd: Containerd, node_gateway: Gateway, web: Pod) -> None:
    assert plugin(containerd, node_gateway, "CHECK", web).returncode == 0
    with node_gateway.client() as c:
        host_link = f"{node_gateway.prefix}h-{c.get(f'/v1/pods/{web.container_id}').json()['id']}"
    subprocess.run(["ip", "link", "set", host_link, "down"], check=True)
    try:
        broken = plugin(containerd, node_gateway, "CHECK", web)
        assert broken.returncode == 1
        assert "down" in json.loads(broken.stdout)["msg"]
    finally:
        subprocess.run(["ip", "link", "set", host_link, "up"], check=True)
    # a pin removed by mistake: the gateway's watchdog puts it back, CHECK then passes
    pin = next(iter(firewall.pinned(gw_firewall(node_gateway))))
    firewall.unpin(gw_firewall(node_gateway), *pin)
    wait_for(lambda: plugin(containerd, node_gateway, "CHECK", web).returncode == 0, 15)


def test_add_acts_only_on_the_namespace_the_runtime_gave(
        containerd: Containerd, node_gateway: Gateway, web: Pod) -> None:
    """The gateway reads CNI_NETNS in its own view, where a /proc/PID path can name another
    process's namespace: one other than the plugin saw there is refused, untouched."""
    own = os.stat("/proc/self/ns/net")   # the namespace the path does not hold
    body = {"container_id": "elsewhere-1", "netns": web.netns, "netns_dev": own.st_dev,
            "netns_ino": own.st_ino, "ifname": "eth1", "namespace": POD_NAMESPACE,
            "name": "elsewhere", "policy": "pods"}
    with node_gateway.client() as c:
        response = c.post("/v1/pods", json=body)
        assert response.status_code == 503, response.text
        assert "is not the namespace the container runtime gave" in response.json()["detail"]
        assert c.get("/v1/pods/elsewhere-1").status_code == 404
        assert [s["runtime"] for s in c.get("/v1/sandboxes").json()] == ["pod"]   # web only
    links = subprocess.run(["nsenter", f"--net={web.netns}", "ip", "-br", "link"],
                           capture_output=True, text=True, check=True).stdout
    assert "eth1" not in links


def test_ctr_runs_a_pod_and_its_del_leaves_nothing(
        containerd: Containerd, node_gateway: Gateway, rootfs: Path,
        mounts: dict[str, Path], web: Pod) -> None:
    """ctr's own path: ADD, the command, DEL (with no namespace path), task removed."""
    notes = {"sandgate.dev/policy": "pods"}
    result = containerd.run("once", rootfs, conflist(node_gateway, "once", "u-1", notes),
                            "curl", "-sS", "--max-time", "10", "https://secure.upstream.test/x",
                            mounts=mounts)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["path"] == "/x"
    with node_gateway.client() as c:
        assert [s["runtime"] for s in c.get("/v1/sandboxes").json()] == ["pod"]   # web only


def test_del_repeated_leaves_nothing(containerd: Containerd, node_gateway: Gateway,
                                     web: Pod) -> None:
    for _ in range(2):
        result = plugin(containerd, node_gateway, "DEL", web)
        assert result.returncode == 0, result.stdout + result.stderr
    nothing_left(node_gateway, web)


def test_a_host_network_container_does_not_start(
        containerd: Containerd, node_gateway: Gateway, rootfs: Path,
        mounts: dict[str, Path]) -> None:
    """A hostNetwork pod gets no namespace of its own and no CNI call: with the node's
    network it would have unrestricted egress. The sandgate runtime's wrapper refuses it."""
    notes = {"sandgate.dev/policy": "pods"}
    try:
        result = containerd.run("hostnet", rootfs, conflist(node_gateway, "hostnet", "u-3", notes),
                                "true", mounts=mounts, net_host=True)
        assert result.returncode != 0, result.stdout + result.stderr
        assert "runsc-sandgate: refused" in result.stderr, result.stderr
        assert "hostNetwork" in result.stderr, result.stderr
        assert "hostnet" not in containerd.ctr("task", "ls").stdout
    finally:
        containerd.remove("hostnet")


def test_add_refuses_the_gateways_own_namespace(containerd: Containerd,
                                                 node_gateway: Gateway) -> None:
    """A runtime's mistake (or a forged CNI_NETNS) must not wire the node itself."""
    before = Path("/proc/sys/net/ipv6/conf/all/disable_ipv6").read_text()
    pod = Pod("self", "u-2", "self-1", "/proc/self/ns/net", new_placeholder())
    config = conflist(node_gateway, "self", "u-2", {"sandgate.dev/policy": "pods"})
    result = subprocess.run(
        [str(containerd.plugins / "sandgate-cni")],
        input=json.dumps({**config["plugins"][0], "name": "sandgate", "cniVersion": "1.0.0"}),
        env={**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": pod.container_id,
             "CNI_NETNS": pod.netns, "CNI_IFNAME": "eth0"},
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "own network namespace" in json.loads(result.stdout)["msg"]
    assert Path("/proc/sys/net/ipv6/conf/all/disable_ipv6").read_text() == before
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    names = [line.split()[0].split("@")[0] for line in links.splitlines()]
    assert "eth0" not in names and not any(n.startswith(node_gateway.prefix) for n in names)


def test_unknown_policy_fails_add(containerd: Containerd, node_gateway: Gateway, rootfs: Path,
                                  mounts: dict[str, Path]) -> None:
    pod, result = start_pod(containerd, node_gateway, rootfs, mounts, "nopolicy",
                            policy="no-such-policy")
    assert result.returncode != 0
    assert "the gateway refused" in result.stdout + result.stderr
    containerd.remove(pod.name)
    nothing_left(node_gateway, pod)


def test_a_pod_of_another_namespace_fails_add(
        containerd: Containerd, node_gateway: Gateway, rootfs: Path,
        mounts: dict[str, Path]) -> None:
    """Its creator names the policy and secret of team-a from namespace team-b: refused at
    ADD, with an audit row; the pod never starts."""
    last = last_id(node_gateway)
    pod, result = start_pod(containerd, node_gateway, rootfs, mounts, "intruder",
                            namespace="team-b")
    assert result.returncode != 0
    assert "policy 'pods' does not allow pods of Kubernetes namespace 'team-b'" in \
        result.stdout + result.stderr
    containerd.remove(pod.name)
    nothing_left(node_gateway, pod)
    rows = audit(node_gateway, last, pod="team-b/intruder")
    assert [(r["decision"], r["reason"], r["pod_uid"]) for r in rows] == \
        [("deny", "pod_namespace_refused", pod.uid)]


def test_del_after_gateway_restart_leaves_nothing(
        containerd: Containerd, node_gateway: Gateway, rootfs: Path,
        mounts: dict[str, Path]) -> None:
    pod, result = start_pod(containerd, node_gateway, rootfs, mounts, "survivor")
    assert result.returncode == 0, result.stdout + result.stderr
    node_gateway.stop()
    start(node_gateway)
    try:
        for _ in range(2):
            deleted = plugin(containerd, node_gateway, "DEL", pod)
            assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        nothing_left(node_gateway, pod)
    finally:
        containerd.remove(pod.name)


def test_missing_gateway_fails_add(containerd: Containerd, node_gateway: Gateway,
                                   rootfs: Path, mounts: dict[str, Path]) -> None:
    node_gateway.stop()
    try:
        pod, result = start_pod(containerd, node_gateway, rootfs, mounts, "orphan")
        assert result.returncode != 0
        assert "not answering" in result.stdout + result.stderr
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert f"{node_gateway.prefix}h-" not in links
        # DEL with the gateway down still succeeds
        assert plugin(containerd, node_gateway, "DEL", pod).returncode == 0
    finally:
        containerd.remove("orphan")
