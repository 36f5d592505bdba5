"""The value seam, through the credentials addon: a provider secret's minted value is injected
in any form and scrubbed like a stored one, the rule's narrowing reaches the provider, a
provider that gives nothing answers 502 with the reason, and the connection's client
certificate is fixed by its first request. The broker is real (in the main process's
coordinator, as the DNS server has it), its token servers too, in this process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http

from gateway.dataplane.state import METADATA_KEY
from gateway.providers.broker import Broker
from sandbox_net.testnet.mtls import make_client_pki
from tests.doubles import Plane, data_plane, wsgi_connector
from tests.gateway.dataplane.addons.conftest import Through, connect, request
from tests.token_servers import Servers
from vault import providers

POLICY = """
version: 1
name: p
rules:
  - id: api
    hosts: [api.example.test]
    inject: [{secret: API, as: bearer}]
  - id: git
    hosts: [git.example.test]
    inject: [{secret: GH, as: basic, username: x-access-token,
              narrow: {repositories: [hello], permissions: {contents: read}}}]
  - id: sigv4
    hosts: [s3.example.test]
    inject: [{secret: API, as: aws-sigv4, access_key_id: PLAIN}]
  - id: cert-as-bearer
    hosts: [wrong.example.test]
    inject: [{secret: CERT, as: bearer}]
  - id: mtls
    hosts: [mtls.example.test]
    paths: ["/with/**"]
    inject: [{secret: CERT, as: mtls}]
  - id: mtls-public
    hosts: [mtls.example.test]
    paths: ["/public/**"]
