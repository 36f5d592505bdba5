"""sandgate-cni without a gateway: what it reads from the runtime (environment, CNI_ARGS,
the network configuration, the pod's annotations), what it answers (results, CNI errors),
and that ADD fails and DEL succeeds when the gateway is not there."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway import cni
from gateway.cni import CniError, Invocation

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDER = "sgp_" + "a1" * 16


def env(command: str = "ADD", **extra: str) -> dict[str, str]:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/proc/9/ns/net",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;"
                        "K8S_POD_UID=5e1f-22",
            **extra}


def config(**extra: Any) -> str:
    return json.dumps({"cniVersion": "1.0.0", "name": "sandgate", "type": "sandgate-cni",
                       "socket": "/nonexistent/control.sock", **extra})


NOTES = {"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {
    "sandgate.dev/policy": "web", "sandgate.dev/secrets": f"TOKEN={PLACEHOLDER}, B={PLACEHOLDER}",
    "other": "x"}}}


def invocation(environ: dict[str, str], stdin: str) -> Invocation:
    return cni.read_invocation(environ, stdin)


def test_the_cri_path_gives_identity_and_annotations() -> None:
    request = cni.attach_request(invocation(env(), config(**NOTES)))
    assert request == {"container_id": "abc123", "netns": "/proc/9/ns/net", "ifname": "eth0",
                       "namespace": "team-a", "name": "web-0", "uid": "5e1f-22",
                       "policy": "web", "secrets": {"TOKEN": PLACEHOLDER, "B": PLACEHOLDER}}


def test_args_cni_stands_in_for_a_runtime_without_the_cri() -> None:
    given = {"cni": {"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p",
                     "annotations": {"sandgate.dev/policy": "web"}}}
    request = cni.attach_request(invocation(env(CNI_ARGS="IgnoreUnknown=1"),
                                            config(args=given)))
    assert (request["namespace"], request["name"], request["uid"], request["policy"]) == \
        ("ns", "p", None, "web")
    # what CNI_ARGS says wins over the configuration
    request = cni.attach_request(invocation(env(), config(args=given)))
    assert (request["namespace"], request["name"]) == ("team-a", "web-0")


@pytest.mark.parametrize(("environ", "stdin", "code", "words"), [
    (env("NOPE"), config(), cni.INVALID_ENVIRONMENT, "CNI_COMMAND"),
    (env(), "{not json", cni.DECODING_FAILURE, "not JSON"),
    (env(), "[]", cni.DECODING_FAILURE, "not a JSON object"),
    (env(), config(cniVersion="0.3.1"), cni.INCOMPATIBLE_VERSION, "0.3.1"),
    (env(CNI_NETNS=""), config(), cni.INVALID_ENVIRONMENT, "CNI_NETNS"),
    (env(CNI_CONTAINERID=""), config(), cni.INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
    (env(CNI_ARGS="K8S_POD_NAME"), config(), cni.INVALID_ENVIRONMENT, "KEY=VALUE"),
    (env(CNI_ARGS="IgnoreUnknown=1"), config(**NOTES), cni.INVALID_ENVIRONMENT, "identity"),
    (env(), config(), cni.GATEWAY_REFUSED, "sandgate.dev/policy"),
    (env(), config(runtimeConfig={"io.kubernetes.cri.pod-annotations": {
        "sandgate.dev/policy": "web", "sandgate.dev/secrets": "TOKEN"}}),
     cni.GATEWAY_REFUSED, "names no placeholder"),
    (env(), config(prevResult={"cniVersion": "1.0.0", "interfaces": []}, **NOTES),
     cni.INVALID_CONFIG, "not chained"),
])
def test_bad_input_is_a_cni_error(environ: dict[str, str], stdin: str, code: int,
                                  words: str) -> None:
    with pytest.raises(CniError) as caught:
        cni.run(environ, stdin)
    assert caught.value.code == code and words in caught.value.msg + caught.value.details


def test_add_fails_when_the_gateway_is_not_there() -> None:
    with pytest.raises(CniError) as caught:
        cni.run(env(CNI_NETNS="/proc/self/ns/net"), config(**NOTES))
    assert caught.value.code == cni.TRY_AGAIN_LATER
    assert "not answering on /nonexistent/control.sock" in caught.value.msg


def test_del_succeeds_when_the_gateway_and_the_namespace_are_gone() -> None:
    assert cni.run(env("DEL", CNI_NETNS=""), config()) is None
    assert cni.run(env("DEL", CNI_NETNS="/nonexistent/ns"), config()) is None


def test_add_sends_the_identity_of_the_namespace_it_was_given() -> None:
    """The gateway may see another namespace at the same path (/proc/PID in another PID
    namespace): the plugin tells it which one the runtime meant."""
    found = Path("/proc/self/ns/net").stat()
    assert cni.netns_identity("/proc/self/ns/net") == {"netns_dev": found.st_dev,
                                                       "netns_ino": found.st_ino}
    with pytest.raises(CniError) as caught:
        cni.run(env(CNI_NETNS="/nonexistent/ns"), config(**NOTES))
    assert caught.value.code == cni.INVALID_ENVIRONMENT
    assert caught.value.msg.startswith("CNI_NETNS /nonexistent/ns: No such file")


def test_result_names_the_pods_address_route_and_dns() -> None:
    pod = {"ip": "10.77.0.6", "prefix": 30, "gateway_ip": "10.77.0.5"}
    assert cni.cni_result(pod, invocation(env(), config(**NOTES))) == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/proc/9/ns/net"}],
        "ips": [{"address": "10.77.0.6/30", "gateway": "10.77.0.5", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.0.5"}],
        "dns": {"nameservers": ["10.77.0.5"]},
    }


def test_main_prints_a_cni_error_and_exits_1(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in env("ADD", CNI_NETNS="").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "stdin", io.StringIO(config()))
    with pytest.raises(SystemExit) as exited:
        cni.main()
    assert exited.value.code == 1
    error = json.loads(capsys.readouterr().out)
    assert (error["cniVersion"], error["code"]) == ("1.0.0", cni.INVALID_ENVIRONMENT)


def test_version_starts_without_the_gateways_code() -> None:
    """VERSION answers from the standard library alone (the runtime calls the plugin for
    every pod: its start-up is on the pod's path)."""
    code = ("import sys, runpy; sys.argv = ['sandgate-cni']; "
            "runpy.run_module('gateway.cni', run_name='__main__'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('httpx', 'pydantic', 'pyroute2', 'sqlmodel', 'mitmproxy')), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], env={"CNI_COMMAND": "VERSION"},
                            cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cniVersion": "1.0.0",
                                         "supportedVersions": ["1.0.0"]}
    assert result.stderr.strip() == "[]"


def test_the_console_script_is_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sandgate-cni"] == "gateway.cni:main"
    assert scripts["runsc-sandgate"] == "gateway.runsc_sandgate:main"
