"""SigV4 re-signing through the pipeline: a request signed over its body (no
x-amz-content-sha256) is held whole and signed again with the real key; over HTTP/2 a GET
carries no length, and is held as empty rather than refused as too large to hold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as AwsCredentials
from mitmproxy import http

from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import Through, connect, request

POLICY = """
version: 1
name: p
rules:
  - id: s3
    hosts: [s3.example.test]
    inject: [{secret: SECRET, as: aws-sigv4, access_key_id: KEY_ID}]
"""
REAL_ID, REAL_SECRET = "AKIAREALKEYID0000000", "real-secret-value-0123456789"
URL = "https://s3.example.test/bucket/key"


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    plane = data_plane(tmp_path, POLICY, answers={"s3.example.test": ["203.0.113.10"]},
                       secrets={"SECRET": REAL_SECRET, "KEY_ID": REAL_ID})
    yield plane
    plane.close()


def signed(key_id: str, secret: str, method: str, body: bytes = b"") -> list[tuple[str, str]]:
    """The headers botocore signs `method URL` with, over the body (no content hash)."""
    aws = AWSRequest(method=method, url=URL, data=body)
    SigV4Auth(AwsCredentials(key_id, secret), "s3", "us-east-1").add_auth(aws)
    return [(k.lower(), v) for k, v in aws.headers.items()]


def verifies(headers: list[tuple[str, str]], key_id: str, secret: str, method: str,
             body: bytes = b"") -> bool:
    date = dict(headers)["x-amz-date"]
    aws = AWSRequest(method=method, url=URL, data=body, headers={"x-amz-date": date})
    aws.context["timestamp"] = date
    signer = SigV4Auth(AwsCredentials(key_id, secret), "s3", "us-east-1")
    canonical = signer.canonical_request(aws)
    signature = signer.signature(signer.string_to_sign(aws, canonical), aws)
    return dict(headers)["authorization"].endswith(f"Signature={signature}")


def test_an_http2_get_without_a_length_is_signed_again(plane: Plane) -> None:
    key_id, secret = plane.sandbox.secrets["KEY_ID"], plane.sandbox.secrets["SECRET"]
    flow = request(connect(plane, "s3.example.test"), "GET", URL, http2=True,
                   headers=signed(key_id, secret, "GET"))
    through = Through(plane)
    through.request(flow)
    assert flow.response is None and callable(flow.request.stream)   # never held
    sent = [(k, v) for k, v in flow.request.headers.items()]
    assert f"Credential={REAL_ID}/" in flow.request.headers["authorization"]
    assert verifies(sent, REAL_ID, REAL_SECRET, "GET")


def test_a_body_after_a_signed_http2_get_is_cut_not_held(plane: Plane) -> None:
    key_id, secret = plane.sandbox.secrets["KEY_ID"], plane.sandbox.secrets["SECRET"]
    flow = request(connect(plane, "s3.example.test"), "GET", URL, http2=True,
                   headers=signed(key_id, secret, "GET"))
    through = Through(plane)
    through.request(flow, chunks=[b"x" * 4096] * 64)
    assert flow in through.cut


def test_an_http2_post_without_a_length_is_refused_as_unheld(plane: Plane) -> None:
    key_id, secret = plane.sandbox.secrets["KEY_ID"], plane.sandbox.secrets["SECRET"]
    flow = request(connect(plane, "s3.example.test"), "POST", URL, http2=True,
                   headers=signed(key_id, secret, "POST"))
    Through(plane).request(flow)
    assert flow.response is not None and flow.response.status_code == 413
    assert flow.response.headers["x-sandgate-reason"] == "body_too_large"


def test_the_body_is_signed_with_the_keys_read_at_the_head(plane: Plane) -> None:
    """Signed over the body: re-signed once the body is here, with the key id and secret the
    head read (one read of the vault per request). A key rotated in between does not mix
    versions; a key removed in between does not break the hook."""
    assert plane.vault is not None
    key_id, secret = plane.sandbox.secrets["KEY_ID"], plane.sandbox.secrets["SECRET"]
    body = b"the object"
    flow = request(connect(plane, "s3.example.test"), "PUT", URL, body=body,
                   headers=signed(key_id, secret, "PUT", body))
    through = Through(plane)
    head_done = through.bodies.requestheaders

    def then_rotate(flow: http.HTTPFlow) -> None:
        head_done(flow)
        plane.vault.put("KEY_ID", "AKIAROTATEDKEYID0000")  # type: ignore[union-attr]
        plane.vault.delete("SECRET")                       # type: ignore[union-attr]

    through.bodies.requestheaders = then_rotate  # type: ignore[method-assign]
    assert through.request(flow) == body and flow.response is None
    sent = [(k, v) for k, v in flow.request.headers.items()]
    assert f"Credential={REAL_ID}/" in flow.request.headers["authorization"]
    assert verifies(sent, REAL_ID, REAL_SECRET, "PUT", body)