"""
HOSTS = ("api", "git", "s3", "wrong", "mtls")


@pytest.fixture
def plane(tmp_path: Path, servers: Servers) -> Iterator[Plane]:
    plane = data_plane(tmp_path, POLICY,
                       answers={f"{h}.example.test": ["203.0.113.10"] for h in HOSTS},
                       secrets={"API": "-", "GH": "-", "CERT": "-", "PLAIN": "plain-value"})
    assert plane.vault is not None
    providers.store(plane.vault, "API", servers.client_credentials())
    providers.store(plane.vault, "GH", servers.github())
    pki = make_client_pki(tmp_path / "pki")
    providers.store(plane.vault, "CERT", providers.parse("mtls_client_cert", {
        "certificate": pki.chain.read_text(), "key": pki.key.read_text()}))
    broker = Broker(plane.vault, wsgi_connector(servers.app), plane.sink.rows.append)
    plane.state.coord.broker = broker  # type: ignore[attr-defined]
    yield plane
    broker.close()
    plane.close()


def send(plane: Plane, host: str, path: str = "/v1",
         headers: list[tuple[str, str]] | None = None,
         conn: object = None) -> http.HTTPFlow:
    client = conn or connect(plane, f"{host}.example.test")
    flow = request(client, "GET", f"https://{host}.example.test{path}",  # type: ignore[arg-type]
                   headers=headers)
    Through(plane).request(flow)
    return flow


def body(flow: http.HTTPFlow) -> dict[str, object]:
    assert flow.response is not None
    return dict(json.loads(flow.response.content or b"{}"))


def test_the_minted_token_is_injected_and_scrubbed(plane: Plane, servers: Servers) -> None:
    placeholder = plane.sandbox.secrets["API"]
    flow = send(plane, "api", headers=[("authorization", f"Bearer {placeholder}")])
    token = servers.issued("oauth")[-1]["token"]
    assert flow.response is None
    assert flow.request.headers["authorization"] == f"Bearer {token}"
    assert flow.metadata[METADATA_KEY].secrets == ("API",)
    got = Through(plane).response(flow, http.Response.make(
        200, json.dumps({"echo": token}), {"x-echo": f"Bearer {token}"}))
    assert token.encode() not in got and placeholder.encode() in got
    assert flow.response is not None
    assert flow.response.headers["x-echo"] == f"Bearer {placeholder}"
    # one mint serves the next request too; the refresh is audited, without the value
    send(plane, "api")
    assert len(servers.issued("oauth")) == 1
    refreshed = [r for r in plane.rows if r["reason"] == "credential_refreshed"]
    assert len(refreshed) == 1 and token not in repr(plane.rows)


def test_the_rules_narrowing_reaches_the_provider(plane: Plane, servers: Servers) -> None:
    flow = send(plane, "git")
    issued = servers.issued("github")[-1]
    assert (issued["repositories"], issued["permissions"]) == (["hello"], {"contents": "read"})
    import base64
    user = base64.b64decode(flow.request.headers["authorization"].split()[1]).decode()
    assert user == f"x-access-token:{issued['token']}"


def test_a_provider_that_gives_nothing_answers_502_with_the_reason(
        plane: Plane, servers: Servers) -> None:
    assert plane.vault is not None
    broken = servers.client_credentials().with_field("client_secret", "wrong-one")
    providers.store(plane.vault, "API", broken)
    flow = send(plane, "api")
    assert flow.response is not None and flow.response.status_code == 502
    answer = body(flow)
    assert (answer["reason"], answer["rule"]) == ("credential_unavailable", "api")
    assert "invalid_client" in str(answer["detail"])
    assert "wrong-one" not in flow.response.text
    assert plane.sink.rows[-1]["reason"] == "credential_unavailable"


@pytest.mark.parametrize(("host", "message"), [
    ("s3", "aws-sigv4 signs with stored keys only"),
    ("wrong", "is a client certificate: inject it `as: mtls`"),
])
def test_a_provider_in_a_form_it_cannot_fill_is_refused(plane: Plane, host: str,
                                                         message: str) -> None:
    flow = send(plane, host)
    assert flow.response is not None and flow.response.status_code == 502
    assert message in str(body(flow)["detail"])


def test_the_first_request_fixes_the_connections_client_certificate(plane: Plane) -> None:
    conn = connect(plane, "mtls.example.test")
    assert send(plane, "mtls", "/with/a", conn=conn).response is None
    state = plane.state.conns[conn.id]
    assert (state.client_cert, state.client_cert_fixed) == ("CERT", True)
    assert send(plane, "mtls", "/with/b", conn=conn).response is None
    other = send(plane, "mtls", "/public/c", conn=conn)   # another rule: no certificate
    assert other.response is not None and other.response.status_code == 421
    assert body(other)["reason"] == "client_cert_conflict"
    # and the other way round, on a connection of its own
    conn = connect(plane, "mtls.example.test")
    assert send(plane, "mtls", "/public/c", conn=conn).response is None
    assert plane.state.conns[conn.id].client_cert is None
    assert send(plane, "mtls", "/with/a", conn=conn).response.status_code == 421  # type: ignore[union-attr]


def test_a_sandbox_without_the_secret_presents_nothing(plane: Plane) -> None:
    del plane.sandbox.secrets["CERT"]
    conn = connect(plane, "mtls.example.test")
    assert send(plane, "mtls", "/with/a", conn=conn).response is None
    assert plane.state.conns[conn.id].client_cert is None


def test_one_question_for_many_requests(plane: Plane, servers: Servers) -> None:
    async def many() -> None:
        from policies.schema import InjectBearer
        spec = InjectBearer.model_validate({"secret": "API", "as": "bearer"})
        values = await asyncio.gather(*(plane.state.values.value(spec, "s")
                                        for _ in range(10)))
        assert len({v.reveal() for v in values}) == 1
    asyncio.run(many())
    assert len(servers.issued("oauth")) == 1


def test_a_value_that_cannot_be_had_refuses_the_request(plane: Plane,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub gone mid-question: the request does not leave without its credential."""
    async def gone(*_args: object) -> None:
        raise ConnectionResetError("hub closed")

    monkeypatch.setattr(plane.state.coord, "credential", gone)
    flow = send(plane, "api")
    assert flow.response is not None and flow.response.status_code == 403
    assert body(flow)["reason"] == "internal_error"
