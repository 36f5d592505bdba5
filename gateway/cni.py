"""sandgate-cni: the CNI 1.0 plugin that makes a Kubernetes pod's network a sandbox's.

The container runtime (containerd's CRI, or `ctr run --cni`) calls it with CNI_COMMAND and
the network configuration on stdin. It does no wiring itself: it asks the node's gateway,
over the gateway's control socket, to attach the pod (`POST /v1/pods`), and the gateway does
what it does for a sandbox: address slot, rules verified, link into the pod's namespace,
source pin verified, link up, pod registered with its policy and placeholders. So the same
code holds a pod and a sandbox to the same rules, and a gateway that is down, a policy that
is unknown or a rule that cannot be installed fails ADD: the pod never starts without them.

    ADD     attach; prints the CNI result (the pod's address, its route and DNS server)
    DEL     detach; succeeds when nothing is left (also repeated, also after a gateway
            restart); with the gateway down, removes the pod's link end itself
    CHECK   the gateway verifies rules, source pin, link and registration
    VERSION prints the versions this plugin speaks

What the pod is and what it may do: K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID from
CNI_ARGS (the CRI sets them); the annotations `sandgate.dev/policy` and `sandgate.dev/secrets`
from runtimeConfig's `io.kubernetes.cri.pod-annotations` (containerd passes them when the
conflist declares that capability). A runtime without the CRI may give both in the network
configuration's `args.cni` (the CNI conventions' place for runtime arguments).

Start-up matters (the runtime calls it for every pod): only the standard library is imported
until a command needs the control socket's client.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CniError", "Invocation", "main", "run"]

CNI_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ["1.0.0"]
DEFAULT_SOCKET = "/var/lib/sandgate/control.sock"
POD_ANNOTATIONS = "io.kubernetes.cri.pod-annotations"
POLICY_ANNOTATION = "sandgate.dev/policy"
SECRETS_ANNOTATION = "sandgate.dev/secrets"
ADD_WAIT = 30.0     # seconds ADD waits for a gateway that is starting (503 + Retry-After)

# CNI error codes (the specification's "Error" section); 100 and up are the plugin's own.
INCOMPATIBLE_VERSION = 1
INVALID_ENVIRONMENT = 4
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
GATEWAY_REFUSED = 100   # the gateway refused the pod: unknown policy or secret, bad annotation


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def as_json(self) -> dict[str, Any]:
        return {"cniVersion": CNI_VERSION, "code": self.code, "msg": self.msg,
                "details": self.details}


@dataclass(frozen=True, slots=True)
class Invocation:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]        # CNI_ARGS, and the configuration's args.cni under them
    config: dict[str, Any]      # the network configuration (stdin)

    @property
    def socket(self) -> str:
        return str(self.config.get("socket") or DEFAULT_SOCKET)


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: `K=V;K2=V2` (values hold no `;`)."""
    pairs = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS item {item!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def read_invocation(environ: Mapping[str, str], stdin: str) -> Invocation:
    command = environ.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "VERSION"):
        raise CniError(INVALID_ENVIRONMENT,
                       f"CNI_COMMAND {command!r} is not ADD, DEL, CHECK or VERSION")
    if command == "VERSION":
        return Invocation(command, "", "", "", {}, {})
    try:
        config = json.loads(stdin)
    except ValueError as e:
        raise CniError(DECODING_FAILURE, f"network configuration is not JSON: {e}") from None
    if not isinstance(config, dict):
        raise CniError(DECODING_FAILURE, "network configuration is not a JSON object")
    version = config.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported",
                       f"sandgate-cni speaks {', '.join(SUPPORTED_VERSIONS)}")
    container_id = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    if not container_id or not ifname:
        raise CniError(INVALID_ENVIRONMENT, "CNI_CONTAINERID and CNI_IFNAME must be set")
    netns = environ.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK") and not netns:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_NETNS must be set for {command}")
    given = (config.get("args") or {}).get("cni") or {}
    if not isinstance(given, dict):
        raise CniError(INVALID_CONFIG, "args.cni must be an object")
    args = {k: v for k, v in given.items() if isinstance(v, str)}
    args.update(parse_cni_args(environ.get("CNI_ARGS", "")))
    return Invocation(command, container_id, netns, ifname, args, config)


def pod_annotations(inv: Invocation) -> dict[str, str]:
    found = (inv.config.get("runtimeConfig") or {}).get(POD_ANNOTATIONS)
    if found is None:
        found = ((inv.config.get("args") or {}).get("cni") or {}).get("annotations")
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items()}


def parse_secrets(text: str) -> dict[str, str]:
    """`sandgate.dev/secrets`: `NAME=PLACEHOLDER, NAME2=PLACEHOLDER2`. The placeholders are
    the ones the pod holds (its creator put them in its environment too)."""
    secrets = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, placeholder = item.partition("=")
        if not sep:
            raise CniError(GATEWAY_REFUSED, f"{SECRETS_ANNOTATION}: {item!r} names no "
                           "placeholder", "write NAME=sgp_... for each secret")
        secrets[name.strip()] = placeholder.strip()
    return secrets


