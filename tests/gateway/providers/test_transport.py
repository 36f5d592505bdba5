"""How token endpoints are reached: the vetted address dialed with the endpoint's name as SNI
and Host, its certificate checked against the given trust only, https only, no proxy from
the environment, no redirect followed, answers capped. A real TLS server on loopback (the
resolver is told where it is: address vetting itself is UpstreamResolver's, tested there)."""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import requests

from gateway.dataplane.trust import HostStore, Trust
from gateway.dataplane.upstream import ResolveError, Vetted
from gateway.providers.transport import MAX_ANSWER, EndpointError, Exchange, tls_context, vet
from policies.decision import Reason
from sandbox_net.testnet import certs
from sandbox_net.testnet.servers import Log, serve_http

NAME = "token.example.test"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> certs.TestCA:
    return certs.make_ca(tmp_path_factory.mktemp("ca"), [NAME], [])


@pytest.fixture(scope="module")
def port(ca: certs.TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log = Log(str(tmp_path_factory.mktemp("log") / "log.jsonl"))
    server = serve_http(log, "127.0.0.1", 0, {"cert": str(ca.server_cert),
                                              "key": str(ca.server_key)})
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


OPEN: list[requests.Session] = []


@pytest.fixture(autouse=True)
def close_sessions() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def resolve(host: str, permitted: Sequence[ipaddress.IPv4Network]) -> Vetted:
    if host == "refused.example.test":
        raise ResolveError(Reason.REFUSED_ADDRESS, f"{host} resolves only to refused "
                                                   "addresses: 10.0.0.1 (private)")
    return Vetted(host, ipaddress.IPv4Address("127.0.0.1"))


def session(ca: Path | None) -> tuple[requests.Session, list[Exchange]]:
    s, exchanges = requests.Session(), []
    OPEN.append(s)
    tls = tls_context(Trust(HostStore(ca, "test", None, "none"))) if ca else \
        ssl.create_default_context()
    vet(s, resolve, tls, [], exchanges)
    return s, exchanges


def test_the_name_is_sni_and_host_and_the_vetted_address_is_dialed(
        ca: certs.TestCA, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")   # ignored
    s, exchanges = session(ca.ca_cert)
    answer = s.post(f"https://{NAME}:{port}/oauth/token", data={"grant_type": "x"})
    seen = json.loads(answer.content)
    assert (seen["sni"], seen["headers"]["host"]) == (NAME, f"{NAME}:{port}")
    assert seen["path"] == "/oauth/token"
    assert [(e.host, e.port, e.path, e.upstream, e.status) for e in exchanges] == [
        (NAME, port, "/oauth/token", "127.0.0.1", 200)]


def test_the_certificate_must_name_the_endpoint(ca: certs.TestCA, port: int) -> None:
    s, _ = session(ca.ca_cert)
    with pytest.raises(requests.exceptions.SSLError):
        s.get(f"https://other.example.test:{port}/")


def test_only_the_given_trust_counts(port: int) -> None:
    s, exchanges = session(None)          # the system's store, without the test CA
    with pytest.raises(requests.exceptions.SSLError):
        s.get(f"https://{NAME}:{port}/")
    assert exchanges[0].error == "SSLError"


def test_plain_http_and_refused_addresses_are_not_dialed(ca: certs.TestCA) -> None:
    s, exchanges = session(ca.ca_cert)
    with pytest.raises(EndpointError, match="https only"):
        s.get(f"http://{NAME}/token")
    with pytest.raises(EndpointError, match="refused addresses"):
        s.get("https://refused.example.test/token")
    assert [e.upstream for e in exchanges] == [None, None]


def test_redirects_are_not_followed(ca: certs.TestCA, port: int) -> None:
    s, exchanges = session(ca.ca_cert)
    with pytest.raises(requests.exceptions.TooManyRedirects):
        s.get(f"https://{NAME}:{port}/redirect?to=https://elsewhere.example.test/")
    assert len(exchanges) == 1


def test_answers_are_capped(ca: certs.TestCA, port: int) -> None:
    s, _ = session(ca.ca_cert)
    with pytest.raises(EndpointError, match="more than"):
        s.get(f"https://{NAME}:{port}/bytes/{MAX_ANSWER + 10}")
    assert len(s.get(f"https://{NAME}:{port}/bytes/1000").content) == 1000