def attach_request(inv: Invocation) -> dict[str, Any]:
    """The body of POST /v1/pods: who the pod is, where its namespace is, what it may do."""
    namespace, name = inv.args.get("K8S_POD_NAMESPACE"), inv.args.get("K8S_POD_NAME")
    if not namespace or not name:
        raise CniError(INVALID_ENVIRONMENT, "no pod identity: K8S_POD_NAMESPACE and "
                       "K8S_POD_NAME are missing from CNI_ARGS")
    notes = pod_annotations(inv)
    policy = notes.get(POLICY_ANNOTATION, "").strip()
    if not policy:
        raise CniError(GATEWAY_REFUSED, f"pod {namespace}/{name} has no {POLICY_ANNOTATION} "
                       "annotation", "name a policy stored on the gateway (sandgate policy "
                       "list); a pod of the sandgate runtime never runs without one")
    return {"container_id": inv.container_id, "netns": inv.netns, "ifname": inv.ifname,
            "namespace": namespace, "name": name, "uid": inv.args.get("K8S_POD_UID") or None,
            "policy": policy, "secrets": parse_secrets(notes.get(SECRETS_ANNOTATION, ""))}


def netns_identity(path: str) -> dict[str, int]:
    """The identity of the pod's namespace as the runtime gave it: the gateway acts only on a
    namespace with this identity (the path alone may mean another one in its view, e.g. a
    /proc/PID path in another PID namespace)."""
    try:
        found = os.stat(path)
    except OSError as e:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_NETNS {path}: {e.strerror}") from None
    return {"netns_dev": found.st_dev, "netns_ino": found.st_ino}


def cni_result(pod: Mapping[str, Any], inv: Invocation) -> dict[str, Any]:
    return {
        "cniVersion": CNI_VERSION,
        "interfaces": [{"name": inv.ifname, "sandbox": inv.netns}],
        "ips": [{"address": f"{pod['ip']}/{pod['prefix']}", "gateway": pod["gateway_ip"],
                 "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": pod["gateway_ip"]}],
        # Any name server works (the rules send every DNS query to the gateway); this one
        # is the gateway's own end of the link.
        "dns": {"nameservers": [pod["gateway_ip"]]},
    }


def run(environ: Mapping[str, str], stdin: str) -> dict[str, Any] | None:
    """One invocation: the JSON to print, if any. Raises CniError."""
    inv = read_invocation(environ, stdin)
    if inv.command == "VERSION":
        return {"cniVersion": CNI_VERSION, "supportedVersions": SUPPORTED_VERSIONS}
    if inv.config.get("prevResult") is not None and inv.command == "ADD":
        raise CniError(INVALID_CONFIG, "sandgate-cni must be the pod's network, not chained "
                       "after another plugin", "give the sandgate RuntimeClass's pods a "
                       "conflist with sandgate-cni as its only interface plugin")
    if inv.command == "ADD":
        body = {**attach_request(inv), **netns_identity(inv.netns)}
        pod = _call(inv, "POST", "/v1/pods", json=body)
        return cni_result(pod, inv)
    if inv.command == "CHECK":
        pod = _call(inv, "GET", f"/v1/pods/{inv.container_id}")
        expected = cni_result(pod, inv)["ips"][0]["address"]
        previous = [ip.get("address") for ip in
                    (inv.config.get("prevResult") or {}).get("ips", [])]
        if previous and expected not in previous:
            raise CniError(GATEWAY_REFUSED, f"the pod's address is {expected}, its previous "
                           f"result says {', '.join(map(str, previous))}")
        return None
    _detach(inv)
    return None


def _detach(inv: Invocation) -> None:
    try:
        _call(inv, "DELETE", f"/v1/pods/{inv.container_id}")
    except CniError as e:
        if e.code != TRY_AGAIN_LATER:
            raise
        # The gateway is down: its link, pin and slot went with it or go when it starts
        # (it reconciles); the pod's end of the link is removed here, which takes the host
        # end with it.
        _remove_link(inv.netns, inv.ifname)


def _remove_link(netns: str, ifname: str) -> None:
    if not netns or not os.path.exists(netns):
        return
    from pyroute2 import IPRoute, NetlinkError

    try:
        with IPRoute(netns=netns, flags=0) as ns:
            for index in ns.link_lookup(ifname=ifname):
                ns.link("del", index=index)
    except (NetlinkError, OSError) as e:
        raise CniError(TRY_AGAIN_LATER, f"removing {ifname} in {netns}: {e}") from None


def _call(inv: Invocation, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    from gateway.client import Client, SandgateAPIError
    from gateway.processes.launch import socket_accepts

    try:
        if not socket_accepts(Path(inv.socket)):
            raise httpx.ConnectError("nothing listens there")
        with Client(uds=inv.socket, timeout=60, retry_deadline=ADD_WAIT) as client:
            return client.request(method, path, **kwargs)
    except SandgateAPIError as e:
        code = TRY_AGAIN_LATER if e.status == 503 else GATEWAY_REFUSED
        raise CniError(code, f"the gateway refused: {e.detail}", e.hint or "") from None
    except httpx.TransportError as e:
        raise CniError(TRY_AGAIN_LATER, f"the sandgate gateway is not answering on "
                       f"{inv.socket}: {e}", "start it (sandgate serve) on this node; "
                       "no pod of the sandgate runtime starts without it") from None


def main() -> None:
    try:
        stdin = "" if os.environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.read()
        output = run(os.environ, stdin)
    except CniError as e:
        print(json.dumps(e.as_json()))
        sys.exit(1)
    except Exception as e:   # a CNI runtime reads stdout: never a traceback there
        print(json.dumps(CniError(999, f"sandgate-cni failed: {e!r}").as_json()))
        sys.exit(1)
    if output is not None:
        print(json.dumps(output))


if __name__ == "__main__":
    main()
